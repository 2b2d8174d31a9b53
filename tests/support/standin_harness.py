"""Run the stand-in services of standins.py as real processes, and switch their faults.

    with running_standin("message", tmp_path, internal_secret="s") as svc:
        svc.url          # http://127.0.0.1:PORT
        svc.endpoint     # 127.0.0.1:PORT, for a ws.yaml Endpoints list
        svc.fail()       # every /v1/ call answers 500 ...
        svc.hang()       # ... or hangs (until heal(), at most hang_max seconds)
        svc.heal()
        svc.go_away()    # SIGKILL: connections refused
        svc.come_back()  # the same port and the same SQLite file again
        svc.requests()   # [(method, path, status), ...] it has answered so far

Storage is a SQLite file in ``workdir``, so what was stored survives go_away().
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import requests

from harness import free_port, reap

STANDINS = Path(__file__).resolve().parent / "standins.py"
START_TIMEOUT = 20.0      # s for /healthz to answer
STOP_TIMEOUT = 10.0


class StandIn:
    """One stand-in service process (``kind``: message, friend or auth)."""

    def __init__(self, kind: str, workdir: Path, *, internal_secret: str = "",
                 access_secret: str = "", access_expire: int = 3600, bugs: tuple[str, ...] = (),
                 hang_max: float = 60.0):
        self.kind = kind
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.endpoint = f"127.0.0.1:{self.port}"
        self.internal_secret = internal_secret
        name = f"standin-{kind}-{self.port}"
        self.db_path = self.workdir / f"{name}.db"
        self.control_path = self.workdir / f"{name}.control.json"
        self.log_path = self.workdir / f"{name}.log"
        self.argv = [sys.executable, str(STANDINS), kind, "--port", str(self.port),
                     "--db", str(self.db_path), "--control", str(self.control_path),
                     "--hang-max", str(hang_max)]
        if internal_secret:
            # one argument: a token_urlsafe secret may start with "-" (argparse: an option)
            self.argv += [f"--internal-secret={internal_secret}"]
        if kind == "auth":
            self.argv += [f"--access-secret={access_secret or 'standin-access-secret'}",
                          "--access-expire", str(access_expire)]
        for bug in bugs:
            self.argv += ["--bug", bug]
        self.session = requests.Session()
        if internal_secret:
            self.session.headers["X-Internal-Secret"] = internal_secret
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.heal()

    # -- the process -------------------------------------------------------------
    def start(self) -> "StandIn":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"stand-in {self.kind} exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"stand-in {self.kind} not healthy within {START_TIMEOUT:g}s:\n{self.log()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM (a graceful stop); the exit code."""
        return self._end(signal.SIGTERM)

    def go_away(self) -> None:
        """SIGKILL: gone without a goodbye; new connections are refused."""
        self._end(signal.SIGKILL)

    def come_back(self) -> "StandIn":
        """Start again on the same port, with the same stored data."""
        if self.running:
            raise RuntimeError(f"stand-in {self.kind} is still running")
        return self.start()

    def _end(self, sig: int) -> int | None:
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            code = reap(self.proc, STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def close(self) -> None:
        self.stop()
        self.session.close()

    # -- faults ------------------------------------------------------------------------
    def _switch(self, mode: str, paths: tuple[str, ...]) -> None:
        tmp = self.control_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"mode": mode, "paths": list(paths)}))
        os.replace(tmp, self.control_path)     # the service never reads half a file

    def fail(self, *paths: str) -> None:
        """Requests under ``paths`` (default: every /v1/ call) answer 500."""
        self._switch("fail", paths or ("/v1/",))

    def hang(self, *paths: str) -> None:
        """Requests under ``paths`` (default: every /v1/ call) hang until heal()."""
        self._switch("hang", paths or ("/v1/",))

    def heal(self) -> None:
        self._switch("ok", ())

    # -- what it saw ---------------------------------------------------------------------
    def log(self) -> str:
        if self._log is not None:
            self._log.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request answered so far, over all starts."""
        seen = []
        for line in self.log().splitlines():
            parts = line.split(" ")
            if len(parts) == 4 and parts[0] == "request" and parts[3].isdigit():
                seen.append((parts[1], parts[2], int(parts[3])))
        return seen


@contextlib.contextmanager
def running_standin(kind: str, workdir: Path, **kw) -> Iterator[StandIn]:
    """A started stand-in (see StandIn), stopped afterwards."""
    service = StandIn(kind, workdir, **kw).start()
    try:
        yield service
    finally:
        service.close()
