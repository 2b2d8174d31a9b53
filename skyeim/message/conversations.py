"""The conversation list of a user, and its muted/pinned flags (docs/protocol.md
"Conversation list").

1:1 conversations come from ``user_conversations`` (store.py), which every send
updates in its own transaction: a page is one range scan of the index
``(user_id, kind, pinned, last_at, peer_id)``, so its cost does not grow with
the number of conversations. Groups come from the caller's group list (the
Friend service's business; the gateway passes it): their last message from
``group_seqs`` + ``group_messages`` by key, their flags from the kind-1 rows.

Order: pinned first, then newest first (``last_at``), then groups before 1:1
at the same instant, then the higher id. The cursor is the last item's key.

  POST /v1/conversations/list     {userId, groups?: [{groupId, readSeq, createdAt?}],
                                   limit?, cursor?} -> {items, nextCursor}
  POST /v1/conversations/settings {userId, peerId|groupId, muted?, pinned?}
                                   -> {muted, pinned}
"""
from __future__ import annotations

import functools
import re
from typing import Any

from flask import Flask
from sqlalchemy import and_, case, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from skyeim.db import Database
from skyeim.message import groups, store
from skyeim.message.store import KIND_CHAT, KIND_GROUP, messages, user_conversations
from skyeim.protocol import MAX_USER_ID, is_positive_id
from skyeim.web import bad_request, body_user_id, json_body, limit_arg

MAX_GROUPS = 10_000                 # groups passed in one list call
_CURSOR = re.compile(r"([01])\.([0-9]{1,19})\.([01])\.([0-9]{1,19})")

_UNREAD_MESSAGES = messages.alias("unread_messages")
Key = tuple[int, int, int, int]     # (pinned, last_at, kind, id), compared descending
uc = user_conversations.c


def encode_cursor(key: Key) -> str:
    return ".".join(str(k) for k in key)


def decode_cursor(raw: Any) -> Key | None:
    if raw is None or raw == "":
        return None
    m = _CURSOR.fullmatch(raw) if isinstance(raw, str) else None
    if m is None or int(m.group(2)) > MAX_USER_ID or int(m.group(4)) > MAX_USER_ID:
        raise bad_request("cursor is not a nextCursor of this service")
    return tuple(int(g) for g in m.groups())  # type: ignore[return-value]


# -- reading -------------------------------------------------------------------------

def _chat_rows(conn: Connection, user_id: int, before: Key | None, limit: int) -> list:
    """The 1:1 rows after ``before``, each with its last message's columns (a key
    lookup per row) and its unread count (the partial unread index): one statement."""
    m = messages.c
    lo = case((uc.user_id < uc.peer_id, uc.user_id), else_=uc.peer_id)
    hi = case((uc.user_id < uc.peer_id, uc.peer_id), else_=uc.user_id)
    um = _UNREAD_MESSAGES.c
    unread = (select(func.count()).select_from(_UNREAD_MESSAGES)
              .where(um.to_user_id == user_id, um.from_user_id == uc.peer_id, um.read_at.is_(None))
              .correlate(user_conversations).scalar_subquery())
    q = (select(uc.peer_id, uc.last_at, uc.last_seq, uc.pinned, uc.muted,
                unread.label("unread"), *store._CHAT_COLUMNS)
         .select_from(user_conversations.outerjoin(
             messages, and_(m.user_lo == lo, m.user_hi == hi, m.seq == uc.last_seq)))
         .where(uc.user_id == user_id, uc.kind == KIND_CHAT))
    if before is not None:
        p, t, kind, ident = before
        bound = tuple_(uc.pinned, uc.last_at, uc.peer_id)
        # at the cursor's (pinned, last_at): a group cursor comes before every 1:1 row
        q = q.where(bound < tuple_(p, t, ident) if kind == KIND_CHAT
                    else bound <= tuple_(p, t, MAX_USER_ID))
    q = q.order_by(uc.pinned.desc(), uc.last_at.desc(), uc.peer_id.desc()).limit(limit)
    return conn.execute(q).all()


def _group_lasts(conn: Connection, group_ids: list[int]) -> dict[int, Any]:
    """group -> its last message row (with last_seq), for the groups that have one."""
    gs, gm = groups.group_seqs.c, groups.group_messages.c
    found: dict[int, Any] = {}
    for i in range(0, len(group_ids), 1000):
        rows = conn.execute(select(*groups._COLUMNS).select_from(
            groups.group_seqs.join(groups.group_messages,
                                   and_(gm.group_id == gs.group_id, gm.seq == gs.last_seq)))
            .where(gs.group_id.in_(group_ids[i:i + 1000])))
        found.update({r.group_id: r for r in rows})
    return found


def conversation_page(conn: Connection, user_id: int, my_groups: list[dict], before: Key | None,
                      limit: int) -> tuple[list[dict], str | None]:
    """One page of the list, and the cursor of the next (None: the last page)."""
    chats = _chat_rows(conn, user_id, before, limit + 1)
    candidates: list[tuple[Key, str, Any]] = [
        ((r.pinned, r.last_at, KIND_CHAT, r.peer_id), "chat", r) for r in chats]
    if my_groups:
        ids = [g["groupId"] for g in my_groups]
        lasts = _group_lasts(conn, ids)
        flags = {r.peer_id: r for r in conn.execute(
            select(uc.peer_id, uc.pinned, uc.muted).where(uc.user_id == user_id,
                                                          uc.kind == KIND_GROUP))}
        for g in my_groups:
            gid, last, flag = g["groupId"], lasts.get(g["groupId"]), flags.get(g["groupId"])
            at = last.created_at if last is not None else g.get("createdAt", 0)
            key = (flag.pinned if flag else 0, at, KIND_GROUP, gid)
            if before is None or key < before:
                candidates.append((key, "group", (g, last, flag)))
    candidates.sort(key=lambda c: c[0], reverse=True)
    page, more = candidates[:limit], len(candidates) > limit
    items = []
    for key, kind, r in page:
        if kind == "chat":
            items.append({"kind": "chat", "peerId": r.peer_id, "lastAt": r.last_at,
                          "lastSeq": r.last_seq, "unread": r.unread,
                          "muted": bool(r.muted), "pinned": bool(r.pinned),
                          "lastMessage": store.chat_message(r) if r.msg_id is not None else None})
        else:
            g, last, flag = r
            last_seq = last.seq if last is not None else 0
            items.append({"kind": "group", "groupId": g["groupId"], "lastAt": key[1],
                          "lastSeq": last_seq, "readSeq": g.get("readSeq", 0),
                          "unread": max(0, last_seq - g.get("readSeq", 0)),
                          "muted": bool(flag.muted) if flag else False,
                          "pinned": bool(flag.pinned) if flag else False,
                          "lastMessage": groups.group_message(last) if last is not None else None})
    return items, encode_cursor(page[-1][0]) if more and page else None


# -- flags ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _flag_upsert(dialect: str, field: str):
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(user_conversations)
    return stmt.on_conflict_do_update(index_elements=[uc.user_id, uc.kind, uc.peer_id],
                                      set_={field: getattr(stmt.excluded, field)})


def set_flags(conn: Connection, user_id: int, kind: int, peer_id: int,
              flags: dict[str, bool]) -> dict[str, bool]:
    """Set ``muted`` and/or ``pinned`` of one conversation (a row with no message
    yet if there is none: a 1:1 one then lists with ``lastMessage`` null)."""
    for field, value in flags.items():
        row = {"user_id": user_id, "kind": kind, "peer_id": peer_id, "last_at": 0, "last_seq": 0,
               "pinned": 0, "muted": 0, field: int(value)}
        conn.execute(_flag_upsert(conn.dialect.name, field), row)
    now = conn.execute(select(uc.muted, uc.pinned).where(
        uc.user_id == user_id, uc.kind == kind, uc.peer_id == peer_id)).one()
    return {"muted": bool(now.muted), "pinned": bool(now.pinned)}


# -- HTTP ----------------------------------------------------------------------------

def _groups_arg(raw: Any) -> list[dict]:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_GROUPS:
        raise bad_request(f"groups must be a list of at most {MAX_GROUPS} objects")
    out: dict[int, dict] = {}
    for i, g in enumerate(raw):
        if not isinstance(g, dict) or not is_positive_id(g.get("groupId")):
            raise bad_request(f"groups[{i}] must be an object with an integer groupId")
        read, created = g.get("readSeq", 0), g.get("createdAt", 0)
        if type(read) is not int or read < 0 or type(created) is not int or created < 0:
            raise bad_request(f"groups[{i}].readSeq and createdAt must be integers of 0 or more")
        out[g["groupId"]] = {"groupId": g["groupId"], "readSeq": read,
                             "createdAt": min(created, MAX_USER_ID)}
    return list(out.values())


def add_routes(app: Flask, db: Database) -> None:

    @app.post("/v1/conversations/list")
    def list_conversations():
        body = json_body()
        user_id = body_user_id(body, "userId")
        limit = limit_arg(None if body.get("limit") is None else str(body.get("limit")))
        before = decode_cursor(body.get("cursor"))
        items, cursor = db.run(conversation_page, user_id, _groups_arg(body.get("groups")),
                               before, limit)
        return {"items": items, "nextCursor": cursor}

    @app.post("/v1/conversations/settings")
    def settings():
        body = json_body()
        user_id = body_user_id(body, "userId")
        if (body.get("peerId") is None) == (body.get("groupId") is None):
            raise bad_request("give exactly one of peerId and groupId")
        if body.get("peerId") is not None:
            kind, peer = KIND_CHAT, body_user_id(body, "peerId")
            if peer == user_id:
                raise bad_request("peerId must differ from userId")
        else:
            kind, peer = KIND_GROUP, body_user_id(body, "groupId")
        flags = {}
        for field in ("muted", "pinned"):
            if body.get(field) is not None:
                if not isinstance(body[field], bool):
                    raise bad_request(f"{field} must be true or false")
                flags[field] = body[field]
        if not flags:
            raise bad_request("give muted and/or pinned (true or false)")
        return db.run(set_flags, user_id, kind, peer, flags)
