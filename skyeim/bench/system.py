"""The systems the benchmark drives.

- ``ManagedSystem``: SkyeIM started by the benchmark in a temporary directory on
  free ports, with its own SQLite databases (or a given DataSource), either
  ``standalone`` (one process: ``wsserver.py --standalone``) or the
  ``supervisord-layout`` (four processes: the Message, Friend and Auth services
  and the gateway, as supervisord.conf runs them).
- ``ExternalSystem``: a system that is already running on this machine
  (``--target http://127.0.0.1:PORT``); its secrets and service endpoints come
  from its ws.yaml.
- ``RelaySystem``: the bare relay baseline (skyeim.bench.relay).

Users are minted as JWTs with the system's AccessSecret (skyeim.tokens.issue,
in the load workers), friendships are seeded through the Friend service's
HTTP API and unread backlogs through the Message service's, both with the
InternalSecret. Every process is started with a raised RLIMIT_NOFILE.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import ipaddress
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import requests
import yaml

from skyeim.bench import procstat

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_loopback(host: str) -> None:
    """All benchmark traffic stays on this machine."""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise SystemExit(f"error: {host} is not a loopback address; the benchmark only "
                     "drives systems on 127.0.0.1")


def _raise_child_fd_limit(limit: int):
    def preexec() -> None:
        procstat.raise_fd_limit(limit)
    return preexec


class Seeder:
    """Friendships and unread messages through the services' HTTP APIs (threads)."""

    message_url: str
    friend_url: str
    internal_secret: str

    def _session(self) -> requests.Session:
        s = requests.Session()
        if self.internal_secret:
            s.headers["X-Internal-Secret"] = self.internal_secret
        return s

    def _parallel(self, jobs: list, fn, threads: int) -> float:
        """Run fn(session, job) for every job on ``threads`` threads; seconds taken."""
        t0 = time.monotonic()
        chunks = [jobs[i::threads] for i in range(threads)]

        def run(chunk: list) -> None:
            s = self._session()
            for job in chunk:
                fn(s, job)

        with concurrent.futures.ThreadPoolExecutor(threads) as ex:
            for f in [ex.submit(run, c) for c in chunks if c]:
                f.result(timeout=600)
        return time.monotonic() - t0

    def seed_friends(self, user_id: int, friend_ids: list[int], threads: int = 8) -> float:
        def add(s: requests.Session, fid: int) -> None:
            r = s.post(self.friend_url + "/v1/friends", json={"userId": user_id, "friendId": fid},
                       timeout=30)
            r.raise_for_status()
        return self._parallel(friend_ids, add, threads)

    def seed_messages(self, to_user: int, senders: list[int], count: int, run_id: str,
                      threads: int = 8) -> float:
        """``count`` unread messages to ``to_user``, round-robin from ``senders``."""
        def send(s: requests.Session, i: int) -> None:
            r = s.post(self.message_url + "/v1/messages", timeout=30, json={
                "msgId": f"bl{run_id}-{i}", "fromUserId": senders[i % len(senders)],
                "toUserId": to_user, "content": f"backlog message {i}", "contentType": 1})
            r.raise_for_status()
        return self._parallel(list(range(count)), send, threads)


class ManagedSystem(Seeder):
    kind = "skyeim"

    def __init__(self, layout: str, workdir: Path, *, fd_limit: int, log_level: str = "info",
                 data_source: str | None = None, ws_overrides: dict | None = None):
        assert layout in ("standalone", "supervisord-layout")
        self.layout = layout
        self.dir = Path(tempfile.mkdtemp(prefix=f"{layout}-", dir=workdir))
        self.fd_limit = fd_limit
        self.secret = secrets.token_urlsafe(32)
        self.internal_secret = secrets.token_urlsafe(16)
        self.ports = {n: free_port() for n in ("ws", "message", "friend", "auth")}
        self.host, self.port = "127.0.0.1", self.ports["ws"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.message_url = f"http://127.0.0.1:{self.ports['message']}"
        self.friend_url = f"http://127.0.0.1:{self.ports['friend']}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.config = self._configs(log_level, data_source, ws_overrides or {})
        for name, cfg in self.config.items():
            (self.dir / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    def _configs(self, log_level: str, data_source: str | None, ws_overrides: dict) -> dict:
        def service(name: str) -> dict:
            return {"Name": name, "Host": "127.0.0.1", "Port": self.ports[name],
                    "DataSource": data_source or f"sqlite:///{self.dir / (name + '.db')}",
                    "InternalSecret": self.internal_secret, "Log": {"Level": log_level}}
        ws = {
            "Name": "ws-server", "Host": "127.0.0.1", "Port": self.port,
            "Auth": {"AccessSecret": self.secret, "AccessExpire": 7200},
            "MessageRpc": {"Endpoints": [f"127.0.0.1:{self.ports['message']}"], "Timeout": 2000},
            "FriendRpc": {"Endpoints": [f"127.0.0.1:{self.ports['friend']}"], "Timeout": 2000},
            "AuthRpc": {"Endpoints": [f"127.0.0.1:{self.ports['auth']}"], "Timeout": 2000},
            "InternalSecret": self.internal_secret,
            # the per-connection rate limit (50/s by default) is not what we measure:
            # raised so that a few pairs can load the gateway fully
            "WebSocket": {"RateLimit": {"Rate": 1_000_000, "Burst": 1_000_000}},
            "Log": {"Level": log_level},
        }
        for k, v in ws_overrides.items():
            if isinstance(v, dict) and isinstance(ws.get(k), dict):
                ws[k] = {**ws[k], **v}
            else:
                ws[k] = v
        auth = service("auth")
        auth.update({"AccessSecret": self.secret, "AccessExpire": 7200})
        return {"ws": ws, "message": service("message"), "friend": service("friend"), "auth": auth}

    @property
    def description(self) -> str:
        return f"SkyeIM gateway ({self.layout})"

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.dir / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(
            argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)},
            preexec_fn=_raise_child_fd_limit(self.fd_limit))
        log.close()

    def start(self) -> "ManagedSystem":
        if self.layout == "standalone":
            self._spawn("gateway", [PYTHON, "wsserver.py", "--standalone", "-f", str(self.dir / "ws.yaml")])
        else:
            for name in ("message", "friend", "auth"):
                self._spawn(name, [PYTHON, "-m", f"skyeim.{name}", "-f", str(self.dir / f"{name}.yaml")])
            for name in ("message", "friend", "auth"):
                self._wait_http(name, f"http://127.0.0.1:{self.ports[name]}/healthz")
            self._spawn("gateway", [PYTHON, "wsserver.py", "-f", str(self.dir / "ws.yaml")])
        self._wait_http("gateway", self.url + "/readyz")
        return self

    def _wait_http(self, name: str, url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {self.procs[name].returncode}:\n{self.log_tail(name)}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{name} not ready within {START_TIMEOUT:g}s:\n{self.log_tail(name)}")

    def log_tail(self, name: str = "gateway", lines: int = 30) -> str:
        path = self.dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items() if p.poll() is None}

    @property
    def gateway_pid(self) -> int | None:
        p = self.procs.get("gateway")
        return p.pid if p and p.poll() is None else None

    def connections(self) -> int | None:
        """Live WebSocket connections, from the gateway's /metrics."""
        try:
            text = requests.get(self.url + "/metrics", timeout=5).text
        except requests.RequestException:
            return None
        m = re.search(r"^skyeim_ws_connections(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
        return int(float(m.group(1))) if m else None

    def warnings(self, since: dict[str, int] | None = None,
                 until: dict[str, int] | None = None) -> list[str]:
        """Log lines at WARNING or above (overflows, backend failures), between the
        ``since`` and ``until`` marks (see ``warning_mark``) when given."""
        out = []
        for name, lines in self._warning_lines().items():
            lo, hi = (since or {}).get(name, 0), (until or {}).get(name, len(lines))
            out += [f"{name}: {line}" for line in lines[lo:hi]]
        return out

    def warning_mark(self) -> dict[str, int]:
        return {name: len(lines) for name, lines in self._warning_lines().items()}

    def _warning_lines(self) -> dict[str, list[str]]:
        out = {}
        for name in self.procs:
            path = self.dir / f"{name}.log"
            if path.exists():
                out[name] = [line for line in path.read_text(errors="replace").splitlines()
                             if " WARNING " in line or " ERROR " in line]
        return out

    def stop(self) -> None:
        order = ["gateway"] + [n for n in ("message", "friend", "auth") if n in self.procs]
        for name in order:
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


class ExternalSystem(Seeder):
    """A SkyeIM that runs already (on this machine); nothing is started or stopped."""

    kind = "skyeim"
    layout = "external"

    def __init__(self, url: str, ws_config: str):
        from skyeim import config
        parsed = urllib.parse.urlparse(url if "://" in url else f"http://{url}")
        require_loopback(parsed.hostname or "")
        self.host, self.port = parsed.hostname, parsed.port or 10300
        self.url = f"http://{self.host}:{self.port}"
        cfg = config.load(config.GatewayConfig, ws_config)
        self.secret = cfg.auth.access_secret
        self.internal_secret = cfg.internal_secret

        def base(ep: str) -> str:
            b = ep if ep.startswith("http") else f"http://{ep}"
            require_loopback(urllib.parse.urlparse(b).hostname or "")
            return b
        self.message_url = base(cfg.message_rpc.endpoints[0])
        self.friend_url = base(cfg.friend_rpc.endpoints[0])
        self._pid = procstat.find_listening_pid(self.port)

    @property
    def description(self) -> str:
        return f"SkyeIM gateway at {self.url} (external)"

    def start(self) -> "ExternalSystem":
        r = requests.get(self.url + "/readyz", timeout=5)
        if r.status_code != 200:
            raise RuntimeError(f"{self.url}/readyz answered {r.status_code}")
        return self

    def stop(self) -> None:
        pass

    @property
    def pids(self) -> dict[str, int]:
        return {"gateway": self._pid} if self._pid else {}

    @property
    def gateway_pid(self) -> int | None:
        return self._pid

    connections = ManagedSystem.connections

    def warnings(self, since: dict | None = None, until: dict | None = None) -> list[str]:
        return []

    def warning_mark(self) -> dict:
        return {}


class RelaySystem:
    """The bare relay (skyeim.bench.relay) on a free port."""

    kind = "relay"
    layout = "relay"
    description = "bare relay (Flask + gevent + gevent-websocket, no storage, no acks)"

    def __init__(self, workdir: Path, *, fd_limit: int):
        self.dir = Path(tempfile.mkdtemp(prefix="relay-", dir=workdir))
        self.fd_limit = fd_limit
        self.secret = secrets.token_urlsafe(32)
        self.host, self.port = "127.0.0.1", free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RelaySystem":
        log = open(self.dir / "relay.log", "wb")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "skyeim.bench.relay", "--port", str(self.port)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO),
                 "SKYEIM_RELAY_SECRET": self.secret},
            preexec_fn=_raise_child_fd_limit(self.fd_limit))
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited with {self.proc.returncode}:\n"
                                   + (self.dir / "relay.log").read_text(errors="replace")[-2000:])
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/stats", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError("relay not ready")

    @property
    def pids(self) -> dict[str, int]:
        return {"relay": self.proc.pid} if self.proc and self.proc.poll() is None else {}

    @property
    def gateway_pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def connections(self) -> int | None:
        try:
            return requests.get(self.url + "/stats", timeout=5).json()["connections"]
        except (requests.RequestException, ValueError, KeyError):
            return None

    def warnings(self, since: dict | None = None, until: dict | None = None) -> list[str]:
        return []

    def warning_mark(self) -> dict:
        return {}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
