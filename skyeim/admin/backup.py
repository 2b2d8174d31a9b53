"""``backup DIR`` and ``restore DIR``: a consistent copy of the three stores
while the system runs, and its return into empty databases.

A backup directory holds one file per store and ``manifest.json`` (written
last: a directory without it is not a backup):

* SQLite: ``<store>.db``, made with SQLite's online backup API, which copies
  one read snapshot of the database while the service goes on writing (WAL),
  then turned into a single self-contained file (journal_mode DELETE) and
  checked (``PRAGMA quick_check``).
* PostgreSQL: ``<store>.pgdump``, ``pg_dump --format=custom`` of the store's
  tables. Stores that share one database are dumped from one exported
  snapshot (``pg_export_snapshot``), so they are consistent with each other.
  pg_dump must be at least the server's major version (checked first).

The stores are copied in the order message, friend, auth: what a later copy
holds is never older than what an earlier one refers to (users and groups are
never deleted), so every message's sender and group exist in the backup.

The manifest records the time, this release's version, and per store the
source, the schema revision, the row count of every table and the file's
SHA-256; restore checks all of them before it writes anything, and the row
counts again after.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.pool import NullPool
from psycopg.conninfo import make_conninfo

from skyeim import __version__, migrations
from skyeim.admin.stores import AdminError, Store, first_line, models
from skyeim.db import make_sqlite_directory

Say = Callable[[str], None]
FORMAT = "skyeim-backup/1"
MANIFEST = "manifest.json"
SQLITE_BUSY_TIMEOUT = 30.0      # s to wait for a writer's lock on an SQLite file
PG_CONNECT_TIMEOUT = 10         # s, for pg_dump and pg_restore
HASH_CHUNK = 1 << 20


def backup(stores: list[Store], out_dir: str, say: Say, timeout: float) -> dict:
    """Copy every store into ``out_dir`` (new or empty); returns the manifest."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AdminError(f"{out_dir}: not an empty directory: a backup goes into a new one")
    out.mkdir(parents=True, exist_ok=True)
    started = _now()
    entries: dict[str, dict] = {}
    for store in stores:
        if store.name in entries:
            continue                      # dumped with a store that shares its database
        if store.is_sqlite:
            made = {store.name: _backup_sqlite(store, out)}
        else:
            made = _backup_postgresql([s for s in stores if _database(s) == _database(store)],
                                      out, timeout)
        for name, entry in made.items():
            entry["bytes"], entry["sha256"] = _digest(out / entry["file"])
            say(f"{name:8} {entry['source']}: {entry['file']}, schema {entry['revision']}, "
                f"{_rows_in_words(entry['rows'])}")
        entries.update(made)
    manifest = {"format": FORMAT, "version": __version__, "startedAt": started,
                "finishedAt": _now(), "stores": entries}
    _write_atomically(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    say(f"backup complete: {out / MANIFEST}")
    return manifest


def restore(stores: list[Store], in_dir: str, force: bool, say: Say, timeout: float) -> None:
    """Put the backup in ``in_dir`` into the stores' databases, which must hold
    no rows of their store unless ``force``."""
    source = Path(in_dir)
    manifest = read_manifest(source)
    plan = []
    for store in stores:
        entry = manifest["stores"].get(store.name)
        if entry is None:
            raise AdminError(f"{in_dir}: the backup has no {store.name} store")
        backend = "sqlite" if store.is_sqlite else "postgresql"
        if entry["backend"] != backend:
            raise AdminError(f"{in_dir}: the backup's {store.name} store is {entry['backend']}, "
                             f"{store.where} is {backend}: restore into the same kind of database")
        if entry["revision"] is not None and entry["revision"] not in migrations.revisions(store.name):
            raise AdminError(f"{in_dir}: the backup's {store.name} store is at schema "
                             f"{entry['revision']}, which this release does not know: restore it "
                             f"with the release that made it")
        rows = _rows_held(store)
        if rows and not force:
            raise AdminError(f"{store.where} holds {_rows_in_words(rows)} of the {store.name} store: "
                             f"restore refuses to overwrite it (stop the services and add --force, "
                             f"or restore into an empty database)")
        plan.append((store, entry, rows is not None))
    for store, entry, has_tables in plan:
        if store.is_sqlite:
            _restore_sqlite(store, source / entry["file"])
        else:
            _restore_postgresql(store, source / entry["file"], has_tables, timeout)
        got = _contents_of(store.engine(), store.name)[1]
        if got != entry["rows"]:
            raise AdminError(f"{store.where}: restored {_rows_in_words(got)}, the backup has "
                             f"{_rows_in_words(entry['rows'])}")
        need = migrations.head(store.name)
        after = "" if entry["revision"] == need else (
            f"; this release needs {need}: run {migrations.ADMIN_COMMAND} migrate -f {store.config_path}")
        say(f"{store.name:8} {store.where}: restored schema {entry['revision']}, "
            f"{_rows_in_words(entry['rows'])}{after}")


def read_manifest(source: Path) -> dict:
    """The backup's manifest, once every file it names is there with its checksum."""
    try:
        manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except OSError as e:
        raise AdminError(f"{source / MANIFEST}: cannot read: {e.strerror} (not a finished backup?)") from None
    except ValueError as e:
        raise AdminError(f"{source / MANIFEST}: not JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise AdminError(f"{source / MANIFEST}: not a {FORMAT} manifest")
    for name, entry in manifest["stores"].items():
        path = source / entry["file"]
        if not path.is_file():
            raise AdminError(f"{path}: missing (the {name} store of this backup)")
        size, digest = _digest(path)
        if (size, digest) != (entry["bytes"], entry["sha256"]):
            raise AdminError(f"{path}: does not match its checksum in the manifest (damaged?)")
    return manifest


# -- SQLite ---------------------------------------------------------------------------

def _backup_sqlite(store: Store, out: Path) -> dict:
    path = store.sqlite_path
    if not os.path.isfile(path):
        raise AdminError(f"{path}: no such database (the {store.name} store of {store.config_path})")
    dest = out / f"{store.name}.db"
    src = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)                  # all pages in one step: one read snapshot
            dst.execute("PRAGMA journal_mode=DELETE")
            verdict = dst.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            dst.close()
    finally:
        src.close()
    if verdict != "ok":
        raise AdminError(f"{dest}: the copy of {path} fails SQLite's quick_check: {verdict}")
    # a plain engine: the services' would turn the copy back to WAL
    revision, rows = _contents_of(sa.create_engine(f"sqlite:///{dest}", poolclass=NullPool), store.name)
    return {"backend": "sqlite", "file": dest.name, "source": store.where,
            "revision": revision, "rows": rows}


def _restore_sqlite(store: Store, backup_file: Path) -> None:
    make_sqlite_directory(store.url)
    src = sqlite3.connect(f"file:{backup_file}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(store.sqlite_path, timeout=SQLITE_BUSY_TIMEOUT)
        try:
            src.backup(dst)                  # replaces every page, through SQLite's locks
        finally:
            dst.close()
    finally:
        src.close()


# -- PostgreSQL -------------------------------------------------------------------------

def _backup_postgresql(group: list[Store], out: Path, timeout: float) -> dict[str, dict]:
    """Dump the stores of one database from one snapshot."""
    entries = {}
    engine = group[0].engine()
    try:
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
            _check_client_version(conn, "pg_dump")
            snapshot = conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
            for store in group:
                revision, rows = _contents(conn, store.name)
                if rows is None:
                    raise AdminError(f"{store.where}: no tables of the {store.name} store to back up")
                dest = out / f"{store.name}.pgdump"
                tables = list(rows) + ([migrations.version_table(store.name)] if revision else [])
                _pg_tool(store, ["pg_dump", "--format=custom", f"--snapshot={snapshot}",
                                 f"--file={dest}", *[f"--table={t}" for t in tables]], timeout)
                entries[store.name] = {"backend": "postgresql", "file": dest.name,
                                       "source": store.where, "revision": revision, "rows": rows}
            conn.rollback()
    finally:
        engine.dispose()
    return entries


def _restore_postgresql(store: Store, backup_file: Path, has_tables: bool, timeout: float) -> None:
    engine = store.engine()
    try:
        with engine.begin() as conn:
            _check_client_version(conn, "pg_restore")
            if has_tables:      # empty, or --force: the backup's tables replace them
                present = set(sa.inspect(conn).get_table_names())
                for table in _store_tables(store.name) + [migrations.version_table(store.name)]:
                    if table in present:
                        conn.execute(sa.text(f'DROP TABLE "{table}" CASCADE'))
    finally:
        engine.dispose()
    _pg_tool(store, ["pg_restore", "--no-owner", "--no-privileges", "--single-transaction",
                     "--exit-on-error", str(backup_file)], timeout)


def _pg_tool(store: Store, argv: list[str], timeout: float) -> None:
    """Run pg_dump or pg_restore on the store's database (the password in the
    environment, not on the command line)."""
    url = store.url
    conninfo = make_conninfo(host=url.host, port=url.port, user=url.username, dbname=url.database,
                             **{k: v for k, v in url.query.items() if isinstance(v, str)})
    env = {**os.environ, "PGCONNECT_TIMEOUT": str(PG_CONNECT_TIMEOUT)}
    if url.password:
        env["PGPASSWORD"] = url.password
    try:
        done = subprocess.run([*argv, f"--dbname={conninfo}"], env=env, capture_output=True,
                              text=True, timeout=timeout)
    except FileNotFoundError:
        raise AdminError(f"{argv[0]} not found: install PostgreSQL's client tools "
                         f"(Debian: postgresql-client, the server's major version)") from None
    except subprocess.TimeoutExpired:
        raise AdminError(f"{argv[0]} on {store.where} took over {timeout:g}s (see --timeout)") from None
    if done.returncode != 0:
        raise AdminError(f"{argv[0]} on {store.where} failed: {first_line(done.stderr)}")


def _check_client_version(conn: sa.Connection, tool: str) -> None:
    server = int(conn.execute(sa.text("SHOW server_version_num")).scalar_one()) // 10000
    path = shutil.which(tool)
    if path is None:
        raise AdminError(f"{tool} not found: install PostgreSQL's client tools "
                         f"(Debian: postgresql-client-{server})")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    found = re.search(r"(\d+)(?:\.\d+)?", out)
    client = int(found.group(1)) if found else 0
    if client < server:
        raise AdminError(f"{tool} is version {client}, the server {server}: {tool} must be at least "
                         f"the server's major version (Debian: postgresql-client-{server})")


# -- both -----------------------------------------------------------------------------

def _contents_of(engine: sa.Engine, store: str) -> tuple[str | None, dict[str, int] | None]:
    """_contents over a connection of its own (``engine`` is disposed)."""
    try:
        with engine.connect() as conn:
            found = _contents(conn, store)
            conn.rollback()
            return found
    finally:
        engine.dispose()


def _contents(conn: sa.Connection, store: str) -> tuple[str | None, dict[str, int] | None]:
    """The store's revision and each of its tables' row count (None: no tables)."""
    present = set(sa.inspect(conn).get_table_names())
    tables = [t for t in _store_tables(store) if t in present]
    if not tables:
        return None, None
    rows = {t: conn.execute(sa.select(sa.func.count()).select_from(sa.table(t))).scalar_one()
            for t in tables}
    return migrations.current(conn, store), rows


def _rows_held(store: Store) -> dict[str, int] | None:
    """The store's tables that hold rows in the target, with their counts ({}:
    its tables are empty); None when it has none of them (or no file)."""
    if store.is_sqlite and not os.path.exists(store.sqlite_path):
        return None
    rows = _contents_of(store.engine(), store.name)[1]
    return None if rows is None else {t: n for t, n in rows.items() if n}


def _store_tables(store: str) -> list[str]:
    return sorted(migrations.store_tables(store, models(store)))


def _database(store: Store) -> tuple:
    url = store.url
    return url.get_backend_name(), url.host, url.port, url.username, url.database


def _digest(path: Path) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _now() -> str:
    """ISO 8601 in UTC, milliseconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _rows_in_words(rows: dict[str, Any] | None) -> str:
    if not rows:
        return "no rows"
    return ", ".join(f"{n} {t}" for t, n in rows.items())
