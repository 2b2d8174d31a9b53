"""Message storage (SQLAlchemy Core; no Flask). Every function takes the
connection of one transaction, as ``Database.run`` passes it.

Two tables:
* ``messages``: one row per chat; ``id`` is the storage order (unread pages
  walk it), ``(from_user_id, msg_id)`` is unique (idempotent sends), and
  ``(user_lo, user_hi, seq)`` orders a conversation.
* ``conversations``: per unordered user pair, the last ``seq`` handed out.
  Incrementing it in the sending transaction locks the pair's row until
  commit, so seqs are 1, 2, 3, ... with no gaps even with several service
  processes on one PostgreSQL database (a failed send rolls its seq back).
* ``user_conversations``: per user, one row per 1:1 peer (kind 0) with the
  conversation's last message time and seq, plus the user's muted/pinned flags
  (kind 1 rows hold only the flags of a group); written in the sending
  transaction, read by the conversation list through one index
  (docs/protocol.md "Conversation list").
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple

from sqlalchemy import (BigInteger, Column, Index, Integer, LargeBinary, MetaData, SmallInteger,
                        String, Table, TypeDecorator, UniqueConstraint, and_, bindparam, exc, func,
                        or_, select, text, update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from skyeim.db import TransactionRace, now_ms


class Utf8Text(TypeDecorator):
    """Text kept as UTF-8 bytes: U+0000 is a legal character in a chat, and
    PostgreSQL's text type cannot hold it."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else value.encode("utf-8")

    def process_result_value(self, value, dialect):
        return None if value is None else bytes(value).decode("utf-8")

metadata = MetaData(info={"store": "message"})   # its migrations: skyeim/migrations/message

# SQLite: an INTEGER PRIMARY KEY is the rowid, which autoincrements; BIGINT would not.
ROW_ID = BigInteger().with_variant(Integer, "sqlite")

messages = Table(
    "messages", metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("from_user_id", BigInteger, nullable=False),
    Column("to_user_id", BigInteger, nullable=False),
    # the pair, smaller id first, so one index serves a conversation both ways
    Column("user_lo", BigInteger, nullable=False),
    Column("user_hi", BigInteger, nullable=False),
    Column("msg_id", String(64), nullable=False),
    Column("content", Utf8Text, nullable=False),
    Column("content_type", SmallInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),    # ms
    Column("seq", BigInteger, nullable=False),
    Column("delivered_at", BigInteger, nullable=True),   # ms, first delivery
    Column("read_at", BigInteger, nullable=True),        # ms
    # recall and edit (schema 0003): when, and the later of the two for "changed since"
    Column("recalled_at", BigInteger, nullable=True),    # ms; the content is then ""
    Column("edited_at", BigInteger, nullable=True),      # ms, the last edit
    Column("changed_at", BigInteger, nullable=True),     # ms
    UniqueConstraint("from_user_id", "msg_id", name="uq_messages_sender_msg_id"),
    UniqueConstraint("user_lo", "user_hi", "seq", name="uq_messages_conversation_seq"),
)

_UNREAD = messages.c.read_at.is_(None)
# The unread backlog of a user, in storage order; partial, so it stays as
# small as the unread set however large the history grows.
Index("ix_messages_unread_by_recipient", messages.c.to_user_id, messages.c.id,
      postgresql_where=_UNREAD, sqlite_where=_UNREAD)
# "Mark everything from this peer as read".
Index("ix_messages_unread_by_pair", messages.c.to_user_id, messages.c.from_user_id, messages.c.id,
      postgresql_where=_UNREAD, sqlite_where=_UNREAD)

_CHANGED = messages.c.changed_at.isnot(None)
# "What changed in this conversation since T" (a sync after a recall or edit);
# partial, so it holds only the few messages ever recalled or edited.
Index("ix_messages_changed", messages.c.user_lo, messages.c.user_hi, messages.c.changed_at,
      postgresql_where=_CHANGED, sqlite_where=_CHANGED)

# The messages a user deleted for themselves: gone from that user's history only.
hidden_messages = Table(
    "hidden_messages", metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("from_user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("msg_id", String(64), primary_key=True),
    Column("peer_id", BigInteger, nullable=False),
    Column("hidden_at", BigInteger, nullable=False),
)

conversations = Table(
    "conversations", metadata,
    Column("user_lo", BigInteger, primary_key=True, autoincrement=False),
    Column("user_hi", BigInteger, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
)

# kind of a user_conversations row
KIND_CHAT, KIND_GROUP = 0, 1

user_conversations = Table(
    "user_conversations", metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", SmallInteger, primary_key=True, autoincrement=False),
    Column("peer_id", BigInteger, primary_key=True, autoincrement=False),   # user or group id
    Column("last_at", BigInteger, nullable=False),     # ms of the last message (0: none yet)
    Column("last_seq", BigInteger, nullable=False),    # 0: none yet
    Column("pinned", SmallInteger, nullable=False),    # 0 or 1
    Column("muted", SmallInteger, nullable=False),     # 0 or 1
)
# The conversation list's order (pinned first, then newest first), one range scan a page.
Index("ix_user_conversations_list", user_conversations.c.user_id, user_conversations.c.kind,
      user_conversations.c.pinned, user_conversations.c.last_at, user_conversations.c.peer_id)

_CHAT_COLUMNS = (messages.c.id, messages.c.msg_id, messages.c.from_user_id, messages.c.to_user_id,
                 messages.c.content, messages.c.content_type, messages.c.created_at, messages.c.seq,
                 messages.c.delivered_at, messages.c.read_at, messages.c.recalled_at,
                 messages.c.edited_at)


@dataclass(frozen=True)
class NewMessage:
    msg_id: str
    from_user_id: int
    to_user_id: int
    content: str
    content_type: int


class NewRow(NamedTuple):
    """A message just stored by send_messages: the columns of a Row of
    _CHAT_COLUMNS but the storage id; not delivered or read yet."""
    msg_id: str
    from_user_id: int
    to_user_id: int
    content: str
    content_type: int
    created_at: int
    seq: int
    delivered_at: None = None
    read_at: None = None
    recalled_at: None = None
    edited_at: None = None


def chat_message(row: Row | NewRow) -> dict[str, Any]:
    """The protocol's ChatMessage for a stored row; a recalled or edited one also
    says so (``recalled``/``recalledAt``, ``edited``/``editedAt``: fields a v1
    client ignores)."""
    out = {"msgId": row.msg_id, "fromUserId": row.from_user_id, "toUserId": row.to_user_id,
           "content": row.content, "contentType": row.content_type,
           "createdAt": row.created_at, "seq": row.seq}
    if row.recalled_at is not None:
        out["recalled"], out["recalledAt"] = True, row.recalled_at
    elif row.edited_at is not None:
        out["edited"], out["editedAt"] = True, row.edited_at
    return out


def status(row: Row) -> str:
    if row.read_at is not None:
        return "read"
    return "delivered" if row.delivered_at is not None else "sent"


# -- sending -------------------------------------------------------------------

def _pair(msg: NewMessage) -> tuple[int, int]:
    a, b = msg.from_user_id, msg.to_user_id
    return (a, b) if a < b else (b, a)


def send_messages(conn: Connection, msgs: list[NewMessage]) -> list[tuple[Row | NewRow, bool]]:
    """Store each of ``msgs`` unless its sender already sent its msg_id, in this
    transaction; results in the order of ``msgs``: (the stored row, False), or
    (the ORIGINAL row, True) for a duplicate.

    A few statements for the whole batch: one lookup of the batch's keys, one
    seq allocation per conversation, one multi-row INSERT, one conversation
    upsert. A single chat takes the same path (its statements are built once
    and cached). No savepoint: on SQLite the transaction began IMMEDIATE
    (skyeim/db.py), so no other writer can store one of these keys between the
    lookup and the INSERT; on PostgreSQL one can, the INSERT then fails on the
    unique key, and this raises TransactionRace so that Database.run runs the
    transaction again, whose lookup finds the winner's row (no seq is lost: the
    first run's allocations roll back with it). A savepoint around each batch
    cost a sixth of a one-chat transaction's CPU on SQLite and two more round
    trips on PostgreSQL, for a race that is rare.
    """
    existing = {(r.from_user_id, r.msg_id): r
                for r in _find_many(conn, [(m.from_user_id, m.msg_id) for m in msgs])}
    results: list[tuple[Row, bool] | None] = [None] * len(msgs)
    first_of: dict[tuple[int, str], int] = {}   # key -> index of its first new occurrence
    repeats: list[tuple[int, int]] = []        # (index, index of the first occurrence)
    new: list[int] = []
    for i, m in enumerate(msgs):
        key = (m.from_user_id, m.msg_id)
        if key in existing:
            results[i] = (existing[key], True)
        elif key in first_of:
            repeats.append((i, first_of[key]))
        else:
            first_of[key] = i
            new.append(i)
    if new:
        counts: dict[tuple[int, int], int] = {}
        for i in new:
            pair = _pair(msgs[i])
            counts[pair] = counts.get(pair, 0) + 1
        next_seq = _next_seqs(conn, counts)
        now = now_ms()
        rows = []
        for i in new:
            m = msgs[i]
            pair = _pair(m)
            rows.append({"from_user_id": m.from_user_id, "to_user_id": m.to_user_id,
                         "user_lo": pair[0], "user_hi": pair[1], "msg_id": m.msg_id,
                         "content": m.content, "content_type": m.content_type,
                         "created_at": now, "seq": next_seq[pair]})
            next_seq[pair] += 1
        # Nothing needs to be read back: every column of a new row is known here
        # but its storage id, which only unread paging uses.
        if conn.dialect.name == "postgresql":
            try:
                _pg_insert_messages(conn, rows, now)
            except exc.IntegrityError as e:     # only the sender's key can clash: seqs are locked
                raise TransactionRace("a concurrent transaction stored one of the batch's "
                                      "chats after this one looked") from e
        else:
            # A plain executemany (no RETURNING): with RETURNING and parameter
            # order, SQLAlchemy runs one INSERT per row on SQLite.
            conn.execute(messages.insert(), rows)
        # each pair's conversation row of both users: its newest message, one executemany
        _touch_conversations(conn, [(lo, hi, now, next_seq[(lo, hi)] - 1)
                                    for lo, hi in sorted(counts)])
        for i, row in zip(new, rows):
            results[i] = (NewRow(row["msg_id"], row["from_user_id"], row["to_user_id"],
                                 msgs[i].content, row["content_type"], now, row["seq"]), False)
    for i, first in repeats:                    # the same chat twice in one batch (a resend)
        results[i] = (results[first][0], True)  # type: ignore[index]
    return results  # type: ignore[return-value]


# Statements whose shape depends on a count are padded to one of a few sizes,
# so that SQLAlchemy's compiled-statement cache holds a handful of shapes.
_SHAPES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _chunks(keys: list, limit: int = _SHAPES[-1]):
    """``keys`` in chunks of at most ``limit``, each padded (by repeating its last
    key, harmless in a lookup or update) to the next size of _SHAPES."""
    for start in range(0, len(keys), limit):
        chunk = keys[start:start + limit]
        size = next(s for s in _SHAPES if s >= len(chunk))
        yield chunk + [chunk[-1]] * (size - len(chunk))


@functools.lru_cache(maxsize=None)
def _find_statement(size: int):
    # OR of (from_user_id, msg_id) equalities: both SQLite and PostgreSQL answer
    # it from the unique index (a row-value IN would make SQLite scan the table).
    # Built once per size: constructing a 256-term expression costs more than running it.
    return select(*_CHAT_COLUMNS).where(or_(*[
        and_(messages.c.from_user_id == bindparam(f"f{i}"), messages.c.msg_id == bindparam(f"m{i}"))
        for i in range(size)]))


def _find_many(conn: Connection, keys: list[tuple[int, str]]) -> list[Row]:
    if conn.dialect.name == "postgresql":
        return _pg_find_many(conn, list(dict.fromkeys(keys)))
    found: list[Row] = []
    for chunk in _chunks(list(dict.fromkeys(keys))):
        params = {}
        for i, (f, m) in enumerate(chunk):
            params[f"f{i}"], params[f"m{i}"] = f, m
        found += conn.execute(_find_statement(len(chunk)), params).all()
    return found


def find_message(conn: Connection, from_user_id: int, msg_id: str) -> Row | None:
    return conn.execute(select(*_CHAT_COLUMNS).where(
        messages.c.from_user_id == from_user_id, messages.c.msg_id == msg_id)).first()


def _next_seqs(conn: Connection, counts: dict[tuple[int, int], int]) -> dict[tuple[int, int], int]:
    """Allocate ``count`` seqs for each pair (lo, hi); return each pair's first
    new seq. One executemany upsert (pairs in sorted order: one global lock
    order, so concurrent batches cannot deadlock, see send_messages), then one
    read of the pairs' new last_seq, which the upsert has locked until commit.
    (An upsert with RETURNING in parameter order would run row by row on SQLite.)"""
    pairs = sorted(counts)
    if conn.dialect.name == "postgresql":
        return _pg_next_seqs(conn, pairs, counts)
    conn.execute(_seq_upsert(conn.dialect.name),
                 [{"user_lo": lo, "user_hi": hi, "last_seq": counts[(lo, hi)]} for lo, hi in pairs])
    last: dict[tuple[int, int], int] = {}
    for chunk in _chunks(pairs):
        params = {}
        for i, (lo, hi) in enumerate(chunk):
            params[f"l{i}"], params[f"h{i}"] = lo, hi
        for r in conn.execute(_seq_statement(len(chunk)), params):
            last[(r.user_lo, r.user_hi)] = r.last_seq
    return {pair: last[pair] - counts[pair] + 1 for pair in pairs}


@functools.lru_cache(maxsize=None)
def _seq_upsert(dialect: str):
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(conversations)
    return stmt.on_conflict_do_update(
        index_elements=[conversations.c.user_lo, conversations.c.user_hi],
        set_={"last_seq": conversations.c.last_seq + stmt.excluded.last_seq})


@functools.lru_cache(maxsize=None)
def _seq_statement(size: int):
    return select(conversations).where(or_(*[
        and_(conversations.c.user_lo == bindparam(f"l{i}"), conversations.c.user_hi == bindparam(f"h{i}"))
        for i in range(size)]))


def _touch_conversations(conn: Connection, pairs: list[tuple[int, int, int, int]]) -> None:
    """Record (lo, hi, last_at, last_seq) as the newest message of the pair in both
    users' conversation rows: one executemany upsert. The caller holds the pair's
    row in ``conversations`` (locked in global order), so these rows, which only a
    send of that pair or a single-row flag change writes, cannot deadlock."""
    if conn.dialect.name == "postgresql":
        _pg_touch_conversations(conn, pairs)
        return
    rows = []
    for lo, hi, at, seq in pairs:
        rows.append({"user_id": lo, "kind": KIND_CHAT, "peer_id": hi, "last_at": at,
                     "last_seq": seq, "pinned": 0, "muted": 0})
        rows.append({"user_id": hi, "kind": KIND_CHAT, "peer_id": lo, "last_at": at,
                     "last_seq": seq, "pinned": 0, "muted": 0})
    conn.execute(_touch_upsert(conn.dialect.name), rows)


@functools.lru_cache(maxsize=None)
def _touch_upsert(dialect: str):
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(user_conversations)
    c = user_conversations.c
    return stmt.on_conflict_do_update(
        index_elements=[c.user_id, c.kind, c.peer_id],
        set_={"last_at": stmt.excluded.last_at, "last_seq": stmt.excluded.last_seq})


# -- the PostgreSQL fast path ---------------------------------------------------
# The same steps as above, each ONE statement over arrays (unnest) instead of an
# executemany (one Bind/Execute per row in psycopg's pipeline) or a 256-term OR
# (too long for psycopg's query cache, so converted on every call): the text is
# constant, so psycopg also prepares it after a few calls. Semantics as above;
# where a statement takes row locks, its rows come in one sorted order.

_PG_FIND = text(
    "SELECT messages.id, messages.msg_id, messages.from_user_id, messages.to_user_id,"
    " messages.content, messages.content_type, messages.created_at, messages.seq,"
    " messages.delivered_at, messages.read_at, messages.recalled_at, messages.edited_at"
    " FROM unnest(CAST(:f AS bigint[]), CAST(:m AS varchar[])) AS k(f, m)"
    " JOIN messages ON messages.from_user_id = k.f AND messages.msg_id = k.m"
).columns(*_CHAT_COLUMNS)

# INSERT ... SELECT processes (and locks) the rows in the SELECT's order, so the
# ORDER BY is the one global lock order of send_messages; RETURNING hands back
# each pair's new last_seq, which stays locked until commit.
_PG_SEQS = text(
    "INSERT INTO conversations (user_lo, user_hi, last_seq)"
    " SELECT lo, hi, n FROM unnest(CAST(:lo AS bigint[]), CAST(:hi AS bigint[]),"
    " CAST(:n AS bigint[])) AS k(lo, hi, n) ORDER BY lo, hi"
    " ON CONFLICT (user_lo, user_hi) DO UPDATE"
    " SET last_seq = conversations.last_seq + excluded.last_seq"
    " RETURNING user_lo, user_hi, last_seq")

_PG_INSERT = text(
    "INSERT INTO messages (from_user_id, to_user_id, user_lo, user_hi, msg_id, content,"
    " content_type, created_at, seq)"
    " SELECT f, t, lo, hi, m, c, ct, :now, s FROM unnest(CAST(:f AS bigint[]),"
    " CAST(:t AS bigint[]), CAST(:lo AS bigint[]), CAST(:hi AS bigint[]),"
    " CAST(:m AS varchar[]), CAST(:c AS bytea[]), CAST(:ct AS smallint[]),"
    " CAST(:s AS bigint[])) AS k(f, t, lo, hi, m, c, ct, s)")

_PG_TOUCH = text(
    "INSERT INTO user_conversations (user_id, kind, peer_id, last_at, last_seq, pinned, muted)"
    " SELECT u, :kind, p, a, s, 0, 0 FROM unnest(CAST(:u AS bigint[]), CAST(:p AS bigint[]),"
    " CAST(:a AS bigint[]), CAST(:s AS bigint[])) AS k(u, p, a, s) ORDER BY u, p"
    " ON CONFLICT (user_id, kind, peer_id) DO UPDATE"
    " SET last_at = excluded.last_at, last_seq = excluded.last_seq")

# Keys sorted by the caller, and the plan walks them in that order (a nested loop
# over the unique key), so concurrent transactions lock their rows in one order.
_PG_DELIVERED = text(
    "UPDATE messages SET delivered_at = :now"
    " FROM unnest(CAST(:t AS bigint[]), CAST(:f AS bigint[]), CAST(:m AS varchar[])) AS k(t, f, m)"
    " WHERE messages.from_user_id = k.f AND messages.msg_id = k.m AND messages.to_user_id = k.t"
    " AND messages.delivered_at IS NULL"
    " RETURNING messages.to_user_id, messages.from_user_id, messages.msg_id")


def _pg_find_many(conn: Connection, keys: list[tuple[int, str]]) -> list[Row]:
    if not keys:
        return []
    return conn.execute(_PG_FIND, {"f": [f for f, _ in keys], "m": [m for _, m in keys]}).all()


def _pg_next_seqs(conn: Connection, pairs: list[tuple[int, int]],
                  counts: dict[tuple[int, int], int]) -> dict[tuple[int, int], int]:
    last = {(r.user_lo, r.user_hi): r.last_seq for r in conn.execute(_PG_SEQS, {
        "lo": [lo for lo, _ in pairs], "hi": [hi for _, hi in pairs],
        "n": [counts[p] for p in pairs]})}
    return {pair: last[pair] - counts[pair] + 1 for pair in pairs}


def _pg_insert_messages(conn: Connection, rows: list[dict[str, Any]], now: int) -> None:
    conn.execute(_PG_INSERT, {
        "now": now,
        "f": [r["from_user_id"] for r in rows], "t": [r["to_user_id"] for r in rows],
        "lo": [r["user_lo"] for r in rows], "hi": [r["user_hi"] for r in rows],
        "m": [r["msg_id"] for r in rows],
        # Utf8Text's encoding, done here: text() does not know the column's type
        "c": [r["content"].encode("utf-8") for r in rows],
        "ct": [r["content_type"] for r in rows], "s": [r["seq"] for r in rows]})


def _pg_touch_conversations(conn: Connection, pairs: list[tuple[int, int, int, int]]) -> None:
    users, peers, ats, seqs = [], [], [], []
    for lo, hi, at, seq in pairs:
        users += (lo, hi)
        peers += (hi, lo)
        ats += (at, at)
        seqs += (seq, seq)
    conn.execute(_PG_TOUCH, {"kind": KIND_CHAT, "u": users, "p": peers, "a": ats, "s": seqs})


def _pg_mark_delivered(conn: Connection, wanted: list[tuple[int, int, str]],
                       now: int) -> set[tuple[int, int, str]]:
    if not wanted:
        return set()
    keys = sorted(wanted, key=lambda k: (k[1], k[2]))
    return {(r.to_user_id, r.from_user_id, r.msg_id) for r in conn.execute(_PG_DELIVERED, {
        "now": now, "t": [t for t, _, _ in keys], "f": [f for _, f, _ in keys],
        "m": [m for _, _, m in keys]})}


# -- reading -------------------------------------------------------------------

def unread_page(conn: Connection, user_id: int, after_id: int, limit: int) -> tuple[list[Row], bool]:
    """Unread messages to ``user_id`` with storage id > ``after_id``, oldest
    first; the second value says whether more follow."""
    rows = conn.execute(
        select(*_CHAT_COLUMNS)
        .where(messages.c.to_user_id == user_id, _UNREAD, messages.c.id > after_id)
        .order_by(messages.c.id)
        .limit(limit + 1)).all()
    return rows[:limit], len(rows) > limit


def first_unread_pages(conn: Connection, user_ids: list[int], limit: int
                       ) -> dict[int, tuple[list[Row], bool]]:
    """unread_page(user, 0, limit) for several users in one transaction; one
    query finds who has anything unread (in a connect storm, most have not)."""
    pages: dict[int, tuple[list[Row], bool]] = {uid: ([], False) for uid in user_ids}
    with_unread = conn.execute(
        select(messages.c.to_user_id).distinct()
        .where(messages.c.to_user_id.in_(list(pages)), _UNREAD)).scalars().all()
    for uid in with_unread:
        pages[uid] = unread_page(conn, uid, 0, limit)
    return pages


def history_page(conn: Connection, user_id: int, peer_id: int, before_seq: int | None,
                 limit: int) -> tuple[list[Row], bool]:
    """The conversation of the two users, newest first, seq < ``before_seq``."""
    lo, hi = sorted((user_id, peer_id))
    query = select(*_CHAT_COLUMNS).where(messages.c.user_lo == lo, messages.c.user_hi == hi,
                                         ~_hidden_for(user_id))
    if before_seq is not None:
        query = query.where(messages.c.seq < before_seq)
    rows = conn.execute(query.order_by(messages.c.seq.desc()).limit(limit + 1)).all()
    return rows[:limit], len(rows) > limit


def _hidden_for(user_id: int):
    """The messages ``user_id`` deleted for themselves (a condition on ``messages``)."""
    return select(hidden_messages.c.msg_id).where(
        hidden_messages.c.user_id == user_id,
        hidden_messages.c.from_user_id == messages.c.from_user_id,
        hidden_messages.c.msg_id == messages.c.msg_id).exists()


def hidden_among(conn: Connection, user_id: int, rows: list) -> set[tuple[int, str]]:
    """Which of ``rows`` (chat rows) ``user_id`` deleted for themselves."""
    if not rows:
        return set()
    found = conn.execute(select(hidden_messages.c.from_user_id, hidden_messages.c.msg_id).where(
        hidden_messages.c.user_id == user_id,
        hidden_messages.c.msg_id.in_(list({r.msg_id for r in rows})))).all()
    keys = {(r.from_user_id, r.msg_id) for r in rows}
    return {(f, m) for f, m in found if (f, m) in keys}


def conversation_page(conn: Connection, user_id: int, peer_id: int, after_seq: int,
                      before_seq: int | None, limit: int) -> tuple[list[Row], bool]:
    """The conversation of the two users, oldest first, ``after_seq`` < seq <
    ``before_seq`` (both exclusive; no ``before_seq``: to the newest): what a
    client that holds everything up to ``after_seq`` lacks (sync, gap repair)."""
    lo, hi = sorted((user_id, peer_id))
    query = select(*_CHAT_COLUMNS).where(messages.c.user_lo == lo, messages.c.user_hi == hi,
                                         messages.c.seq > after_seq)
    if before_seq is not None:
        query = query.where(messages.c.seq < before_seq)
    rows = conn.execute(query.order_by(messages.c.seq).limit(limit + 1)).all()
    return rows[:limit], len(rows) > limit


# -- state changes -------------------------------------------------------------

def mark_delivered(conn: Connection, user_id: int,
                   keys: Iterable[tuple[int, str]]) -> list[tuple[int, str, int]]:
    """Record first delivery of the messages ``(from_user_id, msg_id)`` that
    are addressed to ``user_id``; return ``(from, msg_id, delivered_at)`` of
    those newly marked, in the order of ``keys``."""
    keys = list(dict.fromkeys(keys))
    by_sender: dict[int, list[str]] = {}
    for from_user_id, msg_id in keys:
        by_sender.setdefault(from_user_id, []).append(msg_id)
    now = now_ms()
    newly = set()
    # One UPDATE per sender, each a lookup in the (from_user_id, msg_id) key;
    # SQLite would scan the table for a row-value "(from, msg_id) IN (...)".
    for from_user_id, msg_ids in by_sender.items():
        marked = conn.execute(
            update(messages)
            .where(messages.c.from_user_id == from_user_id, messages.c.msg_id.in_(msg_ids),
                   messages.c.to_user_id == user_id, messages.c.delivered_at.is_(None))
            .values(delivered_at=now)
            .returning(messages.c.msg_id)).scalars()
        newly.update((from_user_id, m) for m in marked)
    return [(f, m, now) for f, m in keys if (f, m) in newly]


@functools.lru_cache(maxsize=None)
def _delivered_statement(size: int):
    return (update(messages)
            .where(or_(*[and_(messages.c.from_user_id == bindparam(f"f{i}"),
                              messages.c.msg_id == bindparam(f"m{i}"),
                              messages.c.to_user_id == bindparam(f"t{i}")) for i in range(size)]),
                   messages.c.delivered_at.is_(None))
            .values(delivered_at=bindparam("now"))
            .returning(messages.c.to_user_id, messages.c.from_user_id, messages.c.msg_id))


def mark_delivered_many(conn: Connection, deliveries: list[tuple[int, list[tuple[int, str]]]]
                        ) -> list[list[tuple[int, str, int]]]:
    """mark_delivered for several recipients, with one UPDATE per chunk of keys."""
    now = now_ms()
    wanted = list(dict.fromkeys((to, f, m) for to, keys in deliveries for f, m in keys))
    if conn.dialect.name == "postgresql":
        newly = _pg_mark_delivered(conn, wanted, now)
    else:
        newly = set()
        for chunk in _chunks(wanted):
            params: dict[str, Any] = {"now": now}
            for i, (to, f, m) in enumerate(chunk):
                params[f"t{i}"], params[f"f{i}"], params[f"m{i}"] = to, f, m
            marked = conn.execute(_delivered_statement(len(chunk)), params).all()
            newly.update((r.to_user_id, r.from_user_id, r.msg_id) for r in marked)
    return [[(f, m, now) for f, m in dict.fromkeys(keys) if (to, f, m) in newly]
            for to, keys in deliveries]


def mark_read(conn: Connection, user_id: int, peer_id: int,
              msg_ids: list[str] | None) -> tuple[list[str], int]:
    """Mark unread messages from ``peer_id`` to ``user_id`` as read (those of
    ``msg_ids``, or all when it is None); reading implies delivery. Return the
    msg_ids newly marked, in storage order, and the read time."""
    now = now_ms()
    conditions = [messages.c.to_user_id == user_id, messages.c.from_user_id == peer_id, _UNREAD]
    if msg_ids is not None:
        conditions.append(messages.c.msg_id.in_(msg_ids))
    marked = conn.execute(
        update(messages)
        .where(and_(*conditions))
        .values(read_at=now, delivered_at=func.coalesce(messages.c.delivered_at, now))
        .returning(messages.c.id, messages.c.msg_id)).all()
    return [r.msg_id for r in sorted(marked, key=lambda r: r.id)], now


# -- recall, edit, delete for me (schema 0003) ------------------------------------------

class Refused(Exception):
    """A recall or edit this store will not make: ``code`` is not_found (no such
    message from that sender), too_late (past the window) or recalled (an edit of
    a recalled message)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _own_message(conn: Connection, user_id: int, msg_id: str) -> Row:
    row = conn.execute(select(*_CHAT_COLUMNS).where(
        messages.c.from_user_id == user_id, messages.c.msg_id == msg_id)
        .with_for_update()).first()
    if row is None:
        raise Refused("not_found", f"no message {msg_id} sent by user {user_id}")
    return row


def recall(conn: Connection, user_id: int, msg_id: str, window_ms: int) -> Row:
    """Recall the sender's message within ``window_ms`` of its createdAt: its content
    becomes "", it is marked recalled, and, if still unread, it counts as read (it
    is never pushed again). Recalling a recalled message answers it again
    (idempotent, whatever the window). Returns the row as it is now."""
    row = _own_message(conn, user_id, msg_id)
    if row.recalled_at is not None:
        return row
    now = now_ms()
    if now - row.created_at > window_ms:
        raise Refused("too_late", f"a message can be recalled within {window_ms // 1000} s")
    conn.execute(update(messages).where(messages.c.from_user_id == user_id,
                                        messages.c.msg_id == msg_id)
                 .values(content="", recalled_at=now, changed_at=now,
                         read_at=func.coalesce(messages.c.read_at, now),
                         delivered_at=func.coalesce(messages.c.delivered_at, now)))
    return find_message(conn, user_id, msg_id)


def edit_changes(row, content: str, window_ms: int, now: int) -> bool:
    """The rules of an edit, 1:1 or group: whether ``row`` (the sender's message)
    takes ``content`` now; False for the same content again (idempotent). Raises
    Refused for a recalled message or one past the window."""
    if row.recalled_at is not None:
        raise Refused("recalled", "a recalled message cannot be edited")
    if row.content == content and row.edited_at is not None:
        return False
    if now - row.created_at > window_ms:
        raise Refused("too_late", f"a message can be edited within {window_ms // 1000} s")
    return True


def edit(conn: Connection, user_id: int, msg_id: str, content: str, window_ms: int) -> Row:
    """Replace the content of the sender's message within ``window_ms`` of its
    createdAt. The same content again changes nothing (idempotent)."""
    row = _own_message(conn, user_id, msg_id)
    now = now_ms()
    if not edit_changes(row, content, window_ms, now):
        return row
    conn.execute(update(messages).where(messages.c.from_user_id == user_id,
                                        messages.c.msg_id == msg_id)
                 .values(content=content, edited_at=now, changed_at=now))
    return find_message(conn, user_id, msg_id)


def hide(conn: Connection, user_id: int, peer_id: int, keys: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Delete for me: hide the messages ``(from_user_id, msg_id)`` of the conversation
    with ``peer_id`` from ``user_id``'s history (not the peer's). Keys of other
    conversations, unknown ones and those already hidden are skipped; returns the
    keys it hid now or earlier (idempotent)."""
    lo, hi = sorted((user_id, peer_id))
    wanted = list(dict.fromkeys(k for k in keys if k[0] in (user_id, peer_id)))
    if not wanted:
        return []
    found = {(r.from_user_id, r.msg_id) for r in _find_many(conn, wanted)
             if sorted((r.from_user_id, r.to_user_id)) == [lo, hi]}
    already = {(r.from_user_id, r.msg_id) for r in conn.execute(
        select(hidden_messages.c.from_user_id, hidden_messages.c.msg_id).where(
            hidden_messages.c.user_id == user_id,
            hidden_messages.c.msg_id.in_([m for _, m in found] or [""])))}
    now = now_ms()
    new = [k for k in wanted if k in found and k not in already]
    if new:
        conn.execute(hidden_messages.insert(), [
            {"user_id": user_id, "from_user_id": f, "msg_id": m, "peer_id": peer_id,
             "hidden_at": now} for f, m in new])
    return [k for k in wanted if k in found]


def changes_since(conn: Connection, user_id: int, peer_id: int, since_ms: int,
                  limit: int) -> tuple[list[Row], bool]:
    """The conversation's messages recalled or edited after ``since_ms``, oldest
    change first (a sync tells a returning device about them)."""
    lo, hi = sorted((user_id, peer_id))
    rows = conn.execute(
        select(*_CHAT_COLUMNS, messages.c.changed_at)
        .where(messages.c.user_lo == lo, messages.c.user_hi == hi, _CHANGED,
               messages.c.changed_at > since_ms)
        .order_by(messages.c.changed_at, messages.c.seq).limit(limit + 1)).all()
    return rows[:limit], len(rows) > limit
