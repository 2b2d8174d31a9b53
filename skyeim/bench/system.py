"""The systems the benchmark drives.

- ``ManagedSystem``: SkyeIM started by the benchmark in a temporary directory on
  free ports, with its own SQLite databases (or a given DataSource), either
  ``standalone`` (one process: ``wsserver.py --standalone``) or the
  ``supervisord-layout`` (four processes: the Message, Friend and Auth services
  and the gateway, as supervisord.conf runs them).
- ``ClusterSystem``: a cluster (PROTOCOL.md section 8) started by the benchmark:
  N gateway nodes sharing a private ``redis-server`` (or ``--redis``), and the
  Message, Friend and Auth services as separate processes on a fresh
  PostgreSQL database that it creates and drops.
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
import shutil
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
DEFAULT_POSTGRES_URL = os.environ.get("SKYEIM_TEST_POSTGRES_URL",
                                      "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all bound at once while they are chosen)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


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


def _connections_at(url: str) -> int | None:
    """Live WebSocket connections of the gateway whose admin listener is at ``url``, from its /metrics."""
    try:
        text = requests.get(url + "/metrics", timeout=5).text
    except requests.RequestException:
        return None
    m = re.search(r"^skyeim_ws_connections(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    return int(float(m.group(1))) if m else None


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
        # all eight chosen at once: one at a time, the OS may hand out a port twice
        names = ("ws", "message", "friend", "auth")
        ports = free_ports(2 * len(names))
        self.ports = dict(zip(names, ports))
        self.admin_ports = dict(zip(names, ports[len(names):]))      # /metrics
        self.host, self.port = "127.0.0.1", self.ports["ws"]
        self.metrics_url = f"http://127.0.0.1:{self.admin_ports['ws']}"
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
                    "InternalSecret": self.internal_secret, "Log": {"Level": log_level},
                    "Admin": {"Host": "127.0.0.1", "Port": self.admin_ports[name]}}
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
            "Admin": {"Host": "127.0.0.1", "Port": self.admin_ports["ws"]},
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
        try:
            if self.layout == "standalone":
                self._spawn("gateway", [PYTHON, "wsserver.py", "--standalone", "-f",
                                        str(self.dir / "ws.yaml")])
            else:
                for name in ("message", "friend", "auth"):
                    self._spawn(name, [PYTHON, "-m", f"skyeim.{name}", "-f", str(self.dir / f"{name}.yaml")])
                for name in ("message", "friend", "auth"):
                    self._wait_http(name, f"http://127.0.0.1:{self.ports[name]}/healthz")
                self._spawn("gateway", [PYTHON, "wsserver.py", "-f", str(self.dir / "ws.yaml")])
            self._wait_http("gateway", self.url + "/readyz")
        except BaseException:
            self.stop()                 # what did start must not outlive a failed start
            raise
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
        return _connections_at(self.metrics_url)

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


class ClusterSystem(ManagedSystem):
    """A cluster on this machine: ``nodes`` gateway processes (``wsserver.py -f
    node-K.yaml``, each on its own port with its own NodeId) sharing one Redis --
    a private ``redis-server`` on a free port, or ``redis_url`` with a key prefix
    of its own -- and the Message, Friend and Auth services as three processes on
    a fresh PostgreSQL database, created on the server of ``postgres_url`` at
    start and dropped at stop.

    Load: a client of user ``uid`` connects to ``node_ports[uid % nodes]``
    (load.py), so consecutive user ids -- the two users of every chat pair -- are
    on different nodes when there are several: chats, acks and read receipts
    cross nodes through Redis. ``pids`` includes the private Redis and the
    PostgreSQL backends serving the database, so that their CPU counts as the
    system's and not as "other processes"."""

    layout = "cluster"

    def __init__(self, nodes: int, workdir: Path, *, fd_limit: int, log_level: str = "info",
                 postgres_url: str = DEFAULT_POSTGRES_URL, redis_url: str | None = None,
                 message_services: int = 1):
        if nodes < 1 or message_services < 1:
            raise ValueError("a cluster needs at least one node and one Message service")
        self.n_nodes = nodes
        # Message service processes on the one database; the nodes spread calls over them
        # ("message", then "message-2", ...: their CPU is reported apart)
        self.message_names = ["message"] + [f"message-{k}" for k in range(2, message_services + 1)]
        self.kind_label = f"{nodes}-node cluster"
        self.dir = Path(tempfile.mkdtemp(prefix=f"cluster{nodes}-", dir=workdir))
        self.fd_limit = fd_limit
        self.log_level = log_level
        self.secret = secrets.token_urlsafe(32)
        self.internal_secret = secrets.token_urlsafe(16)
        extra = self.message_names[1:]
        ports = free_ports(nodes + 3 + len(extra))
        self.ports = dict(zip(("message", "friend", "auth", *extra), ports))
        self.node_ports = ports[3 + len(extra):]
        self.ports["ws"] = self.node_ports[0]
        self.host, self.port = "127.0.0.1", self.node_ports[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.node_urls = [f"http://127.0.0.1:{p}" for p in self.node_ports]
        self.node_admin_ports = free_ports(nodes)          # each node's admin listener (/metrics)
        self.admin_ports = dict(zip(("ws", "message", "friend", "auth", *extra),
                                    free_ports(4 + len(extra))))
        self.metrics_url = f"http://127.0.0.1:{self.node_admin_ports[0]}"
        self.message_url = f"http://127.0.0.1:{self.ports['message']}"
        self.friend_url = f"http://127.0.0.1:{self.ports['friend']}"
        self.procs = {}
        self.postgres_url = postgres_url
        self.external_redis = redis_url
        self.redis_url = redis_url
        self.key_prefix = f"skyeim-bench-{secrets.token_hex(4)}:"
        self.db_name: str | None = None
        self._admin = None            # an AUTOCOMMIT engine on the server's admin database
        self._stopped = False

    @property
    def description(self) -> str:
        services = "3 services" if len(self.message_names) == 1 else \
            f"{len(self.message_names)} Message services, Friend and Auth"
        return (f"SkyeIM cluster ({self.n_nodes} gateway node{'s' if self.n_nodes > 1 else ''}, "
                f"Redis, {services} on PostgreSQL)")

    # -- Redis and PostgreSQL ---------------------------------------------------------------

    def _start_redis(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("--target cluster needs redis-server (apt-get install redis-server) "
                               "or --redis URL")
        port = free_port()
        self._spawn("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--daemonize", "no", "--dir", str(self.dir)])
        import redis
        client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while time.monotonic() < deadline:
                if self.procs["redis"].poll() is not None:
                    raise RuntimeError(f"redis-server exited:\n{self.log_tail('redis')}")
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return f"redis://127.0.0.1:{port}/0"
                time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT:g}s")

    def _create_database(self) -> str:
        import sqlalchemy as sa
        base = sa.make_url(self.postgres_url)
        if not base.drivername.startswith("postgresql"):
            raise RuntimeError(f"--target cluster needs a PostgreSQL URL, not {base.drivername}")
        if base.host:
            require_loopback(base.host)
        self._admin = sa.create_engine(base, isolation_level="AUTOCOMMIT",
                                       connect_args={"connect_timeout": 5})
        name = f"skyeim_bench_{secrets.token_hex(6)}"
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        self.db_name = name
        return base.set(database=name).render_as_string(hide_password=False)

    def _drop_database(self) -> None:
        if self._admin is None:
            return
        try:
            if self.db_name:
                with self._admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
                self.db_name = None
        finally:
            self._admin.dispose()
            self._admin = None

    def _postgres_pids(self) -> dict[str, int]:
        """The PostgreSQL backends connected to this system's database (local server)."""
        if self._admin is None or not self.db_name:
            return {}
        import sqlalchemy as sa
        try:
            with self._admin.connect() as conn:
                rows = conn.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :d "
                                            "ORDER BY pid"), {"d": self.db_name}).all()
        except sa.exc.SQLAlchemyError:
            return {}
        return {f"postgres-{r[0]}": r[0] for r in rows}

    # -- life ------------------------------------------------------------------------------

    def start(self) -> "ClusterSystem":
        try:
            if self.external_redis is None:
                self.redis_url = self._start_redis()
            else:
                parsed = urllib.parse.urlparse(self.external_redis)
                if parsed.hostname:
                    require_loopback(parsed.hostname)
            db_url = self._create_database()
            cfg = self._configs(self.log_level, db_url, {})
            for name in self.message_names[1:]:
                cfg[name] = {**cfg["message"], "Port": self.ports[name],
                             "Admin": {"Host": "127.0.0.1", "Port": self.admin_ports[name]}}
            ws = cfg.pop("ws")
            ws["MessageRpc"] = {**ws["MessageRpc"], "Endpoints": [
                f"127.0.0.1:{self.ports[name]}" for name in self.message_names]}
            for name, c in cfg.items():
                (self.dir / f"{name}.yaml").write_text(yaml.safe_dump(c, sort_keys=False))
            for k, port in enumerate(self.node_ports, 1):
                node = {**ws, "Port": port,
                        "Admin": {"Host": "127.0.0.1", "Port": self.node_admin_ports[k - 1]},
                        "Cluster": {"Redis": self.redis_url, "NodeId": f"bench-{k}",
                                    "KeyPrefix": self.key_prefix, "HeartbeatInterval": 5, "NodeTTL": 15}}
                (self.dir / f"node-{k}.yaml").write_text(yaml.safe_dump(node, sort_keys=False))
            self.config = {**cfg, "ws": ws}
            services = [*self.message_names, "friend", "auth"]
            for name in services:
                module = "message" if name in self.message_names else name
                self._spawn(name, [PYTHON, "-m", f"skyeim.{module}", "-f", str(self.dir / f"{name}.yaml")])
            for name in services:
                self._wait_http(name, f"http://127.0.0.1:{self.ports[name]}/healthz")
            for k in range(1, self.n_nodes + 1):
                self._spawn(f"gateway-{k}", [PYTHON, "wsserver.py", "-f", str(self.dir / f"node-{k}.yaml")])
            for k, url in enumerate(self.node_urls, 1):
                self._wait_http(f"gateway-{k}", url + "/readyz")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            groups = [[f"gateway-{k}" for k in range(1, self.n_nodes + 1)],
                      [*self.message_names, "friend", "auth"], ["redis"]]
            for group in groups:                 # the nodes say goodbye to Redis before it goes
                running = [self.procs[n] for n in group if n in self.procs and self.procs[n].poll() is None]
                for p in running:
                    p.send_signal(signal.SIGTERM)
                for p in running:
                    try:
                        p.wait(20)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait(5)
            if self.external_redis:
                import redis
                with contextlib.suppress(redis.RedisError):
                    r = redis.Redis.from_url(self.external_redis, socket_timeout=5)
                    keys = list(r.scan_iter(match=self.key_prefix + "*", count=1000))
                    if keys:
                        r.delete(*keys)
                    r.close()
        finally:
            self._drop_database()

    # -- what the scenarios read -------------------------------------------------------------

    @property
    def pids(self) -> dict[str, int]:
        return {**super().pids, **self._postgres_pids()}

    @property
    def rss_pids(self) -> dict[str, int]:
        """The system's own processes, for memory (PostgreSQL backends share their buffers)."""
        return super().pids

    @property
    def gateway_pids(self) -> list[int]:
        return [p.pid for n, p in self.procs.items() if n.startswith("gateway-") and p.poll() is None]

    @property
    def gateway_pid(self) -> int | None:
        p = self.procs.get("gateway-1")
        return p.pid if p and p.poll() is None else None

    def node_connections(self) -> list[int | None]:
        """Live WebSocket connections of each node (its /metrics)."""
        return [_connections_at(f"http://127.0.0.1:{p}") for p in self.node_admin_ports]

    def connections(self) -> int | None:
        """Live WebSocket connections over all nodes."""
        known = [c for c in self.node_connections() if c is not None]
        return sum(known) if known else None

    def _warning_lines(self) -> dict[str, list[str]]:
        lines = super()._warning_lines()
        lines.pop("redis", None)          # redis-server's own notices are not the system's warnings
        return lines


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
        # its /metrics: on the admin listener of the same YAML (Admin: {Host, Port})
        self.metrics_url = f"http://{cfg.admin.host}:{cfg.admin.port}"

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
