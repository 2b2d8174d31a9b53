"""The shipped supervisord.conf and etc/*.yaml, run as a VM's supervisord would.

``ShippedLayout(tmp)`` copies supervisord.conf and etc/{ws,message,friend,auth}.yaml
byte for byte into ``tmp``, except the port numbers of the YAML files (10300..10303,
and the admin ports 10400..10403 when present), which become free ones; the
code (skyeim/, wsserver.py) and the venv are symlinks to this checkout. The
programs then run from ``tmp`` with ``%(here)s`` = ``tmp``: their data/ and
data/logs/ are there. ``start(prefix)`` runs supervisord in the foreground under
``prefix`` (e.g. ``prlimit --nofile=1024:20000 --``) with no SKYEIM_* variable
but the ones given: the secrets are empty unless a test sets them.

Also: ``storm()`` (tests/support/storm_client.py: N handshakes at once, from a
separate process that raises its own open-files limit) and
``raise_own_fd_limit()`` for a test that opens many sockets itself.
"""
from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import requests

from harness import REPO, free_port, reap, wait_until

PROGRAMS = ("message", "friend", "auth", "gateway")
SHIPPED_PORTS = {"ws": 10300, "message": 10301, "friend": 10302, "auth": 10303}
SHIPPED_ADMIN_PORTS = {"ws": 10400, "message": 10401, "friend": 10402, "auth": 10403}
START_TIMEOUT = 60.0


def raise_own_fd_limit() -> int:
    """This process's soft open-files limit up to its hard one (returns it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class ShippedLayout:
    def __init__(self, tmp: Path, env: dict[str, str] | None = None):
        self.root = Path(tmp)
        (self.root / "etc").mkdir(parents=True, exist_ok=True)
        (self.root / "data" / "logs").mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in SHIPPED_PORTS}
        self.admin_ports = {name: free_port() for name in SHIPPED_ADMIN_PORTS}
        swap = {str(SHIPPED_PORTS[n]): str(self.ports[n]) for n in SHIPPED_PORTS}
        swap.update({str(SHIPPED_ADMIN_PORTS[n]): str(self.admin_ports[n]) for n in SHIPPED_ADMIN_PORTS})
        pattern = re.compile(r"\b(" + "|".join(swap) + r")\b")
        for name in ("ws", "message", "friend", "auth"):
            text = (REPO / "etc" / f"{name}.yaml").read_text()
            (self.root / "etc" / f"{name}.yaml").write_text(pattern.sub(lambda m: swap[m.group(1)], text))
        self.conf = self.root / "supervisord.conf"
        self.conf.write_text((REPO / "supervisord.conf").read_text())
        for name in ("skyeim", "wsserver.py"):
            (self.root / name).symlink_to(REPO / name)
        (self.root / ".venv").symlink_to(Path(sys.prefix))     # the venv running these tests
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SKYEIM_")}
        self.env.update(env or {})
        self.env["SKYEIM_PORT"] = str(self.ports["ws"])      # the gateway's port (etc/ws.yaml)
        self.url = f"http://127.0.0.1:{self.ports['ws']}"
        self.proc: subprocess.Popen | None = None

    @property
    def logs(self) -> Path:
        return self.root / "data" / "logs"

    def start(self, prefix: list[str] | None = None, timeout: float = START_TIMEOUT) -> "ShippedLayout":
        supervisord = self.root / ".venv" / "bin" / "supervisord"
        out = open(self.root / "supervisord.out", "wb")
        self.proc = subprocess.Popen([*(prefix or []), str(supervisord), "-n", "-c", str(self.conf)],
                                     cwd=self.root, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        out.close()

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisord exited {self.proc.returncode}: {self.output()}")
            try:
                return requests.get(self.url + "/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                return False
        wait_until(ready, timeout=timeout, interval=0.3, message="the gateway is not ready")
        return self

    def output(self) -> str:
        return (self.root / "supervisord.out").read_text(errors="replace")[-3000:]

    def stop(self, timeout: float = 45.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)       # supervisord stops every program first
        return reap(self.proc, timeout)

    def log_text(self, program: str) -> str:
        path = self.logs / f"{program}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def all_logs(self) -> dict[str, str]:
        return {p.name: p.read_text(errors="replace") for p in self.logs.glob("*.log")}

    def program_pid(self, program: str) -> int:
        """The pid of a program (from its own log is fragile: ask /proc for the child)."""
        for child in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split():
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if (program == "gateway" and "wsserver.py" in cmd) or f"skyeim.{program} " in cmd:
                return int(child)
        raise AssertionError(f"no {program} process under supervisord")

    def __enter__(self) -> "ShippedLayout":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def nofile_limits(pid: int) -> tuple[int, int]:
    """(soft, hard) open-files limit of a running process."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open-files line in /proc/{pid}/limits")


class Storm:
    """tests/support/storm_client.py: every handshake at once, the upgraded sockets
    held open until ``release()``. ``result``: outcomes by kind, answer times."""

    def __init__(self, host: str, port: int, tokens: list[str], tokens_file: Path):
        tokens_file.write_text("\n".join(tokens))
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "support" / "storm_client.py"), host, str(port),
             str(tokens_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
        self.result: dict | None = None

    def wait(self) -> dict:
        line = self.proc.stdout.readline()        # bounded: the client gives up after ~90 s
        assert line, "the storm client printed nothing"
        self.result = json.loads(line)
        return self.result

    def release(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("done\n")
                self.proc.stdin.flush()
            except OSError:
                pass
        reap(self.proc, 30)


def tracebacks(logs: dict[str, str]) -> dict[str, int]:
    """Log file -> number of 'Traceback' lines, for the files that have any."""
    return {name: text.count("Traceback") for name, text in logs.items() if "Traceback" in text}

