"""The gateway in front of a team's own services: the stand-ins of standins.py, which
implement PROTOCOL.md section 6 and nothing more (section 9.1).

    with running_standin_system(tmp, standins=("message",), standalone=True) as system:
        system.standins["message"].fail()      # the switches of standin_harness.StandIn

``StandInSystem`` is a ``System`` (harness.py) whose ws.yaml points the services
named in ``standins`` at stand-in processes: ``standalone=True`` runs
``wsserver.py --standalone`` (the other services in the gateway's process; the
replaced ones run there too, unused); ``standalone=False`` runs the gateway alone,
beside the shipped services that are not replaced, as separate processes.
``System.service`` and the seeding helpers reach the stand-in of a replaced service.

``StandInCluster`` is a ``ClusterSystem`` (cluster_harness.py) of gateway nodes on a
private Redis, all three services stand-ins.

``swap_in_shipped(system, "message")`` replaces a stand-in with the shipped service
on the same address (a team that adds the batch endpoints): the gateway's probe
finds them again.
"""
from __future__ import annotations

import contextlib
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterator

import yaml

from cluster_harness import ClusterSystem, RedisServer
from harness import PYTHON, SERVICE_MODULES, START_TIMEOUT, System, close_open_clients, deep_merge
from standin_harness import StandIn

RPC_KEYS = {"message": "MessageRpc", "friend": "FriendRpc", "auth": "AuthRpc"}
KINDS = ("message", "friend", "auth")


def _standins(system: System, kinds: tuple[str, ...], hang_max: float) -> dict[str, StandIn]:
    return {kind: StandIn(kind, system.tmp, internal_secret=system.internal_secret,
                          access_secret=system.secret, hang_max=hang_max) for kind in kinds}


def _endpoints(standins: dict[str, StandIn]) -> dict:
    """The ws.yaml override that sends the gateway to the stand-ins."""
    return {RPC_KEYS[kind]: {"Endpoints": [svc.endpoint]} for kind, svc in standins.items()}


class StandInSystem(System):
    def __init__(self, tmp: Path, *, standins: tuple[str, ...] = KINDS, standalone: bool = True,
                 ws: dict | None = None, hang_max: float = 30.0):
        super().__init__(tmp, ws=ws, standalone=standalone)
        self.standins = _standins(self, tuple(standins), hang_max)
        self.config["ws"] = deep_merge(self.config["ws"], _endpoints(self.standins))
        self.write_configs()

    def service_url(self, name: str) -> str:
        svc = self.standins.get(name)
        return svc.url if svc is not None else super().service_url(name)

    def start(self, timeout: float = START_TIMEOUT) -> "StandInSystem":
        for svc in self.standins.values():
            if not svc.running:
                svc.start()
        if self.standalone:
            super().start(timeout)
            return self
        self.starts += 1
        own = [name for name in KINDS if name not in self.standins]
        for name in own:
            self.start_service(name, wait=False)
        for name in own:
            self.wait_service(name, timeout)
        self._spawn("gateway", [PYTHON, "wsserver.py", "-f", str(self.paths["ws"])])
        self.wait_ready(timeout)
        return self

    def stop(self, timeout: float | None = None) -> int | None:
        code = super().stop(timeout)
        for svc in self.standins.values():
            svc.stop()
        return code

    def log_tail(self, lines: int = 60) -> str:
        tails = [f"--- stand-in {k} ---\n" + "\n".join(s.log().splitlines()[-lines:])
                 for k, s in self.standins.items()]
        return "\n".join([super().log_tail(lines), *tails])


def swap_in_shipped(system: System, kind: str, timeout: float = START_TIMEOUT) -> None:
    """Stop the stand-in of ``kind`` and run the shipped service on its address (a
    fresh SQLite database): as a team that adds the batch endpoints to its service."""
    svc = system.standins[kind]
    svc.go_away()
    config = {"Name": f"shipped-{kind}", "Host": "127.0.0.1", "Port": svc.port,
              "DataSource": f"sqlite:///{system.tmp / f'shipped-{kind}.db'}",
              "InternalSecret": system.internal_secret}
    if kind == "auth":
        config.update({"AccessSecret": system.secret, "AccessExpire": 3600})
    path = system.tmp / f"shipped-{kind}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    name = f"shipped-{kind}"
    system._spawn(name, [PYTHON, "-m", SERVICE_MODULES[kind], "-f", str(path)])
    system.ports[name] = svc.port
    system.wait_service(name, timeout)


class StandInCluster(ClusterSystem):
    """Gateway nodes on a private Redis, in front of the three stand-ins."""

    def __init__(self, tmp: Path, redis_server: RedisServer, *, nodes: int = 2,
                 ws: dict | None = None, hang_max: float = 30.0, **cluster: Any):
        super().__init__(tmp, redis_server, "sqlite:///unused.db", nodes=nodes, ws=ws, **cluster)
        self.standins = _standins(self, KINDS, hang_max)
        override = _endpoints(self.standins)
        self.config["ws"] = deep_merge(self.config["ws"], override)
        for node in self.nodes:
            node.config = deep_merge(node.config, override)
            node.path.write_text(yaml.safe_dump(node.config, sort_keys=False))

    def service_url(self, name: str) -> str:
        return self.standins[name].url

    def start(self, timeout: float = START_TIMEOUT) -> "StandInCluster":
        self.starts += 1
        for svc in self.standins.values():
            if not svc.running:
                svc.start()
        for node in self.nodes:
            node.start(wait=None)
        for node in self.nodes:
            node.wait_up("/readyz", timeout)
        return self

    def stop(self, timeout: float | None = None) -> int | None:
        code = super().stop(timeout)
        for svc in self.standins.values():
            svc.stop()
        return code


@contextlib.contextmanager
def running_standin_system(tmp: Path, **kw: Any) -> Iterator[StandInSystem]:
    system = StandInSystem(tmp, **kw)
    try:
        system.start()
        yield system
    finally:
        close_open_clients()
        system.stop()


@contextlib.contextmanager
def running_standin_cluster(tmp: Path, *, nodes: int = 2, **kw: Any) -> Iterator[StandInCluster]:
    """Skipped (a failure with SKYEIM_REQUIRE_SERVICES=1) without redis-server."""
    import pytest

    from harness import REQUIRE_SERVICES
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if REQUIRE_SERVICES:
            pytest.fail(f"SKYEIM_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    redis_server = RedisServer(tmp, redis_bin).start()
    system = StandInCluster(tmp, redis_server, nodes=nodes,
                            key_prefix=f"skyeim-own-{secrets.token_hex(3)}:", **kw)
    try:
        system.start()
        yield system
    finally:
        close_open_clients()
        system.stop()
        redis_server.stop()
