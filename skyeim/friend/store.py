"""Friendships in SQLAlchemy Core.

A friendship is stored as two rows, (a, b) and (b, a), so that a user's friend
list is one indexed range scan on the primary key.
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

metadata = sa.MetaData(info={"store": "friend"})   # its migrations: skyeim/migrations/friend

friendships = sa.Table(
    "friendships", metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("friend_id", sa.BigInteger, primary_key=True, autoincrement=False),
)


def list_friends(conn: sa.Connection, user_id: int) -> list[int]:
    rows = conn.execute(
        sa.select(friendships.c.friend_id)
        .where(friendships.c.user_id == user_id)
        .order_by(friendships.c.friend_id))
    return [r.friend_id for r in rows]


def list_friends_of_many(conn: sa.Connection, user_ids: list[int]) -> dict[int, list[int]]:
    """Friend lists of several users with one query (the gateway's connect storms)."""
    found: dict[int, list[int]] = {uid: [] for uid in user_ids}
    rows = conn.execute(
        sa.select(friendships.c.user_id, friendships.c.friend_id)
        .where(friendships.c.user_id.in_(list(found)))
        .order_by(friendships.c.user_id, friendships.c.friend_id))
    for r in rows:
        found[r.user_id].append(r.friend_id)
    return found


def add_friendship(conn: sa.Connection, user_id: int, friend_id: int) -> None:
    """Befriend both ways; a friendship that exists already, even one being
    added by a concurrent request, is left as it is instead of failing."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    low, high = sorted((user_id, friend_id))
    # Always the (low, high) row first: two concurrent requests for one pair,
    # in opposite directions, then wait on the same row instead of deadlocking.
    conn.execute(
        insert(friendships)
        .values([{"user_id": low, "friend_id": high},
                 {"user_id": high, "friend_id": low}])
        .on_conflict_do_nothing())


def remove_friendship(conn: sa.Connection, user_id: int, friend_id: int) -> None:
    """Remove both directions; removing an absent friendship does nothing."""
    conn.execute(friendships.delete().where(sa.or_(
        sa.and_(friendships.c.user_id == user_id, friendships.c.friend_id == friend_id),
        sa.and_(friendships.c.user_id == friend_id, friendships.c.friend_id == user_id))))
