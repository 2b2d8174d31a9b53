"""Database access shared by the Message, Friend and Auth services (SQLAlchemy Core).

``Database.run(fn, *args)`` calls ``fn(conn, *args)`` inside one transaction and
returns its result. How it gets there depends on the backend:

* SQLite: the sqlite3 module blocks the whole process (gevent cannot switch
  while C code waits on the file), so every call runs on ONE dedicated native
  thread over ONE connection. That keeps the event loop free and serializes
  writes, which SQLite needs anyway. The engine is used from that thread only.
* PostgreSQL (``postgresql+psycopg://``): psycopg 3 waits cooperatively once
  gevent has monkey-patched the process, so calls run directly in the calling
  greenlet over a normal connection pool.

Failures of the database itself (unreachable, locked, disk full, a timeout)
raise DatabaseUnavailable, which the services answer with 503; IntegrityError
passes through so that callers can resolve races on unique keys.

The schema: a store's MetaData names the store (``MetaData(info={"store":
...})``), and opening its Database runs ``skyeim.migrations.prepare``: an
empty database gets the schema, a database at another revision than this
release's ends the program with one line (SchemaExit) naming the command that
fixes it. If the database is down at start, the check runs at the first call.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from typing import Any, Callable, TypeVar

import gevent
import gevent.threadpool
from sqlalchemy import MetaData, create_engine, event, exc
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from skyeim import migrations

log = logging.getLogger(__name__)

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 5000      # wait this long for another process's write lock
# SQLite's default page cache is 2 MiB. A chat store outgrows it in minutes,
# and then every batch reads its index pages back through the kernel: 64 MiB
# (allocated as used) took a write-heavy chat load in the store alone from
# ~3,500 to ~6,800 msg/s (docs/performance.md).
# The writer no longer checkpoints the WAL every 1,000 pages (SQLite's default,
# which made a chat batch's commit ~5x slower: it copies pages back and fsyncs
# on the writer's time): a checkpointer thread does it beside the writer
# (_Checkpointer). 20,000 pages (~80 MB of WAL) is the backstop should it fall
# behind; journal_size_limit trims the WAL file back after one.
SQLITE_AUTOCHECKPOINT_PAGES = 20_000
SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536",
                  f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}", "foreign_keys=ON",
                  f"wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}",
                  "journal_size_limit=67108864")
SQLITE_CHECKPOINT_INTERVAL = 0.2   # s between the checkpointer's passes
SQLITE_CALL_TIMEOUT = 30.0         # s a caller waits for the worker thread (queue + work)
PG_CONNECT_TIMEOUT = 5             # s to open a connection
PG_STATEMENT_TIMEOUT_MS = 15000    # server-side cap on any one statement
PG_POOL_TIMEOUT = 10               # s to wait for a free pooled connection


class DatabaseUnavailable(Exception):
    """The database cannot be used right now (down, locked, full, too slow).

    ``reason`` says which, for the service's answer: ``locked`` (another
    process holds the write lock past the busy timeout), ``full`` (the disk or
    the database is full), or ``unavailable`` (anything else)."""

    def __init__(self, message: str, reason: str = "unavailable"):
        super().__init__(message)
        self.reason = reason


class TransactionRace(Exception):
    """Raised inside a transaction that lost a race it cannot repair in place
    (on PostgreSQL, a concurrent transaction stored one of its keys after its
    lookup). Database.run rolls the transaction back and runs it again: the
    lookup then sees the winner's rows. At most RACE_ATTEMPTS runs in all."""


RACE_ATTEMPTS = 3


def now_ms() -> int:
    """Milliseconds since the Unix epoch: the unit of every timestamp in the protocol."""
    return time.time_ns() // 1_000_000


class Database:
    def __init__(self, url: str, metadata: MetaData, pool_size: int = 10):
        self._url = make_url(url)
        self._store = metadata.info["store"]
        self._schema_ready = False
        self._schema_lock = threading.Lock()   # gevent's lock once patched: one checker at a time
        self._worker: gevent.threadpool.ThreadPool | None = None
        self._checkpointer: _Checkpointer | None = None
        if self.is_sqlite:
            self._worker = gevent.threadpool.ThreadPool(1)
        self._checkpointer = _Checkpointer.for_url(self._url)
        self._engine = open_engine(self._url, pool_size)
        # Check (or create) the schema now if possible; if the database is
        # down, the service still starts (answering 503) and the next call retries.
        try:
            self._ensure_schema()
        except DatabaseUnavailable as e:
            log.warning("database not ready at start, will retry on use: %s", e)
        except migrations.SchemaRefusal as e:
            self.close()
            raise migrations.SchemaExit(e) from None

    @property
    def is_sqlite(self) -> bool:
        return self._url.get_backend_name() == "sqlite"

    @property
    def engine(self) -> Engine:
        """For tests and tools; services go through run()."""
        return self._engine

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in one transaction and return its result."""
        if not self._schema_ready:
            try:
                self._ensure_schema()
            except migrations.SchemaRefusal as e:    # found only now: the database was down at start
                raise DatabaseUnavailable(e.line(), "schema") from None
        return self._call(self._transaction, fn, *args)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        if self._worker is not None:
            try:
                self._on_worker(self._engine.dispose)
            finally:
                self._worker.kill()
                self._worker = None
        else:
            self._engine.dispose()

    # -- internals ---------------------------------------------------------

    def _transaction(self, fn: Callable[..., T], *args: Any) -> T:
        for attempt in range(1, RACE_ATTEMPTS + 1):
            try:
                with self._engine.begin() as conn:
                    return fn(conn, *args)
            except TransactionRace as e:
                if attempt == RACE_ATTEMPTS:
                    raise DatabaseUnavailable(f"lost a race {RACE_ATTEMPTS} times in a row: {e}") from None
                log.info("a transaction lost a race (%s); running it again", e)
        raise AssertionError("unreachable")

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                self._call(self._prepare_schema)
                self._schema_ready = True

    def _prepare_schema(self) -> None:
        make_sqlite_directory(self._url)
        where = migrations.describe(self._url)
        # Several processes may start at once on one database: prepare takes
        # the store's lock in this transaction (see skyeim.migrations).
        with self._engine.begin() as conn:
            changed = migrations.prepare(conn, self._store, where)
        if changed == "created":
            log.info("%s: created the %s store's schema %s", where, self._store,
                     migrations.head(self._store))
        elif changed == "stamped":
            log.info("%s: recorded the %s store (made by an earlier release) as schema %s",
                     where, self._store, migrations.BASELINE)

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            if self._worker is not None:
                return self._on_worker(fn, *args)
            return fn(*args)
        except exc.IntegrityError:
            raise
        except _UNAVAILABLE as e:
            raise DatabaseUnavailable(_describe(e), _reason(e)) from e
        except exc.DBAPIError as e:
            if e.connection_invalidated or type(e) is exc.DatabaseError:
                # a dropped connection, or sqlite's "file is not a database"
                raise DatabaseUnavailable(_describe(e), _reason(e)) from e
            raise
        except OSError as e:        # e.g. the SQLite directory cannot be created
            raise DatabaseUnavailable(str(e)) from e

    def _on_worker(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the SQLite thread; give up after SQLITE_CALL_TIMEOUT."""
        assert self._worker is not None
        abandoned = False

        def task():
            if abandoned:           # the caller timed out while this waited in the queue
                return False, None
            # Hand exceptions back as values: gevent would print every one
            # raised in a pool thread, even an expected IntegrityError.
            try:
                return True, fn(*args)
            except BaseException as e:  # noqa: B036 - re-raised in the caller
                return False, e

        try:
            ok, value = self._worker.spawn(task).get(timeout=SQLITE_CALL_TIMEOUT)
        except gevent.Timeout:
            abandoned = True
            raise DatabaseUnavailable(f"no answer from SQLite within {SQLITE_CALL_TIMEOUT:g}s") from None
        if not ok:
            raise value
        return value



class _Checkpointer:
    """Checkpoints an SQLite database's WAL from a thread of its own, every
    SQLITE_CHECKPOINT_INTERVAL s, over its own connection. PASSIVE: it copies
    what it can without waiting for the writer or readers, so the writer's
    commits only append to the WAL (docs/performance.md, round 3)."""

    @classmethod
    def for_url(cls, url: URL) -> "_Checkpointer | None":
        path = url.database
        if url.get_backend_name() != "sqlite" or not path or path == ":memory:" \
                or path.startswith("file:"):
            return None
        return cls(path)

    def __init__(self, path: str):
        self.path = path
        self._conn: sqlite3.Connection | None = None   # used on the thread only
        self._thread = gevent.threadpool.ThreadPool(1)
        self._failing = False
        self._loop = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:                     # until close(); one bounded pass per interval
            gevent.sleep(SQLITE_CHECKPOINT_INTERVAL)
            try:
                error = self._thread.spawn(self._checkpoint).get(timeout=SQLITE_CALL_TIMEOUT)
            except gevent.Timeout:
                error = f"no answer within {SQLITE_CALL_TIMEOUT:g}s"
            if error and not self._failing:     # logged once per spell of failures
                log.warning("WAL checkpoint of %s failed (the writer checkpoints past %d pages "
                            "instead): %s", self.path, SQLITE_AUTOCHECKPOINT_PAGES, error)
            self._failing = bool(error)

    def _checkpoint(self) -> str | None:
        # Errors come back as text: gevent would print a traceback for one raised here.
        try:
            if self._conn is None:
                if not os.path.exists(self.path):
                    return None         # not created yet (the schema check makes it)
                self._conn = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
                                             check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            return None
        except sqlite3.Error as e:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            return str(e) or type(e).__name__

    def close(self) -> None:
        self._loop.kill(block=True, timeout=1.0)

        def close_connection():
            if self._conn is not None:
                self._conn.close()
        try:
            self._thread.spawn(close_connection).get(timeout=SQLITE_CALL_TIMEOUT)
        finally:
            self._thread.kill()


def open_engine(url: URL, pool_size: int = 10,
                statement_timeout_ms: int = PG_STATEMENT_TIMEOUT_MS) -> Engine:
    """The engine of a service's database (also the admin tool's, which turns
    PostgreSQL's statement timeout off with 0: a migration may take long)."""
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=PG_POOL_TIMEOUT,
        pool_pre_ping=True,        # a restarted server must not cost one failed request
        pool_recycle=1800,
        connect_args=_pg_connect_args(url, statement_timeout_ms),
    )


def make_sqlite_directory(url: URL) -> None:
    """Create the directory of an SQLite file (an OSError if it cannot be)."""
    path = url.database
    if url.get_backend_name() == "sqlite" and path and path != ":memory:" and not path.startswith("file:"):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def _sqlite_engine(url: URL) -> Engine:
    # One connection, shared across threads (StaticPool, check_same_thread
    # off) but only ever used by one thread at a time (a service's worker);
    # StaticPool takes no locks, so monkey-patched (greenlet) locks never run
    # on that thread.
    engine = create_engine(
        url,
        poolclass=StaticPool,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy's "begin" event open transactions, not pysqlite's
        # lazy BEGIN (which starts a transaction only at the first write).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        for pragma in SQLITE_PRAGMAS:
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection):
        # IMMEDIATE takes the write lock up front: a read-then-write
        # transaction can never fail half-way because another process wrote
        # (and a schema check or migration holds off every other writer).
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


_UNAVAILABLE = (exc.OperationalError, exc.InterfaceError, exc.InternalError, exc.TimeoutError)


def _pg_connect_args(url: URL, statement_timeout_ms: int) -> dict[str, Any]:
    args: dict[str, Any] = {"connect_timeout": PG_CONNECT_TIMEOUT}
    if "options" not in url.query:
        args["options"] = f"-c statement_timeout={statement_timeout_ms}"
    return args


# SQLite result codes (sqlite3 errors carry sqlite_errorname) and PostgreSQL SQLSTATEs
_LOCKED = {"SQLITE_BUSY", "SQLITE_LOCKED", "55P03"}       # 55P03 lock_not_available
_FULL = {"SQLITE_FULL", "53100", "53400"}                  # 53100 disk_full, 53400 config limit


def _reason(e: Exception) -> str:
    orig = getattr(e, "orig", None)
    code = getattr(orig, "sqlite_errorname", None) or getattr(orig, "sqlstate", None) or ""
    if code in _LOCKED or code.startswith(("SQLITE_BUSY_", "SQLITE_LOCKED_")):
        return "locked"
    if code in _FULL:
        return "full"
    return "unavailable"


def _describe(e: Exception) -> str:
    orig = getattr(e, "orig", None)
    text = str(orig if orig is not None else e).strip()
    return text.splitlines()[0] if text else type(e).__name__
