"""Users in SQLAlchemy Core.

``username`` keeps the name as typed; ``username_lower`` carries the UNIQUE
constraint, so that names differing only in case are one name -- also when two
registrations race, which the database settles with an IntegrityError.
"""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from skyeim.db import now_ms

metadata = sa.MetaData()

users = sa.Table(
    "users", metadata,
    # Integer on SQLite so that the column is its rowid alias and autoincrements.
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
              primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(32), nullable=False),
    sa.Column("username_lower", sa.String(32), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),   # ms
)


@dataclass(frozen=True, slots=True)
class Credentials:
    user_id: int
    password_hash: str


def create_user(conn: sa.Connection, username: str, password_hash: str) -> int:
    """Insert a user and return its id; raises IntegrityError if the name is taken."""
    result = conn.execute(users.insert().values(
        username=username, username_lower=username.lower(),
        password_hash=password_hash, created_at=now_ms()))
    return result.inserted_primary_key[0]


def find_credentials(conn: sa.Connection, username: str) -> Credentials | None:
    row = conn.execute(
        sa.select(users.c.id, users.c.password_hash)
        .where(users.c.username_lower == username.lower())).first()
    return Credentials(row.id, row.password_hash) if row else None


def find_by_ids(conn: sa.Connection, ids: list[int]) -> list[dict]:
    rows = conn.execute(
        sa.select(users.c.id, users.c.username)
        .where(users.c.id.in_(ids)).order_by(users.c.id))
    return [{"userId": r.id, "username": r.username} for r in rows]


def find_by_username(conn: sa.Connection, username: str) -> list[dict]:
    rows = conn.execute(
        sa.select(users.c.id, users.c.username)
        .where(users.c.username_lower == username.lower()))
    return [{"userId": r.id, "username": r.username} for r in rows]
