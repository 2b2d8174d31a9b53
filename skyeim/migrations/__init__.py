"""Versioned schema migrations (Alembic) of the Message, Friend and Auth stores.

Each store has its own history of revisions in ``skyeim/migrations/<store>/``
and its own version table, ``alembic_version_<store>``, so that the three
stores may share one PostgreSQL database (the cluster layout does). Revision
``0001`` of each is the schema that releases before migrations made with
``create_all``; its script keeps those tables in a ``schema()`` of its own,
frozen, not imported from the models (a revision must make the same schema
whatever the models become), and an unversioned database is checked against
it before it is recorded as 0001.

A service calls ``prepare`` when it opens its database; it never changes a
schema that holds data:

* an empty database (none of the store's tables) gets the schema: every
  revision from the first, so a first start needs no extra command;
* a database made by ``create_all`` (no version table) whose tables are the
  first revision's is recorded as that revision ("stamped"); tables of that
  schema that it lacks are created first, as ``create_all`` did;
* a database at this release's revision is used as it is;
* anything else is refused with a ``SchemaRefusal`` whose one line names the
  remedy: an older revision needs ``python -m skyeim.admin migrate`` (after a
  backup), a newer one the release that made it, and tables that match no
  revision a person.

``migrate`` (the admin tool) moves a database to a given revision. Both take
the store's lock first, inside the caller's transaction: a PostgreSQL advisory
lock, or SQLite's write lock (the services' engines begin every transaction
IMMEDIATE), so that processes starting at once never race.

This package only knows store names and revision scripts; the tables'
definitions come from the stores (the caller passes a store's MetaData where
models are compared).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa

# Alembic announces its plugins and dialect at INFO on import and on every
# run; a service checks its schema at every start. (Set before the imports.)
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.autogenerate import compare_metadata  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402

log = logging.getLogger(__name__)

STORES = ("message", "friend", "auth")
BASELINE = "0001"                  # each store's first revision: the create_all schema
LOCK_KEY = 0x536B7965              # "Skye": PostgreSQL advisory lock class; the store picks the object
LOCK_TIMEOUT_MS = 60_000           # wait at most this long for another process's migration
ADMIN_COMMAND = "python -m skyeim.admin"
DOCS = "docs/operations.md#upgrades"
_HERE = Path(__file__).resolve().parent


class SchemaRefusal(Exception):
    """The database's schema is not one this release may use or fix by itself.

    ``line(config_path)`` is the one line a person reads: where, what, and the
    command to run (naming ``config_path`` when the caller knows it)."""

    def __init__(self, store: str, where: str, problem: str, remedy: str):
        super().__init__(f"{where}: {problem}")
        self.store, self.where, self.problem, self.remedy = store, where, problem, remedy

    def line(self, config_path: str | None = None) -> str:
        config = config_path or f"<the {self.store} service's YAML file>"
        head = f"{config_path}: " if config_path else ""
        return f"{head}{self.where} {self.problem}: {self.remedy.format(config=config)}"


class SchemaExit(SystemExit):
    """A SchemaRefusal at a service's start: it ends the program with its one
    line (Python prints a SystemExit's text, no traceback). ``refusals_name``
    lets the service's main put the config file in it."""

    def __init__(self, refusal: SchemaRefusal):
        super().__init__(f"error: {refusal.line()}")
        self.refusal = refusal


@contextlib.contextmanager
def refusals_name(config_path: str) -> Iterator[None]:
    """Around a service's create_app: a schema refusal names ``config_path``."""
    try:
        yield
    except SchemaExit as e:
        raise SystemExit(f"error: {e.refusal.line(config_path)}") from None


@dataclass(frozen=True)
class State:
    store: str
    current: str | None            # the recorded revision; None: no version table (or empty)
    head: str                      # what this release needs
    kind: str                      # empty | unversioned | current | outdated | newer


def version_table(store: str) -> str:
    return f"alembic_version_{store}"


def alembic_config(store: str, connection: sa.Connection | None = None,
                   metadata: sa.MetaData | None = None) -> Config:
    """The Alembic configuration of ``store`` (no ini file): its scripts, and
    for env.py the connection to run on and the models to compare with."""
    if store not in STORES:
        raise ValueError(f"unknown store {store!r} (known: {', '.join(STORES)})")
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE).replace("%", "%%"))
    cfg.set_main_option("version_locations", str(_HERE / store).replace("%", "%%"))
    cfg.set_main_option("path_separator", "newline")
    cfg.attributes.update(store=store, connection=connection, target_metadata=metadata)
    return cfg


@functools.cache
def scripts(store: str) -> ScriptDirectory:
    """The store's revision scripts (read once: they do not change while a program runs)."""
    return ScriptDirectory.from_config(alembic_config(store))


def head(store: str) -> str:
    heads = scripts(store).get_heads()
    assert len(heads) == 1, f"{store}: several heads {heads}: merge them"   # a packaging bug
    return heads[0]


def revisions(store: str) -> list[str]:
    """The store's revisions, oldest first."""
    return [r.revision for r in reversed(list(scripts(store).walk_revisions()))]


def baseline_schema(store: str) -> sa.MetaData:
    """The first revision's tables, frozen in its script."""
    return scripts(store).get_revision(BASELINE).module.schema()


def store_tables(store: str, metadata: sa.MetaData | None = None) -> set[str]:
    """The tables that belong to ``store`` (others may share its database)."""
    return set(baseline_schema(store).tables) | set(metadata.tables if metadata is not None else ())


def include_name(tables: set[str]):
    """An Alembic include_name filter: only ``tables`` (and their indexes)."""
    def include(name, type_, parent_names) -> bool:
        return type_ != "table" or name in tables
    return include


def current(conn: sa.Connection, store: str) -> str | None:
    if not sa.inspect(conn).has_table(version_table(store)):
        return None
    return MigrationContext.configure(conn, opts={"version_table": version_table(store)}).get_current_revision()


def state(conn: sa.Connection, store: str) -> State:
    """Where the database stands for ``store``; reads only."""
    cur, need = current(conn, store), head(store)
    if cur is None:
        present = store_tables(store) & set(sa.inspect(conn).get_table_names())
        return State(store, None, need, "unversioned" if present else "empty")
    if cur == need:
        kind = "current"
    elif cur in revisions(store):
        kind = "outdated"
    else:
        kind = "newer"
    return State(store, cur, need, kind)


def prepare(conn: sa.Connection, store: str, where: str) -> str | None:
    """What a service does at start (see the module's docstring), in the
    caller's transaction; returns what it changed ("created", "stamped") or
    None. Raises SchemaRefusal for a database it must not touch."""
    lock(conn, store)
    st = state(conn, store)
    if st.kind == "empty":
        _run(command.upgrade, conn, store, "head")
        return "created"
    changed = None
    if st.kind == "unversioned":
        _stamp_baseline(conn, store, where)
        st, changed = state(conn, store), "stamped"
    if st.kind == "outdated":
        raise SchemaRefusal(store, where, f"is at schema {st.current} of the {store} store, "
                                          f"this release needs {st.head}",
                            f"back it up, then run {ADMIN_COMMAND} migrate -f {{config}}")
    if st.kind == "newer":
        raise _newer(st, where)
    return changed


def migrate(conn: sa.Connection, store: str, where: str, target: str = "head") -> tuple[str | None, str, bool]:
    """Move ``store`` to ``target`` (a revision of this release, up or down) in
    the caller's transaction. Returns the revision it was at (None: empty), the
    one it is at now, and whether it was a create_all database, recorded as
    the first revision before it moved."""
    lock(conn, store)
    need = head(store) if target == "head" else target
    if need not in revisions(store):
        raise ValueError(f"{store}: no revision {target!r} (known: {', '.join(revisions(store))})")
    st = state(conn, store)
    if st.kind == "newer":
        raise _newer(st, where)
    stamped = st.kind == "unversioned"
    if stamped:
        _stamp_baseline(conn, store, where)
    before = current(conn, store)
    if before is None or revisions(store).index(need) > revisions(store).index(before):
        _run(command.upgrade, conn, store, need)
    elif need != before:
        _run(command.downgrade, conn, store, need)
    return before, need, stamped


def differences(conn: sa.Connection, store: str, metadata: sa.MetaData) -> list:
    """Alembic's differences between the database and ``metadata`` (the
    store's models), limited to the store's tables: [] when they agree."""
    ctx = MigrationContext.configure(conn, opts={
        "compare_type": True, "include_name": include_name(store_tables(store, metadata))})
    return compare_metadata(ctx, metadata)


def lock(conn: sa.Connection, store: str) -> None:
    """Hold the store's schema lock until the transaction ends. PostgreSQL: an
    advisory lock (bounded wait). SQLite: the engine's BEGIN IMMEDIATE holds
    the database's write lock already."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT set_config('lock_timeout', :ms, true)"),
                     {"ms": str(LOCK_TIMEOUT_MS)})
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:cls, :obj)"),
                     {"cls": LOCK_KEY, "obj": zlib.crc32(store.encode()) & 0x7FFFFFFF})


def describe(url: sa.URL | str) -> str:
    """Where a database is, for a person: the SQLite file, or the URL with its password hidden."""
    url = sa.make_url(url)
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    return url.render_as_string(hide_password=True)


# -- internals ---------------------------------------------------------------------

def _run(fn, conn: sa.Connection, store: str, *args) -> None:
    fn(alembic_config(store, conn), *args)


def baseline_differences(conn: sa.Connection, store: str) -> tuple[list[sa.Table], list]:
    """How an unversioned database differs from the first revision: the
    tables it lacks, and every other difference (Alembic's)."""
    schema = baseline_schema(store)
    ctx = MigrationContext.configure(conn, opts={"compare_type": True,
                                                 "include_name": include_name(set(schema.tables))})
    diffs = compare_metadata(ctx, schema)
    gone = {d[1].name for d in diffs if isinstance(d, tuple) and d[0] == "add_table"}
    others = [d for d in diffs if not (isinstance(d, tuple) and (
        d[0] == "add_table" or (d[0] == "add_index" and d[1].table.name in gone)))]
    # the schema's own tables: those in Alembic's differences come without their indexes
    return [t for name, t in schema.tables.items() if name in gone], others


def _stamp_baseline(conn: sa.Connection, store: str, where: str) -> None:
    """Record a create_all database as the first revision, once its tables are
    that revision's; tables of that schema that it lacks are created first
    (what create_all did for earlier releases). Anything else is refused."""
    missing, others = baseline_differences(conn, store)
    if others:
        raise SchemaRefusal(store, where, f"has {store} tables without a version table that are "
                                          f"not schema {BASELINE} ({summary(others)})",
                            f"not touching it; see {DOCS}")
    if missing:
        for table in missing:
            table.create(conn)              # with its indexes
        log.info("%s: created the %s store's missing tables %s", where, store,
                 ", ".join(t.name for t in missing))
    _run(command.stamp, conn, store, BASELINE)


def _newer(st: State, where: str) -> SchemaRefusal:
    return SchemaRefusal(st.store, where, f"is at schema {st.current} of the {st.store} store, which "
                                          f"this release does not know (it knows up to {st.head})",
                         "run the release that wrote it, or restore a backup of this release's "
                         f"schema; see {DOCS}")


def summary(diffs: list, limit: int = 3) -> str:
    """A few of Alembic's differences in words, e.g. 'remove_column messages.x'."""
    return ", ".join(_in_words(d) for d in diffs[:limit]) + (
        f" and {len(diffs) - limit} more" if len(diffs) > limit else "")


def _in_words(diff) -> str:
    op, *rest = diff[0] if isinstance(diff, list) else diff   # column changes come as lists
    if op in ("add_column", "remove_column"):
        return f"{op} {rest[1]}.{rest[2].name}"
    if op.startswith("modify_"):
        return f"{op} {rest[1]}.{rest[2]}"
    return f"{op} {getattr(rest[0], 'name', rest[0])}"
