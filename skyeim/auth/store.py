"""Users and their token generations in SQLAlchemy Core.

``username`` keeps the name as typed; ``username_lower`` carries the UNIQUE
constraint, so that names differing only in case are one name -- also when two
registrations race, which the database settles with an IntegrityError.

``token_generations`` holds, for each user whose tokens were ever revoked, the
current generation (tokens carry it as ``gen``; older ones are revoked) and
when it last changed. A table of its own rather than a column of ``users``:
databases made before revocation existed got it from ``create_all`` (and still
do when they are first recorded as schema 0001, see skyeim/migrations).
"""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from skyeim.db import now_ms

metadata = sa.MetaData(info={"store": "auth"})   # its migrations: skyeim/migrations/auth

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


generations = sa.Table(
    "token_generations", metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("gen", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger, nullable=False),   # ms, the Auth service's clock
    sa.Index("token_generations_by_time", "revoked_at", "user_id"),
)


@dataclass(frozen=True, slots=True)
class Credentials:
    user_id: int
    password_hash: str
    gen: int                  # the generation new tokens get


def create_user(conn: sa.Connection, username: str, password_hash: str) -> int:
    """Insert a user and return its id; raises IntegrityError if the name is taken."""
    result = conn.execute(users.insert().values(
        username=username, username_lower=username.lower(),
        password_hash=password_hash, created_at=now_ms()))
    return result.inserted_primary_key[0]


def find_credentials(conn: sa.Connection, username: str) -> Credentials | None:
    row = conn.execute(
        sa.select(users.c.id, users.c.password_hash,
                  sa.func.coalesce(generations.c.gen, 0).label("gen"))
        .select_from(users.outerjoin(generations, generations.c.user_id == users.c.id))
        .where(users.c.username_lower == username.lower())).first()
    return Credentials(row.id, row.password_hash, row.gen) if row else None


def user_exists(conn: sa.Connection, user_id: int) -> bool:
    return conn.execute(sa.select(users.c.id).where(users.c.id == user_id)).first() is not None


def revoke(conn: sa.Connection, user_id: int) -> tuple[int, int]:
    """Raise ``user_id``'s token generation; returns (new gen, revokedAt ms).

    Two first revocations of one user that race make one IntegrityError; the
    caller runs it again, and then it is an update."""
    at = now_ms()
    result = conn.execute(generations.update()
                          .where(generations.c.user_id == user_id)
                          .values(gen=generations.c.gen + 1, revoked_at=at)
                          .returning(generations.c.gen))
    row = result.first()
    if row is not None:
        return row.gen, at
    conn.execute(generations.insert().values(user_id=user_id, gen=1, revoked_at=at))
    return 1, at


def change_password(conn: sa.Connection, user_id: int, password_hash: str) -> tuple[int, int]:
    """Set the password and revoke every token issued so far, in one transaction."""
    conn.execute(users.update().where(users.c.id == user_id).values(password_hash=password_hash))
    return revoke(conn, user_id)


def revocations_since(conn: sa.Connection, since_ms: int, after_user: int | None,
                      limit: int) -> list[dict]:
    """Generations changed at or after ``since_ms`` (after ``after_user`` within
    that very ms), oldest first, by (revokedAt, userId)."""
    at, uid = generations.c.revoked_at, generations.c.user_id
    if after_user is None:
        cond = at >= since_ms
    else:
        cond = sa.or_(at > since_ms, sa.and_(at == since_ms, uid > after_user))
    rows = conn.execute(sa.select(uid, generations.c.gen, at).where(cond)
                        .order_by(at, uid).limit(limit))
    return [{"userId": r.user_id, "gen": r.gen, "revokedAt": r.revoked_at} for r in rows]


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
