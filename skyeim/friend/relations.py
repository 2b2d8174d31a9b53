"""Friend requests and blocks in the Friend service (docs/protocol.md "Friend
requests and blocking"), schema 0003 of the friend store.

* ``friend_requests``: (from_user_id, to_user_id) pending, with when it was made;
  an index on (to_user_id, created_at) answers "my incoming requests".
* ``blocks``: (user_id, blocked_id): ``user_id`` blocked ``blocked_id``. A block
  removes the friendship and the requests between the two, and while it stands
  neither can befriend or request the other (store.add_friendship refuses).
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from skyeim.db import now_ms
from skyeim.friend import store
from skyeim.friend.store import metadata

MAX_LISTED = 1000           # requests (each way) and blocks one list answers

friend_requests = sa.Table(
    "friend_requests", metadata,
    sa.Column("from_user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("to_user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)
sa.Index("ix_friend_requests_to", friend_requests.c.to_user_id, friend_requests.c.created_at)

blocks = sa.Table(
    "blocks", metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("blocked_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)


def _insert(conn: sa.Connection):
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _pair(table: sa.Table, a_col: str, b_col: str, a: int, b: int):
    """Rows of ``table`` between a and b, either way."""
    ca, cb = table.c[a_col], table.c[b_col]
    return sa.or_(sa.and_(ca == a, cb == b), sa.and_(ca == b, cb == a))


def block_between(conn: sa.Connection, a: int, b: int) -> str | None:
    """"blocked": b blocked a; "blocking": a blocked b; None: neither."""
    rows = conn.execute(sa.select(blocks.c.user_id).where(
        _pair(blocks, "user_id", "blocked_id", a, b))).scalars().all()
    if a in rows:
        return "blocking"
    return "blocked" if rows else None


def blocked_pairs(conn: sa.Connection, pairs: list[tuple[int, int]]) -> list[bool]:
    """For each (a, b): whether either blocked the other (one query)."""
    if not pairs:
        return []
    wanted = {frozenset(p) for p in pairs}
    users = {u for p in pairs for u in p}
    rows = conn.execute(sa.select(blocks.c.user_id, blocks.c.blocked_id).where(
        blocks.c.user_id.in_(users), blocks.c.blocked_id.in_(users)))
    found = {frozenset((r.user_id, r.blocked_id)) for r in rows} & wanted
    return [frozenset(p) in found for p in pairs]


def clear_requests(conn: sa.Connection, a: int, b: int) -> None:
    conn.execute(friend_requests.delete().where(
        _pair(friend_requests, "from_user_id", "to_user_id", a, b)))


def request(conn: sa.Connection, from_id: int, to_id: int) -> dict:
    """A friend request: {status, createdAt?, new?}. status: "requested" (pending;
    ``new`` false when it was already), "friends" (nothing to do), "mutual" (the
    other side requested first: the caller befriends them, which clears both),
    "blocked" (the other side blocked the caller: nothing stored) or "blocking"
    (the caller blocked the other side)."""
    block = block_between(conn, from_id, to_id)
    if block is not None:
        return {"status": block}
    if to_id in store.list_friends(conn, from_id):
        return {"status": "friends"}
    reverse = conn.execute(sa.select(friend_requests.c.created_at).where(
        friend_requests.c.from_user_id == to_id,
        friend_requests.c.to_user_id == from_id)).first()
    if reverse is not None:
        return {"status": "mutual"}
    now = now_ms()
    inserted = conn.execute(_insert(conn)(friend_requests).values(
        from_user_id=from_id, to_user_id=to_id, created_at=now).on_conflict_do_nothing())
    if inserted.rowcount:
        return {"status": "requested", "createdAt": now, "new": True}
    created = conn.execute(sa.select(friend_requests.c.created_at).where(
        friend_requests.c.from_user_id == from_id,
        friend_requests.c.to_user_id == to_id)).scalar_one()
    return {"status": "requested", "createdAt": created, "new": False}


def pending(conn: sa.Connection, from_id: int, to_id: int) -> bool:
    return conn.execute(sa.select(friend_requests.c.created_at).where(
        friend_requests.c.from_user_id == from_id,
        friend_requests.c.to_user_id == to_id)).first() is not None


def decline(conn: sa.Connection, user_id: int, from_id: int) -> bool:
    """Drop ``from_id``'s request to ``user_id``; whether there was one."""
    return bool(conn.execute(friend_requests.delete().where(
        friend_requests.c.from_user_id == from_id,
        friend_requests.c.to_user_id == user_id)).rowcount)


def requests_of(conn: sa.Connection, user_id: int) -> dict:
    """{incoming: [{userId, createdAt}], outgoing: [...]}, oldest first, bounded."""
    fr = friend_requests
    incoming = conn.execute(sa.select(fr.c.from_user_id, fr.c.created_at)
                            .where(fr.c.to_user_id == user_id)
                            .order_by(fr.c.created_at, fr.c.from_user_id).limit(MAX_LISTED))
    outgoing = conn.execute(sa.select(fr.c.to_user_id, fr.c.created_at)
                            .where(fr.c.from_user_id == user_id)
                            .order_by(fr.c.created_at, fr.c.to_user_id).limit(MAX_LISTED))
    return {"incoming": [{"userId": r.from_user_id, "createdAt": r.created_at} for r in incoming],
            "outgoing": [{"userId": r.to_user_id, "createdAt": r.created_at} for r in outgoing]}


def block(conn: sa.Connection, user_id: int, blocked_id: int) -> dict:
    """``user_id`` blocks ``blocked_id`` (idempotent): the friendship and the requests
    between them go. {wereFriends}: whether they were friends until now."""
    conn.execute(_insert(conn)(blocks).values(user_id=user_id, blocked_id=blocked_id,
                                              created_at=now_ms()).on_conflict_do_nothing())
    were = blocked_id in store.list_friends(conn, user_id)
    store.remove_friendship(conn, user_id, blocked_id)
    clear_requests(conn, user_id, blocked_id)
    return {"wereFriends": were}


def unblock(conn: sa.Connection, user_id: int, blocked_id: int) -> bool:
    return bool(conn.execute(blocks.delete().where(
        blocks.c.user_id == user_id, blocks.c.blocked_id == blocked_id)).rowcount)


def blocks_of(conn: sa.Connection, user_id: int) -> list[dict]:
    rows = conn.execute(sa.select(blocks.c.blocked_id, blocks.c.created_at)
                        .where(blocks.c.user_id == user_id)
                        .order_by(blocks.c.created_at, blocks.c.blocked_id).limit(MAX_LISTED))
    return [{"userId": r.blocked_id, "createdAt": r.created_at} for r in rows]


class Blocked(Exception):
    """A friendship refused: one of the two blocked the other."""


def befriend(conn: sa.Connection, user_id: int, friend_id: int) -> None:
    """store.add_friendship unless a block stands between them (Blocked); the
    requests between them are settled by it."""
    if block_between(conn, user_id, friend_id) is not None:
        raise Blocked("these users cannot be friends")
    store.add_friendship(conn, user_id, friend_id)
    clear_requests(conn, user_id, friend_id)
