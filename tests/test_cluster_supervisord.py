"""supervisord.cluster.conf as documented, with two users in a real browser.

``.venv/bin/supervisord -c supervisord.cluster.conf`` runs the shipped file
itself; only its variables (etc/cluster/cluster.env) differ from the defaults:
free ports, a private redis-server, a fresh PostgreSQL database, and a
temporary directory for supervisord's log, pid file and socket and the
programs' logs. Then two browser contexts (Debian's chromium, Playwright):
user A opens the chat page on node gw1, user B on node gw2; they register,
befriend each other, see each other's presence and chat both ways with the
ticks going sent -> delivered -> read, every frame between them crossing Redis.
At the end ``supervisorctl shutdown`` stops everything, and no process is left.

Without chromium, playwright, redis-server or PostgreSQL the browser test is
skipped with the reason, unless SKYEIM_REQUIRE_SERVICES=1 (as in CI), which
makes that a failure.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from harness import REPO, unique, wait_until

CONF = REPO / "supervisord.cluster.conf"
ENV_FILE = REPO / "etc" / "cluster" / "cluster.env"
BIN = Path(sys.executable).parent           # the venv's bin: supervisord, supervisorctl
REQUIRE_SERVICES = os.environ.get("SKYEIM_REQUIRE_SERVICES") == "1"
PROGRAMS = ("message-1", "message-2", "friend", "auth", "gateway-1", "gateway-2")
PORT_VARIABLES = {"gateway-1": "SKYEIM_GATEWAY_1_PORT", "gateway-2": "SKYEIM_GATEWAY_2_PORT",
                  "message-1": "SKYEIM_MESSAGE_1_PORT", "message-2": "SKYEIM_MESSAGE_2_PORT",
                  "friend": "SKYEIM_FRIEND_PORT", "auth": "SKYEIM_AUTH_PORT"}
ADMIN_PORT_VARIABLES = {program: var.replace("_PORT", "_ADMIN_PORT") for program, var in PORT_VARIABLES.items()}
START_TIMEOUT = 60.0           # s until both gateways answer /readyz 200
STOP_TIMEOUT = 45.0            # s for `supervisorctl shutdown` to stop everything


def conf_variables() -> set[str]:
    """The names X of every %(ENV_X)s in supervisord.cluster.conf."""
    return set(re.findall(r"%\(ENV_([A-Za-z_][A-Za-z0-9_]*)\)s", CONF.read_text()))


def env_file_defaults() -> dict[str, str]:
    """X -> default of every ``: "${X:=default}"`` line of etc/cluster/cluster.env."""
    return dict(re.findall(r'^: "\$\{([A-Z0-9_]+):=([^}]*)\}"$', ENV_FILE.read_text(), re.M))


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:                                     # a zombie is dead, only not reaped yet
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"SKYEIM_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


# ---------------------------------------------------------------------------
# The documented defaults, without starting anything

def test_every_variable_of_the_conf_has_its_documented_default(monkeypatch):
    """cluster.env defines every %(ENV_X)s of the conf; with those defaults the
    conf means what it meant before it had variables (ports 10300..10311, data/)."""
    variables, defaults = conf_variables(), env_file_defaults()
    assert variables, "supervisord.cluster.conf uses no %(ENV_X)s"
    assert variables <= set(defaults), f"no default in cluster.env for {variables - set(defaults)}"
    header = CONF.read_text().split("[supervisord]")[0]
    for name, default in defaults.items():
        assert re.search(rf"^;\s+{name}\s+{re.escape(default)}(\s|$)", header, re.M), \
            f"the conf's header does not show {name} = {default}"
    # etc/cluster/ws.yaml reads the services' ports from the same names, with the same defaults
    ws_yaml = (REPO / "etc" / "cluster" / "ws.yaml").read_text()
    for name in ("SKYEIM_MESSAGE_1_PORT", "SKYEIM_MESSAGE_2_PORT", "SKYEIM_FRIEND_PORT", "SKYEIM_AUTH_PORT",
                 "SKYEIM_REDIS_URL"):
        assert f"${{{name}:-{defaults[name]}}}" in ws_yaml, f"ws.yaml does not read {name}"
    for service in ("message", "friend", "auth"):
        text = (REPO / "etc" / "cluster" / f"{service}.yaml").read_text()
        assert f"${{SKYEIM_DB_URL:-{defaults['SKYEIM_DB_URL']}}}" in text, service

    # sourced by sh from the repository root, as the README does; a variable set before wins
    script = f". {ENV_FILE} && env"
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SKYEIM_AUTH_PORT": "12345"}
    out = subprocess.run(["sh", "-c", script], cwd=REPO, env=clean, capture_output=True, text=True,
                         timeout=10, check=True).stdout
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert env["SKYEIM_RUN_DIR"] == f"{REPO}/data"
    assert env["SKYEIM_AUTH_PORT"] == "12345"
    env["SKYEIM_AUTH_PORT"] = "10303"

    # supervisord's and supervisorctl's own parsers, with exactly that environment
    from supervisor.options import ClientOptions, ServerOptions
    for k in list(os.environ):
        if k.startswith("SKYEIM_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        if k.startswith("SKYEIM_"):
            monkeypatch.setenv(k, v)
    opts = ServerOptions()
    opts.configfile = str(CONF)
    opts.process_config(do_usage=False)
    data = REPO / "data"
    assert Path(opts.logfile) == data / "logs" / "supervisord-cluster.log"
    assert Path(opts.pidfile) == data / "supervisord-cluster.pid"
    sockets = [c["file"] for c in opts.configroot.supervisord.server_configs]
    assert sockets == [str(data / "supervisor-cluster.sock")]
    procs = {p.name: p for g in opts.process_group_configs for p in g.process_configs}
    assert sorted(procs) == sorted(PROGRAMS)
    expected_ports = {"gateway-1": "10300", "gateway-2": "10310", "message-1": "10301",
                      "message-2": "10311", "friend": "10302", "auth": "10303"}
    for name, port in expected_ports.items():
        assert procs[name].environment["SKYEIM_PORT"] == port, name
        assert Path(procs[name].stdout_logfile) == data / "logs" / f"{name}.log"
        assert procs[name].directory == str(REPO)
    assert procs["gateway-1"].environment["SKYEIM_NODE_ID"] == "gw1"
    assert procs["gateway-2"].environment["SKYEIM_NODE_ID"] == "gw2"
    ctl = ClientOptions()
    ctl.configfile = str(CONF)
    ctl.process_config(do_usage=False)
    assert ctl.serverurl == f"unix://{data / 'supervisor-cluster.sock'}"


# ---------------------------------------------------------------------------
# The cluster under supervisord

class Supervisord:
    """supervisord.cluster.conf run by the venv's supervisord with ``env``."""

    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp = tmp
        self.env = env
        self.ports = {name: int(env[var]) for name, var in PORT_VARIABLES.items()}
        self.admin_ports = {name: int(env[var]) for name, var in ADMIN_PORT_VARIABLES.items()}
        self.pidfile = tmp / "supervisord-cluster.pid"
        self.pid: int | None = None
        self.program_pids: dict[str, int] = {}

    def url(self, program: str) -> str:
        return f"http://127.0.0.1:{self.ports[program]}"

    def admin_url(self, program: str) -> str:
        """The program's admin listener (GET /metrics)."""
        return f"http://127.0.0.1:{self.admin_ports[program]}"

    def start(self) -> "Supervisord":
        with open(self.tmp / "supervisord.out", "wb") as out:   # it daemonizes: no pipes
            proc = subprocess.run([str(BIN / "supervisord"), "-c", str(CONF)], cwd=REPO, env=self.env,
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=30)
        assert proc.returncode == 0, f"supervisord exited {proc.returncode}: {self.output()}"
        self.pid = int(wait_until(lambda: self.pidfile.exists() and self.pidfile.read_text().strip(),
                                  timeout=15, message=f"no {self.pidfile}: {self.output()}"))
        deadline = time.monotonic() + START_TIMEOUT
        for gateway in ("gateway-1", "gateway-2"):
            while True:
                try:
                    if requests.get(self.url(gateway) + "/readyz", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                assert time.monotonic() < deadline, \
                    f"{gateway} not ready within {START_TIMEOUT:g}s:\n{self.status()}\n{self.log_tails()}"
                time.sleep(0.2)
        return self

    def ctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "supervisorctl"), "-c", str(CONF), *args], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def status(self) -> str:
        return self.ctl("status").stdout

    def read_program_pids(self) -> dict[str, int]:
        """name -> pid of the RUNNING programs, from ``supervisorctl status`` (remembered
        for the check that they are gone after the shutdown)."""
        status = self.status()
        running = re.findall(r"^(\S+)\s+RUNNING\s+pid (\d+),", status, re.M)
        self.program_pids.update({name: int(pid) for name, pid in running})
        return {name: int(pid) for name, pid in running}

    def shutdown(self) -> list[str]:
        """``supervisorctl shutdown``, wait; what is still running afterwards (empty: all gone)."""
        if self.pid is None:
            return []
        result = self.ctl("shutdown")
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and self.anything_alive():
            time.sleep(0.1)
        said = f"{result.stdout.strip()!r} {result.stderr.strip()!r}"
        left = [f"supervisord (pid {self.pid}; shutdown said {said})"] if alive(self.pid) else []
        left += [f"{name} (pid {pid})" for name, pid in self.program_pids.items() if alive(pid)]
        left += [f"something on {name}'s port {port}" for name, port in self.ports.items()
                 if not port_is_free(port)]
        return left

    def anything_alive(self) -> bool:
        return bool(self.pid and alive(self.pid)) or any(map(alive, self.program_pids.values()))

    def kill_leftovers(self) -> None:
        """Whatever of ours is still running after a failed shutdown: SIGKILL, by pid."""
        for pid in [self.pid, *self.program_pids.values()]:
            if pid and alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def output(self) -> str:
        path = self.tmp / "supervisord.out"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        for path in sorted((self.tmp / "logs").glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)


@pytest.fixture
def supervised_cluster(tmp_path):
    """supervisord.cluster.conf running with free ports, a private Redis, a fresh
    database and ``tmp_path`` as SKYEIM_RUN_DIR; stopped (by force if need be) after."""
    for binary in ("supervisord", "supervisorctl"):
        if not (BIN / binary).exists():
            unavailable(f"no {BIN / binary} (pip install -r requirements.txt)")
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    from cluster_harness import RedisServer
    from service_harness import database_url
    (tmp_path / "logs").mkdir()
    with database_url("postgresql", tmp_path, "supervisord") as db_url:
        redis_server = RedisServer(tmp_path, redis_bin).start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKYEIM_")}
        variables = [*PORT_VARIABLES.values(), *ADMIN_PORT_VARIABLES.values()]
        env.update({var: str(port) for var, port in zip(variables, free_ports(len(variables)))})
        env.update({"SKYEIM_RUN_DIR": str(tmp_path), "SKYEIM_REDIS_URL": redis_server.url,
                    "SKYEIM_DB_URL": db_url, "SKYEIM_ACCESS_SECRET": secrets.token_urlsafe(32),
                    "SKYEIM_INTERNAL_SECRET": secrets.token_urlsafe(16)})
        assert conf_variables() <= set(env)
        sup = Supervisord(tmp_path, env)
        try:
            sup.start()
            sup.read_program_pids()
            yield sup
        finally:
            if sup.pid is not None and alive(sup.pid):
                try:
                    sup.read_program_pids()
                except (OSError, subprocess.SubprocessError):
                    pass
            if sup.anything_alive():
                sup.shutdown()
                sup.kill_leftovers()
            redis_server.stop()


def test_browser_chat_across_two_nodes_under_supervisord(browser, supervised_cluster):
    from test_web_page import Tab, expect
    sup = supervised_cluster
    # all six RUNNING: supervisord says so only startsecs (2 s) after each start,
    # which can be later than the gateways' first /readyz 200
    wait_until(lambda: sorted(sup.read_program_pids()) == sorted(PROGRAMS), timeout=30,
               message=f"not all six programs RUNNING:\n{sup.status()}")

    class Node:                                   # what Tab needs of a system: the page's URL
        def __init__(self, program: str):
            self.url = sup.url(program)
            self.metrics_url = sup.admin_url(program)

    node1, node2 = Node("gateway-1"), Node("gateway-2")

    def connections(node: Node) -> int:
        text = requests.get(node.metrics_url + "/metrics", timeout=5).text
        return int(float(re.search(r"^skyeim_ws_connections(?:\{[^}]*\})? (\S+)$", text, re.M).group(1)))

    a_name, b_name = unique("alice"), unique("bob")
    a, b = Tab(browser, node1), Tab(browser, node2)
    a_id = a.sign_in(a_name, register=True)          # registered through gw1, and signed in there
    b_id = b.sign_in(b_name, register=True)          # ... through gw2
    wait_until(lambda: connections(node1) == 1 and connections(node2) == 1, timeout=10,
               message="each node should hold exactly one of the two users")

    # befriend through the page; each sees the other online, across the nodes
    a.add_friend(b_name)
    expect(a.friend(b_id)).to_have_attribute("data-online", "true")
    b.add_friend(a_name)
    expect(b.friend(a_id)).to_have_attribute("data-online", "true")
    expect(b.friend(a_id).locator(".dot")).to_have_class("dot online")

    # bob closes his browser: alice, on the other node, sees him go offline
    b.close()
    expect(a.friend(b_id)).to_have_attribute("data-online", "false")
    wait_until(lambda: connections(node2) == 0, timeout=10, message="gw2 still holds bob")

    # to an offline friend: stored, one tick
    m1 = a.send("Hi Bob, from node 1")
    expect(a.message(m1)).to_have_attribute("data-status", "sent")
    expect(a.message(m1).locator(".tick")).to_have_text("✓")

    # bob signs in again on gw2: online again; the backlog is delivered there -> two ticks on gw1
    b = Tab(browser, node2)
    assert b.sign_in(b_name) == b_id
    expect(a.friend(b_id)).to_have_attribute("data-online", "true")
    expect(a.message(m1)).to_have_attribute("data-status", "delivered")
    expect(a.message(m1).locator(".tick")).to_have_text("✓✓")
    expect(a.message(m1).locator(".tick")).not_to_have_class("tick read")
    expect(b.friend(a_id).locator(".badge")).to_have_text("1")

    # bob opens the chat: read, and alice sees blue ticks
    b.open_chat(a_id)
    expect(b.message(m1).locator(".text")).to_have_text("Hi Bob, from node 1")
    expect(a.message(m1)).to_have_attribute("data-status", "read")
    expect(a.message(m1).locator(".tick")).to_have_class("tick read")

    # and live, both ways, while both look at the chat
    m2 = b.send("Hello Alice, from node 2")
    expect(a.message(m2).locator(".text")).to_have_text("Hello Alice, from node 2")
    expect(b.message(m2)).to_have_attribute("data-status", "read")
    expect(b.message(m2).locator(".tick")).to_have_class("tick read")
    m3 = a.send("Across Redis, both ways")
    expect(b.message(m3).locator(".text")).to_have_text("Across Redis, both ways")
    expect(a.message(m3)).to_have_attribute("data-status", "read")
    for tab in (a, b):
        assert tab.seqs() == [1, 2, 3]
        for m in (m1, m2, m3):
            expect(tab.message(m)).to_have_count(1)
    assert connections(node1) == 1 and connections(node2) == 1

    # alice leaves: bob, on gw2, sees her go offline
    a.close()
    expect(b.friend(a_id)).to_have_attribute("data-online", "false")
    a.assert_clean()
    b.assert_clean()
    b.close()

    # the documented stop: supervisorctl shutdown; nothing is left running
    left = sup.shutdown()
    if left:
        sup.kill_leftovers()
    assert not left, f"still running after supervisorctl shutdown: {left}\n{sup.log_tails()}"
    for name in ("gateway-1", "gateway-2"):
        log = (sup.tmp / "logs" / f"{name}.log").read_text(errors="replace")
        assert " ERROR " not in log and "Traceback" not in log, f"{name}.log:\n{log[-3000:]}"
