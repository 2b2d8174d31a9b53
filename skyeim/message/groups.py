"""Group messages in the Message service: each stored once, with a per-group seq.

* ``group_messages``: one row per message; ``(from_user_id, msg_id)`` is unique
  (idempotent sends, a key space of its own beside the 1:1 chats) and
  ``(group_id, seq)`` orders a group.
* ``group_seqs``: per group, the last seq handed out; incremented in the sending
  transaction (the row stays locked until commit), so seqs have no gaps, as
  ``conversations.last_seq`` does for 1:1 chats.

Membership is the relations service's business: the gateway checks it before
it calls here.

  POST /v1/groups/messages   {groupId, fromUserId, msgId?, content, contentType?}
                             -> GroupMessage + {duplicate}
  GET  /v1/groups/messages?groupId=&afterSeq=&beforeSeq=&limit=  -> {messages, hasMore} oldest first
  GET  /v1/groups/history?groupId=&beforeSeq=&limit=             -> {messages, hasMore} newest first
  GET  /v1/groups/last?groupIds=1,2,...                         -> {groups: [{groupId, lastSeq}]}
"""
from __future__ import annotations

import uuid
from typing import Any

from flask import Flask, request
from sqlalchemy import (BigInteger, Column, SmallInteger, String, Table,
                        UniqueConstraint, exc, select)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from skyeim.db import Database, now_ms
from skyeim.message.store import ROW_ID, Utf8Text, metadata
from skyeim.web import bad_request, body_user_id, json_body, limit_arg

MAX_GROUPS_PER_CALL = 1000     # groupIds in one /v1/groups/last call

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
    UniqueConstraint("from_user_id", "msg_id", name="uq_group_messages_sender_msg_id"),
    UniqueConstraint("group_id", "seq", name="uq_group_messages_group_seq"),
)

group_seqs = Table(
    "group_seqs", metadata,
    Column("group_id", BigInteger, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
)

_COLUMNS = (group_messages.c.group_id, group_messages.c.seq, group_messages.c.from_user_id,
            group_messages.c.msg_id, group_messages.c.content, group_messages.c.content_type,
            group_messages.c.created_at)


def group_message(row: Row) -> dict[str, Any]:
    """The GroupMessage of a stored row (the `groupchat` frame's data)."""
    return {"groupId": row.group_id, "msgId": row.msg_id, "fromUserId": row.from_user_id,
            "content": row.content, "contentType": row.content_type,
            "createdAt": row.created_at, "seq": row.seq}


def _find(conn: Connection, from_user: int, msg_id: str) -> Row | None:
    return conn.execute(select(*_COLUMNS).where(group_messages.c.from_user_id == from_user,
                                                group_messages.c.msg_id == msg_id)).first()


def send(conn: Connection, group_id: int, from_user: int, msg_id: str, content: str,
         content_type: int) -> tuple[Row, bool]:
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
            content_type=content_type, created_at=now_ms()).returning(*_COLUMNS)).one()
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


def add_routes(app: Flask, db: Database, query_int, msg_id, content, content_type) -> None:
    """The endpoints, with the 1:1 chat's validators (skyeim/message/app.py)."""

    @app.post("/v1/groups/messages")
    def send_group_message():
        body = json_body()
        gid = body_user_id(body, "groupId")
        sender = body_user_id(body, "fromUserId")
        mid = body.get("msgId")
        mid = str(uuid.uuid4()) if mid is None else msg_id(mid, "msgId")
        row, duplicate = db.run(send, gid, sender, mid, content(body.get("content")),
                                content_type(body.get("contentType")))
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
