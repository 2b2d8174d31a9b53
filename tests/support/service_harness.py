"""Start a real SkyeIM service process for a test module, on SQLite or PostgreSQL.

The services are tested as they run in production: ``python -m skyeim.<name>
-f <yaml>`` on a free port, spoken to over HTTP.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import requests
import sqlalchemy as sa
import yaml

from harness import free_port, reap

REPO = Path(__file__).resolve().parents[2]
POSTGRES_URL = os.environ.get("SKYEIM_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REQUIRE_SERVICES = os.environ.get("SKYEIM_REQUIRE_SERVICES") == "1"
INTERNAL_SECRET = "test-internal-secret"
START_TIMEOUT = 60.0   # s for a service to answer /healthz (generous: a loaded machine)
STOP_TIMEOUT = 10.0    # s for a service to exit after SIGTERM


class ServiceProcess:
    """One running service; ``url`` is its base URL, ``session`` sends the secret.

    It runs in ``cwd`` (default: the repository root).
    """

    def __init__(self, module: str, config: dict, workdir: Path, cwd: Path | None = None,
                 wait_healthy: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / f"{config['Name']}-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump({**config, "Host": "127.0.0.1", "Port": self.port}))
        self.log_path = workdir / f"{config['Name']}-{self.port}.log"
        self._log = open(self.log_path, "wb")
        # an empty InternalSecret: the service uses the generated one in this file
        self.secret_file = workdir / "internal-secret"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "-f", str(self.config_path)],
            cwd=cwd or REPO, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO), "SKYEIM_INTERNAL_SECRET_FILE": str(self.secret_file)})
        self.session = requests.Session()
        self.session.headers["X-Internal-Secret"] = config.get("InternalSecret", "")
        if wait_healthy:
            self._wait_healthy()
            if not config.get("InternalSecret"):    # the generated one, made by now
                self.session.headers["X-Internal-Secret"] = self.secret_file.read_text().strip()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"service not healthy within {START_TIMEOUT:g}s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> int:
        """SIGTERM, then the exit code (killing it if it does not stop in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            reap(self.proc, STOP_TIMEOUT)
        return self.proc.returncode

    def stop(self) -> int:
        """Terminate, close the session and the log; the exit code."""
        code = self.terminate()
        self.session.close()
        self._log.close()
        return code


@contextlib.contextmanager
def database_url(backend: str, workdir: Path, name: str) -> Iterator[str]:
    """A fresh, empty database for ``backend``; a PostgreSQL one is dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / (name + '.db')}"
        return
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT",
                             connect_args={"connect_timeout": 3})
    db_name = f"skyeim_test_{name}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{db_name}"')
    except sa.exc.OperationalError as e:
        admin.dispose()
        reason = f"PostgreSQL not reachable at {POSTGRES_URL}: {str(e.orig).strip().splitlines()[0]}"
        if REQUIRE_SERVICES:
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield sa.make_url(POSTGRES_URL).set(database=db_name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        admin.dispose()


@contextlib.contextmanager
def running_service(module: str, config: dict, workdir: Path) -> Iterator[ServiceProcess]:
    service = ServiceProcess(module, config, workdir)
    try:
        yield service
    finally:
        service.stop()
