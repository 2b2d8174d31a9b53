"""A SkyeIM cluster for black-box tests (PROTOCOL.md section 8).

``ClusterSystem`` is a ``System`` (harness.py) run as separate processes -- the
Message, Friend and Auth services on one PostgreSQL database -- plus several
gateway nodes (``python wsserver.py -f node-N.yaml``), each with its own port
and NodeId, sharing a ``Cluster`` section that points at a private
``RedisServer`` started for the tests (so that a test may kill and restart it
without touching any other Redis on the machine).

Node 1 listens on the System's own port, so ``System.api``, ``register_user``,
``befriend`` and ``history`` go through node 1; ``Node.connect`` and
``Node.api`` talk to one particular node.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
import websocket
import yaml

from harness import (reap, DEFAULT_TIMEOUT, OPEN_CLIENTS, PYTHON, REPO, START_TIMEOUT, Client, System,
                     User, deep_merge, free_port)

REDIS_START_TIMEOUT = 10.0


class RedisServer:
    """A private ``redis-server`` on a free port, without persistence: a restart
    (``kill`` then ``start``) comes back empty, on the same port."""

    def __init__(self, tmp: Path, binary: str | None = None):
        self.binary = binary or shutil.which("redis-server") or "redis-server"
        self.tmp = Path(tmp)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = REDIS_START_TIMEOUT) -> "RedisServer":
        self.starts += 1
        log = open(self.tmp / f"redis.{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.tmp)],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: "
                                   f"{(self.tmp / f'redis.{self.starts}.log').read_text()[-2000:]}")
            if self.ping():
                return self
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer PING within {timeout:g}s")

    def ping(self) -> bool:
        import redis
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5,
                                    socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def client(self):
        import redis
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: everything in it is gone, as in a crash."""
        if self.running:
            self.proc.kill()
            self.proc.wait(5)

    def freeze(self) -> None:
        """SIGSTOP: the port stays open but nothing answers (a hung server or a partition)."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGCONT)      # in case a test left it frozen
            self.proc.terminate()
            reap(self.proc, 5)


class Node:
    """One gateway process of a cluster, with its own ws.yaml (node-<id>.yaml)."""

    def __init__(self, system: "ClusterSystem", node_id: str, port: int, config: dict):
        self.system = system
        self.node_id = node_id                 # Cluster.NodeId is "node-<node_id>"
        self.name = f"node-{node_id}"
        self.port = port
        self.host = "127.0.0.1"
        self.url = f"http://{self.host}:{port}"
        self.ws_url = f"ws://{self.host}:{port}/ws"
        self.metrics_url = f"http://{self.host}:{config['Admin']['Port']}"   # its admin listener
        self.config = config
        self.path = system.tmp / f"{self.name}.yaml"
        self.path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.starts = 0
        self.session = requests.Session()

    def __repr__(self) -> str:
        return f"<Node {self.node_id} :{self.port}>"

    # -- process ------------------------------------------------------------------
    def start(self, wait: str | None = "ready", timeout: float = START_TIMEOUT) -> "Node":
        """Start the process; ``wait`` "ready" (/readyz 200), "healthy" (/healthz 200,
        e.g. while Redis is down) or None."""
        self.starts += 1
        self.log_path = self.system.tmp / f"{self.name}.{self.starts}.log"
        log = open(self.log_path, "wb")
        self.system._log_files.append(log)
        self.system.log_paths[self.name] = self.log_path
        self.proc = subprocess.Popen(
            [PYTHON, "wsserver.py", "-f", str(self.path)], cwd=REPO,
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)})
        self.system.procs[self.name] = self.proc
        if wait:
            self.wait_up("/readyz" if wait == "ready" else "/healthz", timeout)
        return self

    def wait_up(self, path: str = "/readyz", timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self} exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            last = self.status(path)
            if last == 200:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self} {path} not 200 within {timeout:g}s (last: {last}):\n"
                           f"{self.log_text()[-3000:]}")

    def status(self, path: str = "/readyz") -> int | str:
        try:
            return self.session.get(self.url + path, timeout=2).status_code
        except requests.RequestException as e:
            return type(e).__name__

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye."""
        if self.running:
            self.proc.kill()
            self.proc.wait(5)

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (the graceful stop); the exit code."""
        if not self.running:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        return reap(self.proc, timeout)

    def log_text(self) -> str:
        for f in self.system._log_files:
            with contextlib.suppress(Exception):
                f.flush()
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def metric(self, name: str) -> float:
        """One unlabelled sample of this node's /metrics."""
        r = self.session.get(self.metrics_url + "/metrics", timeout=5)
        assert r.status_code == 200, f"{self} /metrics: {r.status_code}"
        m = re.search(rf"^{re.escape(name)} (\S+)$", r.text, re.M)
        assert m, f"{self} /metrics has no {name}"
        return float(m.group(1))

    def connected_users(self) -> list[int]:
        """User ids of the connections this node logged as accepted (this start)."""
        return [int(u) for u in re.findall(r"conn=\S+ user=(\d+) connected\b", self.log_text())]

    # -- clients ------------------------------------------------------------------
    def open_ws(self, token: str, timeout: float = DEFAULT_TIMEOUT,
                query: str = "") -> websocket.WebSocket:
        """``query``: more query parameters, e.g. "platform=ios"."""
        return websocket.create_connection(f"{self.ws_url}?token={token}" + (f"&{query}" if query else ""),
                                           timeout=timeout, suppress_origin=True,
                                           enable_multithread=True)

    def connect(self, user: User, *, wait_connected: bool = True,
                connected_timeout: float = 10.0, query: str = "") -> Client:
        client = Client(self.open_ws(user.token, query=query), user.id,
                        label=f"{user.username}@{self.node_id}")
        OPEN_CLIENTS.append(client)
        if wait_connected:
            data = client.wait_connected(connected_timeout)
            assert data.get("userId") == user.id, f"connected for {data!r}, expected {user}"
        return client

    def api(self, method: str, path: str, user: User | None = None, **kw: Any) -> requests.Response:
        headers = kw.pop("headers", {})
        if user is not None:
            headers["Authorization"] = f"Bearer {user.token}"
        return self.session.request(method, self.url + path, headers=headers, timeout=10, **kw)

    def friends_online(self, user: User) -> dict[int, bool]:
        """``GET /api/friends`` on this node: friend id -> online flag."""
        r = self.api("GET", "/api/friends", user)
        assert r.status_code == 200, f"{self} /api/friends: {r.status_code} {r.text}"
        return {f["userId"]: f["online"] for f in r.json()["friends"]}


class ClusterSystem(System):
    """The three services (separate processes, one database) and N gateway nodes
    that share ``Cluster: {Redis, KeyPrefix, HeartbeatInterval, NodeTTL}``."""

    def __init__(self, tmp: Path, redis_server: RedisServer, data_source: str, *, nodes: int = 3,
                 key_prefix: str = "skyeim-test:", heartbeat_interval: int = 1, node_ttl: int = 3,
                 ws: dict | None = None):
        per_service = {"DataSource": data_source}
        super().__init__(tmp, standalone=False, ws=ws, message=per_service,
                         friend=per_service, auth=per_service)
        self.redis_server = redis_server
        self.key_prefix = key_prefix
        self.heartbeat_interval = heartbeat_interval
        self.node_ttl = node_ttl
        self.nodes: list[Node] = []
        for i in range(1, nodes + 1):
            self.add_node(str(i), port=self.port if i == 1 else None)

    def node_config(self, node_id: str, port: int, **cluster: Any) -> dict:
        base = {"Redis": self.redis_server.url, "NodeId": node_id, "KeyPrefix": self.key_prefix,
                "HeartbeatInterval": self.heartbeat_interval, "NodeTTL": self.node_ttl,
                "ReusePort": False}
        base.update(cluster)
        return deep_merge(self.config["ws"], {"Port": port, "Cluster": base,
                                              "Admin": {"Host": "127.0.0.1", "Port": free_port()}})

    def add_node(self, node_id: str, port: int | None = None, *, members: bool = True,
                 **cluster: Any) -> Node:
        """A node with its own config (``cluster`` overrides Cluster keys, e.g.
        KeyPrefix or ReusePort); not started. ``members``: one of ``self.nodes``
        (started by ``start`` and kept running by ``ensure_running``)."""
        port = port or free_port()
        node = Node(self, node_id, port, self.node_config(f"node-{node_id}", port, **cluster))
        if members:
            self.nodes.append(node)
        return node

    def __getitem__(self, i: int) -> Node:
        """``cluster[1]`` is node 1 (1-based, as the NodeIds)."""
        return self.nodes[i - 1]

    def start(self, timeout: float = START_TIMEOUT) -> "ClusterSystem":
        self.starts += 1
        self.started_at = time.monotonic()
        self.stopped_at = None
        for name in ("message", "friend", "auth"):
            self.start_service(name, wait=False)
        for name in ("message", "friend", "auth"):
            self.wait_service(name, timeout)
        for node in self.nodes:
            node.start(wait=None)
        for node in self.nodes:
            node.wait_up("/readyz", timeout)
        return self

    def ensure_running(self, timeout: float = START_TIMEOUT) -> None:
        """Redis up and every member node running and ready (after a test that killed some)."""
        if not self.redis_server.running:
            self.redis_server.start()
        for node in self.nodes:
            if not node.running:
                node.start(wait=None)
        for node in self.nodes:
            try:
                node.wait_up("/readyz", timeout)
            except RuntimeError:
                if node.running:
                    raise
                node.start(wait="ready", timeout=timeout)   # it was still stopping: again

    def stop(self, timeout: float | None = None) -> int | None:
        for name, proc in list(self.procs.items()):
            if name.startswith("node-") and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in list(self.procs.items()):
            if name.startswith("node-"):
                reap(proc, 15)
        return super().stop(timeout)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        for node in self.nodes:
            node.wait_up("/readyz", timeout)


@contextlib.contextmanager
def running_cluster(tmp: Path, name: str, *, nodes: int = 2, **system_kwargs: Any):
    """A started ClusterSystem of ``nodes`` gateways on a private redis-server and a
    fresh PostgreSQL database (named after ``name``), with a key prefix of its own;
    stopped, with every client closed, on exit. Without redis-server the test is
    skipped with the reason (a failure with SKYEIM_REQUIRE_SERVICES=1)."""
    import pytest
    import secrets

    from harness import REQUIRE_SERVICES, close_open_clients
    from service_harness import database_url
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if REQUIRE_SERVICES:
            pytest.fail(f"SKYEIM_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(f"{reason}; the cluster tests need redis-server and PostgreSQL")
    with database_url("postgresql", tmp, name) as url:
        redis_server = RedisServer(tmp, redis_bin).start()
        system = ClusterSystem(tmp, redis_server, url, nodes=nodes,
                               key_prefix=f"skyeim-test-{secrets.token_hex(3)}:", **system_kwargs)
        try:
            system.start()
            yield system
        finally:
            close_open_clients()
            system.stop()
            redis_server.stop()
