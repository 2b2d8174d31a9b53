"""``status``, ``migrate`` and ``check``: the stores' schemas (skyeim.migrations),
and ``revision`` for a developer who changed a table."""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Callable, Iterator

import sqlalchemy as sa
from alembic import command

from skyeim import migrations
from skyeim.admin.stores import AdminError, Store, models
from skyeim.db import make_sqlite_directory

Say = Callable[[str], None]
READ_TIMEOUT_MS = 60_000        # PostgreSQL statement timeout of status and check


def status(stores: list[Store], say: Say) -> bool:
    """One line per store: its revision, this release's, and what starting a
    service on it would do. True when every store can be served as it is."""
    ready = True
    for store in stores:
        verdict, ok = _verdict(store)
        ready = ready and ok
        say(f"{store.name:8} {store.where}: {verdict}")
    return ready


def migrate(stores: list[Store], target: str, say: Say) -> None:
    """Move each store to this release's revision (or ``target`` for a single
    store), each in one transaction under the store's lock."""
    if target != "head" and len(stores) != 1:
        raise AdminError("--to names a revision of one store: give that store's file alone with -f")
    for store in stores:
        make_sqlite_directory(store.url)
        engine = store.engine()
        try:
            with engine.begin() as conn:
                before, after, stamped = migrations.migrate(conn, store.name, store.where, target)
        except migrations.SchemaRefusal as e:
            raise AdminError(e.line(store.config_path)) from None
        except ValueError as e:
            raise AdminError(str(e)) from None
        finally:
            engine.dispose()
        done = [f"recorded as {migrations.BASELINE} (made by an earlier release)"] if stamped else []
        if before != after:
            done.append(f"{before or 'empty'} -> {after}")
        say(f"{store.name:8} {store.where}: {', then '.join(done) or f'at {after} already'}")


def check(stores: list[Store], say: Say) -> bool:
    """Compare each database's tables with this release's models (what Alembic's
    ``check`` does): True when they agree."""
    agree = True
    for store in stores:
        with _connected(store) as conn:
            diffs = migrations.differences(conn, store.name, models(store.name))
        agree = agree and not diffs
        say(f"{store.name:8} {store.where}: "
            + ("matches this release's models" if not diffs else
               f"differs from this release's models: {migrations.summary(diffs, limit=20)}"))
    return agree


def revision(store: str, message: str, say: Say) -> None:
    """Write the store's next revision script, with the operations that make a
    database at the current head match the models (Alembic's autogenerate, on
    a scratch SQLite database). Review it: autogenerate misses renames."""
    with tempfile.TemporaryDirectory() as scratch:
        engine = Store(store, "", sa.make_url(f"sqlite:///{os.path.join(scratch, 'x.db')}")).engine()
        try:
            with engine.begin() as conn:
                migrations.migrate(conn, store, "scratch")
                number = f"{len(migrations.revisions(store)) + 1:04d}"
                script = command.revision(migrations.alembic_config(store, conn, models(store)),
                                          message=message, autogenerate=True, rev_id=number)
        finally:
            engine.dispose()
    say(f"wrote {script.path}" if script else "nothing written")


def _verdict(store: Store) -> tuple[str, bool]:
    if store.is_sqlite and not os.path.exists(store.sqlite_path):
        return "no database yet: created at the service's first start", True
    with _connected(store) as conn:
        st = migrations.state(conn, store.name)
        if st.kind == "empty":
            return f"no schema yet: schema {st.head} is created at the service's first start", True
        if st.kind == "current":
            return f"schema {st.current}, as this release needs", True
        if st.kind == "newer":
            return (f"schema {st.current}, which this release does not know (it knows up to "
                    f"{st.head}): run the release that wrote it"), False
        fix = f"run {migrations.ADMIN_COMMAND} migrate -f {store.config_path}"
        if st.kind == "outdated":
            return f"schema {st.current}, this release needs {st.head}: {fix}", False
        missing, others = migrations.baseline_differences(conn, store.name)
        if others:
            return (f"no version table, and tables that are not schema {migrations.BASELINE} "
                    f"({migrations.summary(others)}): not touched by this release"), False
        made = f"recorded as schema {migrations.BASELINE}" + (
            f" (its missing tables {', '.join(t.name for t in missing)} created)" if missing else "")
        if st.head == migrations.BASELINE:
            return f"made by an earlier release: {made} at the service's first start", True
        return f"made by an earlier release: {made}, then this release needs {st.head}: {fix}", False


@contextlib.contextmanager
def _connected(store: Store) -> Iterator[sa.Connection]:
    """A connection to the store's database that changes nothing (its transaction is rolled back)."""
    engine = store.engine(statement_timeout_ms=READ_TIMEOUT_MS)
    try:
        with engine.connect() as conn:
            yield conn
            conn.rollback()
    finally:
        engine.dispose()
