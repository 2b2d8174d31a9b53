"""Groups in the relations (Friend) service: members, owners, read cursors.

Two tables, in the same database as the friendships:
* ``groups``: id, name, owner, creation time.
* ``group_members``: (group_id, user_id) with the member's role (``owner``,
  ``admin`` or ``member``), when it joined, ``read_seq``: the member reads the
  group "up to seq" (one cursor per member, never per message; it only moves up),
  and ``muted_until`` (ms; schema 0004): a muted member may not send before then.

Administration (docs/protocol.md "Group administration"): the owner promotes and
demotes admins and dismisses the group; the owner and admins kick, mute and rename
(an admin never acts on the owner or on another admin).
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from skyeim.db import now_ms
from skyeim.friend.store import metadata

MAX_MEMBERS = 20_000          # members in one group (the fan-out is measured at 10,000)
MAX_GROUPS_LISTED = 1000      # groups in one user's list
MAX_MUTE_SECONDS = 366 * 86400   # the longest mute (a year and a day)
ROLES = ("owner", "admin", "member")

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")    # sqlite: the autoincrementing rowid

groups = sa.Table(
    "groups", metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("owner_id", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # A dismissed group's id is never given again: its messages stay in the Message
    # store under that id, and a new group must not show its members that history.
    # PostgreSQL's sequence never goes back; SQLite needs AUTOINCREMENT (schema 0005).
    sqlite_autoincrement=True,
)

group_members = sa.Table(
    "group_members", metadata,
    sa.Column("group_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("role", sa.String(8), nullable=False),
    sa.Column("read_seq", sa.BigInteger, nullable=False, default=0),
    sa.Column("joined_at", sa.BigInteger, nullable=False),
    sa.Column("muted_until", sa.BigInteger, nullable=True),      # schema 0004
)
# "my groups" is a range scan of this index, not of every group's members
sa.Index("ix_group_members_user", group_members.c.user_id, group_members.c.group_id)
# an owner's leave: the heir is the first entry (schema 0002 of the friend store)
sa.Index("ix_group_members_join_order", group_members.c.group_id, group_members.c.joined_at,
         group_members.c.user_id)


class NotFound(Exception):
    pass


class Forbidden(Exception):
    pass


class TooMany(Exception):
    pass


def _insert(conn: sa.Connection):
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _group_info(row, role: str | None = None) -> dict[str, Any]:
    out = {"groupId": row.id, "name": row.name, "ownerId": row.owner_id, "createdAt": row.created_at}
    if role is not None:
        out["role"] = role
    return out


def create_group(conn: sa.Connection, owner_id: int, name: str, member_ids: list[int]) -> dict:
    now = now_ms()
    gid = conn.execute(groups.insert().values(name=name, owner_id=owner_id, created_at=now)
                       .returning(groups.c.id)).scalar_one()
    rows = [{"group_id": gid, "user_id": owner_id, "role": "owner", "read_seq": 0, "joined_at": now}]
    rows += [{"group_id": gid, "user_id": u, "role": "member", "read_seq": 0, "joined_at": now}
             for u in dict.fromkeys(member_ids) if u != owner_id]
    conn.execute(group_members.insert(), rows)
    return {"groupId": gid, "name": name, "ownerId": owner_id, "createdAt": now,
            "memberCount": len(rows)}


def _lock_group(conn: sa.Connection, group_id: int):
    """The group's row, locked until commit on PostgreSQL: invites and leaves of one
    group queue up, so the member cap and the ownership hand-over see each other."""
    q = sa.select(groups).where(groups.c.id == group_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).first()
    if row is None:
        raise NotFound("no such group")
    return row


def _role(conn: sa.Connection, group_id: int, user_id: int) -> str | None:
    return conn.execute(sa.select(group_members.c.role).where(
        group_members.c.group_id == group_id, group_members.c.user_id == user_id)).scalar()


def _count(conn: sa.Connection, group_id: int) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(group_members)
                        .where(group_members.c.group_id == group_id)).scalar_one()


def invite(conn: sa.Connection, group_id: int, by_user: int, user_ids: list[int]) -> list[int]:
    """Any member may invite; returns the ids newly added (members already in are skipped)."""
    _lock_group(conn, group_id)
    if _role(conn, group_id, by_user) is None:
        raise Forbidden("only members may invite")
    wanted = list(dict.fromkeys(user_ids))
    present = set(conn.execute(sa.select(group_members.c.user_id).where(
        group_members.c.group_id == group_id, group_members.c.user_id.in_(wanted))).scalars())
    new = [u for u in wanted if u not in present]
    if not new:
        return []
    if _count(conn, group_id) + len(new) > MAX_MEMBERS:
        raise TooMany(f"a group has at most {MAX_MEMBERS} members")
    now = now_ms()
    conn.execute(_insert(conn)(group_members).values(
        [{"group_id": group_id, "user_id": u, "role": "member", "read_seq": 0, "joined_at": now}
         for u in new]).on_conflict_do_nothing())
    return new


def leave(conn: sa.Connection, group_id: int, user_id: int) -> dict:
    """The member leaves (idempotent). An owner's leave hands ownership to the member
    who joined first (lowest id among equals); the last member's leave leaves an empty group."""
    group = _lock_group(conn, group_id)
    gone = conn.execute(group_members.delete().where(
        group_members.c.group_id == group_id, group_members.c.user_id == user_id)).rowcount
    owner = group.owner_id
    if gone and owner == user_id:
        heir = conn.execute(sa.select(group_members.c.user_id)
                            .where(group_members.c.group_id == group_id)
                            .order_by(group_members.c.joined_at, group_members.c.user_id)
                            .limit(1)).scalar()
        if heir is not None:
            owner = heir
            conn.execute(group_members.update().where(
                group_members.c.group_id == group_id, group_members.c.user_id == heir)
                .values(role="owner"))
            conn.execute(groups.update().where(groups.c.id == group_id).values(owner_id=heir))
    return {"left": bool(gone), "ownerId": owner}


def groups_of(conn: sa.Connection, user_id: int) -> list[dict]:
    rows = conn.execute(
        sa.select(groups, group_members.c.role, group_members.c.read_seq)
        .join(group_members, group_members.c.group_id == groups.c.id)
        .where(group_members.c.user_id == user_id)
        .order_by(groups.c.id).limit(MAX_GROUPS_LISTED)).all()
    return [{**_group_info(r, r.role), "readSeq": r.read_seq} for r in rows]


def groups_of_many(conn: sa.Connection, user_ids: list[int]) -> dict[int, list[dict]]:
    """groups_of for several users with one query (the gateway's connect storms)."""
    found: dict[int, list[dict]] = {u: [] for u in user_ids}
    rows = conn.execute(
        sa.select(groups, group_members.c.user_id, group_members.c.role, group_members.c.read_seq)
        .join(group_members, group_members.c.group_id == groups.c.id)
        .where(group_members.c.user_id.in_(list(found)))
        .order_by(group_members.c.user_id, groups.c.id)).all()
    for r in rows:
        mine = found[r.user_id]
        if len(mine) < MAX_GROUPS_LISTED:
            mine.append({**_group_info(r, r.role), "readSeq": r.read_seq})
    return found


def members(conn: sa.Connection, group_id: int, after_user: int, limit: int) -> tuple[list[dict], bool]:
    """A page of the members, by user id; raises NotFound for an unknown group."""
    if conn.execute(sa.select(groups.c.id).where(groups.c.id == group_id)).first() is None:
        raise NotFound("no such group")
    rows = conn.execute(
        sa.select(group_members.c.user_id, group_members.c.role, group_members.c.read_seq,
                  group_members.c.muted_until)
        .where(group_members.c.group_id == group_id, group_members.c.user_id > after_user)
        .order_by(group_members.c.user_id).limit(limit + 1)).all()
    now = now_ms()
    return ([_member(r, now) for r in rows[:limit]], len(rows) > limit)


def _member(row, now: int) -> dict[str, Any]:
    out = {"userId": row.user_id, "role": row.role, "readSeq": row.read_seq}
    if row.muted_until is not None and row.muted_until > now:
        out["mutedUntil"] = row.muted_until         # only while the mute lasts
    return out


def mark_read(conn: sa.Connection, group_id: int, user_id: int, seq: int) -> dict:
    """Move the member's cursor up to ``seq`` (never down); raises Forbidden for a non-member."""
    moved = conn.execute(group_members.update().where(
        group_members.c.group_id == group_id, group_members.c.user_id == user_id,
        group_members.c.read_seq < seq).values(read_seq=seq)).rowcount
    current = conn.execute(sa.select(group_members.c.read_seq).where(
        group_members.c.group_id == group_id, group_members.c.user_id == user_id)).scalar()
    if current is None:
        raise Forbidden("not a member of this group")
    return {"readSeq": current, "moved": bool(moved)}


# -- administration ------------------------------------------------------------------

def _actor(conn: sa.Connection, group_id: int, by_user: int, allowed: tuple[str, ...],
           what: str):
    """The group (locked) and the acting member's role; Forbidden unless it is allowed
    (an unknown group too: it looks like someone else's)."""
    try:
        group = _lock_group(conn, group_id)
    except NotFound:
        raise Forbidden("not a member of this group") from None
    role = _role(conn, group_id, by_user)
    if role not in allowed:
        raise Forbidden(f"only the {' or '.join(allowed)} may {what}" if role else
                        "not a member of this group")
    return group, role


def _target(conn: sa.Connection, group_id: int, by_role: str, by_user: int, user_id: int,
            what: str) -> str:
    """The role of the member acted on: never the actor itself, never the owner, and
    for an admin never another admin. NotFound if it is not a member."""
    if user_id == by_user:
        raise Forbidden(f"you cannot {what} yourself")
    role = _role(conn, group_id, user_id)
    if role is None:
        raise NotFound("no such member")
    if role == "owner" or (role == "admin" and by_role != "owner"):
        raise Forbidden(f"you cannot {what} the {role}")
    return role


def set_role(conn: sa.Connection, group_id: int, by_user: int, user_id: int, role: str) -> dict:
    """The owner makes a member an admin, or an admin a member."""
    _actor(conn, group_id, by_user, ("owner",), "change roles")
    old = _target(conn, group_id, "owner", by_user, user_id, "change the role of")
    if old != role:
        conn.execute(group_members.update().where(
            group_members.c.group_id == group_id, group_members.c.user_id == user_id)
            .values(role=role))
    return {"userId": user_id, "role": role, "changed": old != role}


def kick(conn: sa.Connection, group_id: int, by_user: int, user_id: int) -> dict:
    """The owner or an admin removes a member (an admin: not another admin)."""
    _, by_role = _actor(conn, group_id, by_user, ("owner", "admin"), "remove members")
    _target(conn, group_id, by_role, by_user, user_id, "remove")
    conn.execute(group_members.delete().where(
        group_members.c.group_id == group_id, group_members.c.user_id == user_id))
    return {"userId": user_id, "kicked": True}


def mute(conn: sa.Connection, group_id: int, by_user: int, user_id: int, seconds: int) -> dict:
    """The owner or an admin mutes a member for ``seconds`` (0: lifts the mute)."""
    _, by_role = _actor(conn, group_id, by_user, ("owner", "admin"), "mute members")
    _target(conn, group_id, by_role, by_user, user_id, "mute")
    until = now_ms() + seconds * 1000 if seconds else None
    conn.execute(group_members.update().where(
        group_members.c.group_id == group_id, group_members.c.user_id == user_id)
        .values(muted_until=until))
    return {"userId": user_id, "mutedUntil": until or 0}


def rename(conn: sa.Connection, group_id: int, by_user: int, name: str) -> dict:
    """The owner or an admin renames the group."""
    group, _ = _actor(conn, group_id, by_user, ("owner", "admin"), "rename the group")
    conn.execute(groups.update().where(groups.c.id == group_id).values(name=name))
    return {**_group_info(group), "name": name}


def dismiss(conn: sa.Connection, group_id: int, by_user: int) -> dict:
    """The owner deletes the group and its members; answers who the members were."""
    _actor(conn, group_id, by_user, ("owner",), "dismiss the group")
    ids = list(conn.execute(sa.select(group_members.c.user_id)
                            .where(group_members.c.group_id == group_id)).scalars())
    conn.execute(group_members.delete().where(group_members.c.group_id == group_id))
    conn.execute(groups.delete().where(groups.c.id == group_id))
    return {"dismissed": True, "memberIds": ids}
