"""Helpers for the schema and backup tests: the admin tool as a user runs it,
services started at the same moment, a database's schema in words."""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa

from harness import REPO
from service_harness import INTERNAL_SECRET, ServiceProcess

ADMIN_TIMEOUT = 300.0     # s for one admin command (a backup under load included)
MODULES = {"message": "skyeim.message", "friend": "skyeim.friend", "auth": "skyeim.auth"}


def run_admin(*args: str, cwd: Path = REPO, timeout: float = ADMIN_TIMEOUT) -> subprocess.CompletedProcess:
    """``python -m skyeim.admin ARGS`` in ``cwd``; its exit code and output."""
    return subprocess.run([sys.executable, "-m", "skyeim.admin", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


def run_service_once(store: str, config_path: Path, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Start a service that is expected to refuse: its exit code and output."""
    return subprocess.run([sys.executable, "-m", MODULES[store], "-f", str(config_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def service_config(store: str, data_source: str) -> dict:
    cfg = {"Name": store, "DataSource": data_source, "InternalSecret": INTERNAL_SECRET}
    if store == "auth":
        cfg["AccessSecret"] = "schema-tests-secret-of-thirty-two-bytes!"
    return cfg


def start_at_once(stores: list[str], data_source: dict[str, str], workdir: Path,
                  expect_exit: set[str] = frozenset(), exit_timeout: float = 60.0) -> list[ServiceProcess]:
    """One service process per entry of ``stores`` (a store may repeat), all
    spawned at the same moment; returned once every one answers /healthz, or, for
    the stores of ``expect_exit`` (expected to refuse to start), has exited."""
    def start(store: str) -> ServiceProcess:
        refuses = store in expect_exit
        proc = ServiceProcess(MODULES[store], service_config(store, data_source[store]), workdir,
                              wait_healthy=not refuses)
        if refuses:
            proc.proc.wait(exit_timeout)
        return proc

    with ThreadPoolExecutor(len(stores)) as pool:
        futures = [pool.submit(start, s) for s in stores]
        return [f.result() for f in futures]


def sqlite_schema(path: Path) -> list[tuple]:
    """The DDL of an SQLite file (sqlite_master), without Alembic's version tables."""
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(
                "SELECT type, name, tbl_name, sql FROM sqlite_master "
                "WHERE tbl_name NOT LIKE 'alembic_version%' ORDER BY type, name")]
    finally:
        engine.dispose()


def postgresql_schema(url: str) -> list[str]:
    """``pg_dump --schema-only`` of a database, without Alembic's version tables
    and pg_dump's per-run lines, one statement per item."""
    u = sa.make_url(url)
    out = subprocess.run(["pg_dump", "--schema-only", "--no-owner", "--no-privileges",
                          "-h", u.host or "127.0.0.1", "-p", str(u.port or 5432),
                          "-U", u.username or "postgres", "-d", u.database],
                         capture_output=True, text=True, check=True, timeout=60,
                         env={**os.environ, "PGPASSWORD": u.password or ""}).stdout
    statements = [s.strip() for s in "\n".join(
        ln for ln in out.splitlines()
        if not ln.startswith(("--", "\\restrict", "\\unrestrict"))).split(";")]
    return sorted(s for s in statements if s and "alembic_version" not in s)
