"""Group messages in the Message service: each stored once, with a per-group seq.

* ``group_messages``: one row per message; ``(from_user_id, msg_id)`` is unique
  (idempotent sends, a key space of its own beside the 1:1 chats) and
  ``(group_id, seq)`` orders a group.
* ``group_seqs``: per group, the last seq handed out; incremented in the sending
  transaction (the row stays locked until commit), so seqs have no gaps, as
  ``conversations.last_seq`` does for 1:1 chats.

* ``group_messages.recalled_at``, ``edited_at`` and ``changed_at`` (schema 0006):
  recall and edit by the sender, as for 1:1 messages (store.py), with a partial
  index (group_id, changed_at) for "what changed in this group since T".

* ``group_messages.mentions`` (schema 0005): the user ids a message mentions, as
  text ("3,7,9"; NULL for none), and ``group_mentions`` (user_id, group_id, seq):
  one row per mention, so "how many times was I mentioned since my cursor" is a
  range of the primary key, not a scan of the group.

Membership is the relations service's business: the gateway checks it before
it calls here.

  POST /v1/groups/messages   {groupId, fromUserId, msgId?, content, contentType?}
                             -> GroupMessage + {duplicate}
  GET  /v1/groups/messages?groupId=&afterSeq=&beforeSeq=&limit=  -> {messages, hasMore} oldest first
  GET  /v1/groups/history?groupId=&beforeSeq=&limit=             -> {messages, hasMore} newest first
  GET  /v1/groups/last?groupIds=1,2,...                         -> {groups: [{groupId, lastSeq}]}
  POST /v1/groups/mentions   {userId, groups: [{groupId, afterSeq}]}
                             -> {groups: [{groupId, mentions}]}: mentions of userId after afterSeq
  POST /v1/groups/messages/recall {groupId, userId, msgId, windowMs} -> GroupMessage + markers
  POST /v1/groups/messages/edit   {groupId, userId, msgId, content, windowMs} -> the same
  GET  /v1/groups/changes?groupId=&since=&limit=  -> {messages: [.. + changedAt], hasMore}
A refused recall or edit is 409 with its code (not_found, too_late, recalled), never
404: a 404 from these optional routes means "no such route" (PROTOCOL.md 9.1).
"""
from __future__ import annotations

import uuid
from typing import Any

from flask import Flask, request
from sqlalchemy import (BigInteger, Column, Index, SmallInteger, String, Table, Text,
                        UniqueConstraint, and_, delete, exc, func, or_, select, update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from skyeim.db import Database, now_ms
from skyeim.message.store import ROW_ID, Refused, Utf8Text, edit_changes, metadata
from skyeim.protocol import ErrorCode
from skyeim.web import ApiError, bad_request, body_user_id, json_body, limit_arg, user_id_list

MAX_GROUPS_PER_CALL = 1000     # groupIds in one /v1/groups/last call
MAX_MENTIONS = 1000            # user ids one message may mention (the gateway's cap is lower)

group_messages = Table(
    "group_messages", metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("group_id", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("from_user_id", BigInteger, nullable=False),
    Column("msg_id", String(64), nullable=False),
    Column("content", Utf8Text, nullable=False),
    Column("content_type", SmallInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("mentions", Text, nullable=True),                  # schema 0005
    # recall and edit (schema 0006), as messages' columns (store.py)
    Column("recalled_at", BigInteger, nullable=True),         # ms; the content is then ""
    Column("edited_at", BigInteger, nullable=True),           # ms, the last edit
    Column("changed_at", BigInteger, nullable=True),          # ms, the later of the two
    UniqueConstraint("from_user_id", "msg_id", name="uq_group_messages_sender_msg_id"),
    UniqueConstraint("group_id", "seq", name="uq_group_messages_group_seq"),
)
_CHANGED = group_messages.c.changed_at.isnot(None)
# "What changed in this group since T": partial, so it holds only the changed few.
Index("ix_group_messages_changed", group_messages.c.group_id, group_messages.c.changed_at,
      postgresql_where=_CHANGED, sqlite_where=_CHANGED)

group_mentions = Table(
    "group_mentions", metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("group_id", BigInteger, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
)

group_seqs = Table(
    "group_seqs", metadata,
    Column("group_id", BigInteger, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
)

_COLUMNS = (group_messages.c.group_id, group_messages.c.seq, group_messages.c.from_user_id,
            group_messages.c.msg_id, group_messages.c.content, group_messages.c.content_type,
            group_messages.c.created_at, group_messages.c.mentions,
            group_messages.c.recalled_at, group_messages.c.edited_at)


def group_message(row: Row) -> dict[str, Any]:
    """The GroupMessage of a stored row (the `groupchat` frame's data)."""
    out = {"groupId": row.group_id, "msgId": row.msg_id, "fromUserId": row.from_user_id,
           "content": row.content, "contentType": row.content_type,
           "createdAt": row.created_at, "seq": row.seq}
    if row.mentions:
        out["mentions"] = [int(u) for u in row.mentions.split(",")]
    if row.recalled_at is not None:         # markers a client without recall ignores
        out["recalled"], out["recalledAt"] = True, row.recalled_at
    elif row.edited_at is not None:
        out["edited"], out["editedAt"] = True, row.edited_at
    return out


def _find(conn: Connection, from_user: int, msg_id: str) -> Row | None:
    return conn.execute(select(*_COLUMNS).where(group_messages.c.from_user_id == from_user,
                                                group_messages.c.msg_id == msg_id)).first()


def send(conn: Connection, group_id: int, from_user: int, msg_id: str, content: str,
         content_type: int, mentions: list[int] = ()) -> tuple[Row, bool]:
    """Store the message unless the sender sent its msg_id already (then the original)."""
    original = _find(conn, from_user, msg_id)
    if original is not None:
        return original, True
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    savepoint = conn.begin_nested()     # a lost race on the unique key also undoes the seq
    try:
        seq = conn.execute(insert(group_seqs).values(group_id=group_id, last_seq=1)
                           .on_conflict_do_update(index_elements=[group_seqs.c.group_id],
                                                  set_={"last_seq": group_seqs.c.last_seq + 1})
                           .returning(group_seqs.c.last_seq)).scalar_one()
        row = conn.execute(group_messages.insert().values(
            group_id=group_id, seq=seq, from_user_id=from_user, msg_id=msg_id, content=content,
            content_type=content_type, created_at=now_ms(),
            mentions=",".join(str(u) for u in mentions) or None).returning(*_COLUMNS)).one()
        if mentions:
            conn.execute(group_mentions.insert(), [{"user_id": u, "group_id": group_id,
                                                    "seq": seq} for u in mentions])
        savepoint.commit()
    except exc.IntegrityError:
        savepoint.rollback()
        original = _find(conn, from_user, msg_id)
        if original is None:
            raise
        return original, True
    return row, False


def page_after(conn: Connection, group_id: int, after: int, before: int | None,
               limit: int) -> tuple[list[Row], bool]:
    q = select(*_COLUMNS).where(group_messages.c.group_id == group_id, group_messages.c.seq > after)
    if before is not None:
        q = q.where(group_messages.c.seq < before)
    rows = conn.execute(q.order_by(group_messages.c.seq).limit(limit + 1)).all()
    return rows[:limit], len(rows) > limit


def history(conn: Connection, group_id: int, before: int | None, limit: int) -> tuple[list[Row], bool]:
    q = select(*_COLUMNS).where(group_messages.c.group_id == group_id)
    if before is not None:
        q = q.where(group_messages.c.seq < before)
    rows = conn.execute(q.order_by(group_messages.c.seq.desc()).limit(limit + 1)).all()
    return rows[:limit], len(rows) > limit


def last_seqs(conn: Connection, group_ids: list[int]) -> dict[int, int]:
    rows = conn.execute(select(group_seqs).where(group_seqs.c.group_id.in_(group_ids)))
    return {r.group_id: r.last_seq for r in rows}


def mention_counts(conn: Connection, user_id: int, after: dict[int, int]) -> dict[int, int]:
    """Per group, how many messages after seq ``after[group]`` mention ``user_id``: ranges
    of group_mentions' primary key (user_id, group_id, seq), never a group's messages."""
    if not after:
        return {}
    c = group_mentions.c
    rows = conn.execute(
        select(c.group_id, func.count()).where(
            c.user_id == user_id,
            or_(*[and_(c.group_id == g, c.seq > s) for g, s in after.items()]))
        .group_by(c.group_id)).all()
    return {r[0]: r[1] for r in rows}


# -- recall and edit by the sender (docs/protocol.md "Recall, edit, delete") ------------

def _own_message(conn: Connection, group_id: int, user_id: int, msg_id: str) -> Row:
    row = conn.execute(select(*_COLUMNS).where(
        group_messages.c.from_user_id == user_id, group_messages.c.msg_id == msg_id)
        .with_for_update()).first()
    if row is None or row.group_id != group_id:
        raise Refused("not_found", f"no message {msg_id} sent by user {user_id} in group {group_id}")
    return row


def _key(user_id: int, msg_id: str):
    return and_(group_messages.c.from_user_id == user_id, group_messages.c.msg_id == msg_id)


def recall(conn: Connection, group_id: int, user_id: int, msg_id: str, window_ms: int) -> Row:
    """Recall the sender's group message within ``window_ms`` of its createdAt: content
    "", marked recalled, its mentions no longer counted. Idempotent (whatever the window)."""
    row = _own_message(conn, group_id, user_id, msg_id)
    if row.recalled_at is not None:
        return row
    now = now_ms()
    if now - row.created_at > window_ms:
        raise Refused("too_late", f"a message can be recalled within {window_ms // 1000} s")
    conn.execute(update(group_messages).where(_key(user_id, msg_id))
                 .values(content="", mentions=None, recalled_at=now, changed_at=now))
    if row.mentions:      # a recalled mention is no mention: group_unread's counts drop it
        conn.execute(delete(group_mentions).where(group_mentions.c.group_id == group_id,
                                                  group_mentions.c.seq == row.seq))
    return _find(conn, user_id, msg_id)


def edit(conn: Connection, group_id: int, user_id: int, msg_id: str, content: str,
         window_ms: int) -> Row:
    """Replace the content of the sender's group message within ``window_ms``; the same
    content again changes nothing (idempotent). Its mentions stay."""
    row = _own_message(conn, group_id, user_id, msg_id)
    now = now_ms()
    if not edit_changes(row, content, window_ms, now):
        return row
    conn.execute(update(group_messages).where(_key(user_id, msg_id))
                 .values(content=content, edited_at=now, changed_at=now))
    return _find(conn, user_id, msg_id)


def changes_since(conn: Connection, group_id: int, since_ms: int,
                  limit: int) -> tuple[list[Row], bool]:
    """The group's messages recalled or edited after ``since_ms``, oldest change first."""
    rows = conn.execute(
        select(*_COLUMNS, group_messages.c.changed_at)
        .where(group_messages.c.group_id == group_id, _CHANGED,
               group_messages.c.changed_at > since_ms)
        .order_by(group_messages.c.changed_at, group_messages.c.seq).limit(limit + 1)).all()
    return rows[:limit], len(rows) > limit


def _refusal(run, change, *args) -> Row:
    """409 with the code for every refusal, not_found included: a 404 from these optional
    routes would read as "this service has no such route" (PROTOCOL.md 9.1)."""
    try:
        return run(change, *args)
    except Refused as e:
        raise ApiError(409, ErrorCode(e.code), e.message) from None


def add_routes(app: Flask, db: Database, query_int, msg_id, content, content_type,
               window) -> None:
    """The endpoints, with the 1:1 chat's validators (skyeim/message/app.py)."""

    @app.post("/v1/groups/messages")
    def send_group_message():
        body = json_body()
        gid = body_user_id(body, "groupId")
        sender = body_user_id(body, "fromUserId")
        mid = body.get("msgId")
        mid = str(uuid.uuid4()) if mid is None else msg_id(mid, "msgId")
        row, duplicate = db.run(send, gid, sender, mid, content(body.get("content")),
                                content_type(body.get("contentType")),
                                list(dict.fromkeys(user_id_list(body, "mentions", MAX_MENTIONS,
                                                                required=False))))
        return {**group_message(row), "duplicate": duplicate}

    @app.get("/v1/groups/messages")
    def group_page():
        gid = query_int("groupId")
        after = query_int("afterSeq", required=False, minimum=0) or 0
        before = query_int("beforeSeq", required=False)
        if before is not None and before <= after:
            raise bad_request("beforeSeq must be greater than afterSeq")
        rows, more = db.run(page_after, gid, after, before, limit_arg(request.args.get("limit")))
        return {"messages": [group_message(r) for r in rows], "hasMore": more}

    @app.get("/v1/groups/history")
    def group_history():
        gid = query_int("groupId")
        before = query_int("beforeSeq", required=False)
        rows, more = db.run(history, gid, before, limit_arg(request.args.get("limit")))
        return {"messages": [group_message(r) for r in rows], "hasMore": more}

    @app.get("/v1/groups/last")
    def group_last():
        raw = request.args.get("groupIds") or ""
        parts = [p for p in raw.split(",") if p]
        if not 1 <= len(parts) <= MAX_GROUPS_PER_CALL or not all(p.isascii() and p.isdigit()
                                                                   and 0 < int(p) < 2**63
                                                                   for p in parts):
            raise bad_request(f"groupIds must be 1 to {MAX_GROUPS_PER_CALL} comma-separated ids")
        ids = list(dict.fromkeys(int(p) for p in parts))
        found = db.run(last_seqs, ids)
        return {"groups": [{"groupId": g, "lastSeq": found.get(g, 0)} for g in ids]}

    @app.post("/v1/groups/mentions")
    def group_mention_counts():
        body = json_body()
        uid = body_user_id(body, "userId")
        wanted = body.get("groups")
        if not isinstance(wanted, list) or len(wanted) > MAX_GROUPS_PER_CALL:
            raise bad_request(f"groups must be a list of at most {MAX_GROUPS_PER_CALL} "
                              "{groupId, afterSeq}")
        after: dict[int, int] = {}
        for i, g in enumerate(wanted):
            if not isinstance(g, dict):
                raise bad_request(f"groups[{i}] must be an object {{groupId, afterSeq}}")
            seq = g.get("afterSeq", 0)
            if type(seq) is not int or not 0 <= seq < 2**63:
                raise bad_request(f"groups[{i}].afterSeq must be an integer from 0")
            after[body_user_id(g, "groupId", f"groups[{i}].")] = seq
        found = db.run(mention_counts, uid, after)
        return {"groups": [{"groupId": g, "mentions": found.get(g, 0)} for g in after]}

    @app.post("/v1/groups/messages/recall")
    def recall_group_message():
        body = json_body()
        row = _refusal(db.run, recall, body_user_id(body, "groupId"), body_user_id(body, "userId"),
                       msg_id(body.get("msgId"), "msgId"), window(body))
        return group_message(row)

    @app.post("/v1/groups/messages/edit")
    def edit_group_message():
        body = json_body()
        row = _refusal(db.run, edit, body_user_id(body, "groupId"), body_user_id(body, "userId"),
                       msg_id(body.get("msgId"), "msgId"), content(body.get("content")),
                       window(body))
        return group_message(row)

    @app.get("/v1/groups/changes")
    def group_changes():
        """The group's messages recalled or edited after ``since`` (ms)."""
        gid = query_int("groupId")
        since = query_int("since", required=False, minimum=0) or 0
        rows, more = db.run(changes_since, gid, since, limit_arg(request.args.get("limit")))
        return {"messages": [{**group_message(r), "changedAt": r.changed_at} for r in rows],
                "hasMore": more}
