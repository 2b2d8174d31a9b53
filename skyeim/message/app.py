"""HTTP API of the Message service (PROTOCOL.md section 6, "Message service")."""
from __future__ import annotations

import re
import uuid
from typing import Any

from flask import Flask, request

from skyeim.config import ServiceConfig
from skyeim.db import Database
from skyeim.message import conversations, files, groups, store
from skyeim.message.writer import MessageWriter
from skyeim.protocol import CONTENT_TYPES, MAX_USER_ID, ErrorCode, is_msg_id
from skyeim.service import make_app, on_shutdown
from skyeim.web import ApiError, bad_request, body_user_id, json_body, limit_arg, user_id_list

_DIGITS = re.compile(r"[0-9]{1,19}")   # ASCII only: str.isdigit() would take "²"
MAX_KEYS_PER_CALL = 1000               # messages in one delivered/read call
MAX_BATCH = 1000                       # SendMessage bodies (or recipients) in one batch call


def create_app(config: ServiceConfig) -> Flask:
    app = make_app("message", config)
    db = Database(config.database_url, store.metadata, pool_size=config.pool_size)
    # chats and delivery records: group commit across requests (writer.py)
    writer = MessageWriter(db, writers=1 if db.is_sqlite else max(1, min(4, config.pool_size // 2)))
    on_shutdown(app, writer.close)
    on_shutdown(app, db.close)

    @app.post("/v1/messages")
    def send_message():
        msg = _new_message(json_body())
        row, duplicate = writer.send([msg])[0]
        return _sent(row, duplicate)

    @app.post("/v1/messages/batch")
    def send_messages():
        """Many SendMessage calls in one request and one transaction (the gateway
        coalesces concurrent chats). Each result is what /v1/messages would have
        answered, or {"error": {code, message}} for an item it would have refused."""
        items = json_body().get("messages")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise bad_request(f"messages must be a list of 1 to {MAX_BATCH} SendMessage bodies")
        results: list[dict | None] = [None] * len(items)
        valid: list[tuple[int, store.NewMessage]] = []
        for i, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise bad_request(f"messages[{i}] must be an object")
                valid.append((i, _new_message(item)))
            except ApiError as e:
                results[i] = {"error": {"code": e.code, "message": e.message}}
        if valid:
            stored = writer.send([msg for _, msg in valid])
            for (i, _), (row, duplicate) in zip(valid, stored):
                results[i] = _sent(row, duplicate)
        return {"results": results}

    @app.get("/v1/messages/unread")
    def unread():
        user_id = _query_int("userId")
        after_id = _cursor(request.args.get("cursor"))
        limit = limit_arg(request.args.get("limit"))
        return _unread_answer(*db.run(store.unread_page, user_id, after_id, limit))

    @app.post("/v1/messages/unread/batch")
    def unread_batch():
        """The first unread page of several users in one request:
        {"userIds": [...], "limit": n} -> {"pages": [<unread answer>, ...]}."""
        body = json_body()
        uids = user_id_list(body, "userIds", MAX_BATCH)
        limit = limit_arg(None if body.get("limit") is None else str(body.get("limit")))
        pages = db.run(store.first_unread_pages, uids, limit)
        return {"pages": [_unread_answer(*pages[uid]) for uid in uids]}

    @app.post("/v1/messages/delivered")
    def delivered():
        user_id, keys = _delivery(json_body())
        marked = writer.deliver([(user_id, keys)])[0]
        return _marked(marked)

    @app.post("/v1/messages/delivered/batch")
    def delivered_batch():
        """/v1/messages/delivered for several recipients in one request and transaction."""
        items = json_body().get("deliveries")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise bad_request(f"deliveries must be a list of 1 to {MAX_BATCH} objects")
        deliveries = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise bad_request(f"deliveries[{i}] must be an object")
            deliveries.append(_delivery(item, f"deliveries[{i}]."))
        if sum(len(keys) for _, keys in deliveries) > MAX_KEYS_PER_CALL:
            raise bad_request(f"at most {MAX_KEYS_PER_CALL} messages in all")
        marked = writer.deliver(deliveries)
        return {"results": [_marked(m) for m in marked]}

    @app.post("/v1/messages/read")
    def read():
        body = json_body()
        user_id = body_user_id(body, "userId")
        peer_id = body_user_id(body, "peerId")
        if user_id == peer_id:
            raise bad_request("peerId must differ from userId")
        raw_ids = body.get("msgIds")
        msg_ids = None                  # missing, null or empty: every unread message from the peer
        if raw_ids is not None:
            if not isinstance(raw_ids, list) or len(raw_ids) > MAX_KEYS_PER_CALL:
                raise bad_request(f"msgIds must be a list of at most {MAX_KEYS_PER_CALL} msgIds")
            msg_ids = [_msg_id(m, f"msgIds[{i}]") for i, m in enumerate(raw_ids)] or None
        newly_read, read_at = db.run(store.mark_read, user_id, peer_id, msg_ids)
        return {"msgIds": newly_read, "readAt": read_at}

    @app.get("/v1/messages/history")
    def history():
        user_id = _query_int("userId")
        peer_id = _query_int("peerId")
        if user_id == peer_id:
            raise bad_request("peerId must differ from userId")
        before_seq = _query_int("beforeSeq", required=False)
        limit = limit_arg(request.args.get("limit"))
        rows, has_more = db.run(store.history_page, user_id, peer_id, before_seq, limit)
        return {"messages": [{**store.chat_message(r), "status": store.status(r)} for r in rows],
                "hasMore": has_more}

    @app.get("/v1/messages/conversation")
    def conversation():
        """Sync: the messages after ``afterSeq`` (0 = from the first), oldest first,
        optionally only those before ``beforeSeq`` (a gap's range)."""
        user_id = _query_int("userId")
        peer_id = _query_int("peerId")
        if user_id == peer_id:
            raise bad_request("peerId must differ from userId")
        after_seq = _query_int("afterSeq", required=False, minimum=0) or 0
        before_seq = _query_int("beforeSeq", required=False)
        if before_seq is not None and before_seq <= after_seq:
            raise bad_request("beforeSeq must be greater than afterSeq")
        limit = limit_arg(request.args.get("limit"))
        rows, has_more, hidden = db.run(_conversation_page, user_id, peer_id, after_seq,
                                        before_seq, limit)
        return {"messages": [_synced(r, (r.from_user_id, r.msg_id) in hidden) for r in rows],
                "hasMore": has_more}

    # -- recall, edit, delete for me (docs/protocol.md "Recall, edit, delete") ----------

    @app.post("/v1/messages/recall")
    def recall():
        body = json_body()
        row = _changed(db.run, store.recall, body_user_id(body, "userId"),
                       _msg_id(body.get("msgId"), "msgId"), _window(body))
        return _change(row)

    @app.post("/v1/messages/edit")
    def edit():
        body = json_body()
        row = _changed(db.run, store.edit, body_user_id(body, "userId"),
                       _msg_id(body.get("msgId"), "msgId"), _content(body.get("content")),
                       _window(body))
        return _change(row)

    @app.post("/v1/messages/hide")
    def hide():
        """Delete for me: {userId, peerId, messages: [{fromUserId, msgId}]} ->
        {messages: [the keys hidden, now or before]}."""
        body = json_body()
        peer_id = body_user_id(body, "peerId")
        user_id, keys = _delivery(body)
        if user_id == peer_id:
            raise bad_request("peerId must differ from userId")
        hidden = db.run(store.hide, user_id, peer_id, keys)
        return {"messages": [{"fromUserId": f, "msgId": m} for f, m in hidden]}

    @app.get("/v1/messages/changes")
    def changes():
        """The conversation's messages recalled or edited after ``since`` (ms)."""
        user_id = _query_int("userId")
        peer_id = _query_int("peerId")
        if user_id == peer_id:
            raise bad_request("peerId must differ from userId")
        since = _query_int("since", required=False, minimum=0) or 0
        limit = limit_arg(request.args.get("limit"))
        rows, has_more = db.run(store.changes_since, user_id, peer_id, since, limit)
        return {"messages": [{**_change(r), "changedAt": r.changed_at} for r in rows],
                "hasMore": has_more}

    groups.add_routes(app, db, _query_int, _msg_id, _content, _content_type, _window)
    files.add_routes(app, db)
    conversations.add_routes(app, db)
    return app


def _new_message(body: dict) -> store.NewMessage:
    msg_id = body.get("msgId")
    msg = store.NewMessage(
        # an absent msgId gets a UUID4, as the protocol says for chat frames
        msg_id=str(uuid.uuid4()) if msg_id is None else _msg_id(msg_id, "msgId"),
        from_user_id=body_user_id(body, "fromUserId"),
        to_user_id=body_user_id(body, "toUserId"),
        content=_content(body.get("content")),
        content_type=_content_type(body.get("contentType")),
    )
    if msg.from_user_id == msg.to_user_id:
        raise bad_request("toUserId must differ from fromUserId")
    return msg


def _conversation_page(conn, user_id: int, peer_id: int, after_seq: int,
                       before_seq: int | None, limit: int):
    rows, has_more = store.conversation_page(conn, user_id, peer_id, after_seq, before_seq, limit)
    return rows, has_more, store.hidden_among(conn, user_id, rows)


def _synced(row, hidden: bool) -> dict:
    """A sync page's entry; a message the user deleted for themselves keeps its
    place (its seq) with ``deleted: true`` and no content."""
    out = {**store.chat_message(row), "status": store.status(row)}
    if hidden:
        out["content"], out["deleted"] = "", True
    return out


def _changed(run, change, *args):
    try:
        return run(change, *args)
    except store.Refused as e:
        status = 404 if e.code == "not_found" else 409
        raise ApiError(status, ErrorCode(e.code), e.message) from None


def _change(row) -> dict:
    return {**store.chat_message(row), "status": store.status(row)}


def _window(body: dict) -> int:
    """windowMs: how long after createdAt the change is allowed (the gateway's Chat config)."""
    value = body.get("windowMs")
    if value is None:
        return 120_000
    if type(value) is not int or not 1 <= value <= 10 ** 12:
        raise bad_request("windowMs must be a positive integer (ms)")
    return value


def _unread_answer(rows: list, has_more: bool) -> dict:
    return {"messages": [store.chat_message(r) for r in rows],
            "nextCursor": str(rows[-1].id) if has_more else None,
            "hasMore": has_more}


def _sent(row, duplicate: bool) -> dict:
    return {**store.chat_message(row), "duplicate": duplicate,
            "delivered": row.delivered_at is not None, "deliveredAt": row.delivered_at}


def _delivery(body: dict, prefix: str = "") -> tuple[int, list[tuple[int, str]]]:
    """(userId, [(fromUserId, msgId)]) of a MarkDelivered body."""
    user_id = body_user_id(body, "userId", prefix)
    items = body.get("messages")
    if not isinstance(items, list) or len(items) > MAX_KEYS_PER_CALL:
        raise bad_request(f"{prefix}messages must be a list of at most {MAX_KEYS_PER_CALL} items")
    keys = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise bad_request(f"{prefix}messages[{i}] must be an object")
        keys.append((body_user_id(item, "fromUserId", f"{prefix}messages[{i}]."),
                     _msg_id(item.get("msgId"), f"{prefix}messages[{i}].msgId")))
    return user_id, keys


def _marked(marked: list[tuple[int, str, int]]) -> dict:
    return {"messages": [{"fromUserId": f, "msgId": m, "deliveredAt": at} for f, m, at in marked]}


# -- validation ----------------------------------------------------------------

def _msg_id(value: Any, key: str) -> str:
    if not is_msg_id(value):
        raise bad_request(f"{key} must be 1 to 64 characters of A-Z a-z 0-9 _ -")
    return value


def _content(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise bad_request("content must be a non-empty string")
    # Refuse what a database cannot store faithfully: PostgreSQL text has no
    # NUL, and a lone surrogate (legal in JSON's \u escapes) is not UTF-8.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("content must be valid Unicode (no lone surrogates)") from None
    return value


def _content_type(value: Any) -> int:
    if value is None:
        return 1
    if type(value) is not int or value not in CONTENT_TYPES:
        raise bad_request("contentType must be 1 (text), 2 (image), 3 (file) or 4 (voice)")
    return value


def _query_int(key: str, required: bool = True, minimum: int = 1) -> int | None:
    """A query parameter holding an integer from ``minimum`` (1) to 2^63-1 (user ids, seqs)."""
    raw = request.args.get(key)
    if raw is None or raw == "":
        if required:
            raise bad_request(f"{key} is required")
        return None
    value = int(raw) if _DIGITS.fullmatch(raw) else -1
    if not minimum <= value <= MAX_USER_ID:
        raise bad_request(f"{key} must be an integer from {minimum} to 2^63-1")
    return value


def _cursor(raw: str | None) -> int:
    """The unread cursor: absent for the first page, else a previous nextCursor
    (the last storage id it returned)."""
    if raw is None or raw == "":
        return 0
    value = int(raw) if _DIGITS.fullmatch(raw) else -1
    if not 0 <= value <= MAX_USER_ID:
        raise bad_request("cursor is not a nextCursor of this service")
    return value
