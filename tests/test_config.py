"""Configuration: the shipped files load, ${VAR} expands, and every mistake is one clear line."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from harness import free_port

from skyeim import config
from skyeim.config import AuthServiceConfig, ConfigError, GatewayConfig, ServiceConfig

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "ws.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name,cls", [("ws.yaml", GatewayConfig), ("message.yaml", ServiceConfig),
                                      ("friend.yaml", ServiceConfig), ("auth.yaml", AuthServiceConfig)])
def test_shipped_files_load(name, cls):
    cfg = config.load(cls, ROOT / "etc" / name)
    assert cfg.name


def test_shipped_gateway_keys_keep_the_original_names_and_defaults():
    cfg = config.load(GatewayConfig, ROOT / "etc" / "ws.yaml")
    assert (cfg.name, cfg.host, cfg.port) == ("ws-server", "127.0.0.1", 10300)   # SKYEIM_HOST to widen
    assert cfg.auth.revocation_poll_interval == 2
    assert cfg.auth.access_expire == 604800
    assert cfg.message_rpc.endpoints == ("127.0.0.1:10301",) and cfg.message_rpc.timeout == 2000
    assert cfg.friend_rpc.endpoints == ("127.0.0.1:10302",)
    assert cfg.auth_rpc.endpoints == ("127.0.0.1:10303",)
    ws = cfg.web_socket
    assert (ws.ping_interval, ws.pong_timeout, ws.max_message_size, ws.send_queue_size) == (30, 60, 65536, 256)
    assert ws.multi_login == "kick" and ws.allowed_origins == () and ws.max_connections == 0
    assert (ws.rate_limit.rate, ws.rate_limit.burst) == (50, 100)
    assert cfg.chat.require_friendship is False and cfg.chat.max_content_length == 16384
    assert (cfg.admin.host, cfg.admin.port) == ("127.0.0.1", 10400)      # /metrics, not on 10300


@pytest.mark.parametrize("name,cls,port", [("message.yaml", ServiceConfig, 10401),
                                           ("friend.yaml", ServiceConfig, 10402),
                                           ("auth.yaml", AuthServiceConfig, 10403)])
def test_shipped_services_have_their_admin_listener_on_loopback(name, cls, port):
    cfg = config.load(cls, ROOT / "etc" / name)
    assert (cfg.admin.host, cfg.admin.port) == ("127.0.0.1", port)
    assert config.from_mapping(cls, {}).admin.port == 0       # an old file: no admin listener


def test_env_expansion_with_default_and_typed_values(tmp_path, monkeypatch):
    monkeypatch.setenv("T_SECRET", "s3cret")
    monkeypatch.setenv("T_PORT", "12345")
    monkeypatch.delenv("T_MISSING", raising=False)
    p = write(tmp_path, 'Port: "${T_PORT}"\nAuth: {AccessSecret: "${T_SECRET}"}\n'
                        'InternalSecret: "${T_MISSING:-fallback}"\n')
    cfg = config.load(GatewayConfig, p)
    assert cfg.port == 12345 and cfg.auth.access_secret == "s3cret"
    assert cfg.internal_secret == "fallback"


@pytest.mark.parametrize("text,needle", [
    ("WebSocket: {PingIntervall: 5}\n", "WebSocket.PingIntervall: unknown key"),
    ("Port: ten\n", "Port: expected a whole number"),
    ("Port: 70000\n", "Port: must be a TCP port"),
    ("WebSocket: {PingInterval: 0}\n", "WebSocket.PingInterval: must be greater than 0"),
    ("WebSocket: {MultiLogin: everyone}\n", "WebSocket.MultiLogin: must be one of kick"),
    ("WebSocket: {MaxDevicesPerUser: -1}\n", "WebSocket.MaxDevicesPerUser: must be 0 (no limit) or more"),
    ("WebSocket: {TypingRate: {Rate: 0}}\n", "WebSocket.TypingRate.Rate"),
    ("WebSocket: {AllowedOrigins: example.com}\n", "WebSocket.AllowedOrigins: expected a list"),
    ("WebSocket: {AllowedOrigins: [example.com]}\n", "WebSocket.AllowedOrigins: 'example.com' is not scheme://host"),
    ("Chat: {RequireFriendship: yes please}\n", "Chat.RequireFriendship: expected true or false"),
    ("MessageRpc: {Endpoints: []}\n", "MessageRpc.Endpoints: at least one host:port"),
    ("Auth: {AccessSecret: ''}\n", "Auth.AccessSecret: must not be empty"),
    ("WebSocket: 5\n", "WebSocket: expected a mapping"),
    ("Port: [1\n", "not valid YAML"),
    ("WebSocket: {EchoPath: echo}\n", "WebSocket.EchoPath: 'echo' is not a path like /echo"),
    ("WebSocket: {EchoPath: /ws}\n", "WebSocket.EchoPath: '/ws' is a route of the gateway"),
    ("WebSocket: {EchoPath: /api/echo}\n", "WebSocket.EchoPath: '/api/echo' is a route of the gateway"),
    ("Port: 10300\nAdmin: {Port: 10300}\n", "Admin.Port: must not be the public Port"),
    ("Admin: {Port: 70000}\n", "Admin.Port: must be a TCP port"),
    ("Admin: {Metrics: true}\n", "Admin.Metrics: unknown key"),
])
def test_bad_values_name_the_key(tmp_path, text, needle):
    p = write(tmp_path, "Auth: {AccessSecret: x}\n" + text if "Auth:" not in text else text)
    with pytest.raises(ConfigError) as e:
        config.load(GatewayConfig, p)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_echo_path_is_off_by_default_and_takes_a_path(tmp_path):
    assert config.load(GatewayConfig, write(tmp_path, "Auth: {AccessSecret: x}\n")).web_socket.echo_path == ""
    p = write(tmp_path, "Auth: {AccessSecret: x}\nWebSocket: {EchoPath: /conformance/echo}\n")
    assert config.load(GatewayConfig, p).web_socket.echo_path == "/conformance/echo"


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(GatewayConfig, tmp_path / "nope.yaml")


def test_gateway_refuses_to_start_on_bad_config_with_one_line(tmp_path):
    p = write(tmp_path, "Auth: {AccessSecret: x}\nWebSocket: {PingIntervall: 5}\n")
    r = subprocess.run([sys.executable, str(ROOT / "wsserver.py"), "-f", str(p)],
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "WebSocket.PingIntervall: unknown key" in lines[0]


def test_standalone_names_the_bad_service_file(tmp_path):
    for name in ("message", "friend", "auth"):
        (tmp_path / f"{name}.yaml").write_text((ROOT / "etc" / f"{name}.yaml").read_text())
    (tmp_path / "friend.yaml").write_text("Name: friend\nPort: 10302\nDataSorce: x\n")
    p = write(tmp_path, "Auth: {AccessSecret: x}\n")
    r = subprocess.run([sys.executable, str(ROOT / "wsserver.py"), "--standalone", "-f", str(p)],
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert r.returncode == 2
    assert "friend.yaml: DataSorce: unknown key" in r.stderr


# ---------------------------------------------------------------------------
# issue 12 part 8: ports and data paths from the environment, YAML errors, the file loaded

ENV_PORTS = {"ws.yaml": "SKYEIM_PORT", "message.yaml": "SKYEIM_MESSAGE_PORT",
             "friend.yaml": "SKYEIM_FRIEND_PORT", "auth.yaml": "SKYEIM_AUTH_PORT"}
ENV_DATA = {"message.yaml": "SKYEIM_MESSAGE_DB", "friend.yaml": "SKYEIM_FRIEND_DB",
            "auth.yaml": "SKYEIM_AUTH_DB"}
CLASSES = {"ws.yaml": GatewayConfig, "message.yaml": ServiceConfig, "friend.yaml": ServiceConfig,
           "auth.yaml": AuthServiceConfig}


def test_every_port_and_data_path_of_the_shipped_files_comes_from_the_environment(tmp_path, monkeypatch):
    ports = {var: str(20001 + i) for i, var in enumerate(ENV_PORTS.values())}
    for var, port in ports.items():
        monkeypatch.setenv(var, port)
    for var in ENV_DATA.values():
        monkeypatch.setenv(var, f"sqlite:///{tmp_path}/{var.lower()}.db")
    for name, cls in CLASSES.items():
        cfg = config.load(cls, ROOT / "etc" / name)
        assert cfg.port == int(ports[ENV_PORTS[name]]), name
        if name in ENV_DATA:
            assert cfg.database_url == f"sqlite:///{tmp_path}/{ENV_DATA[name].lower()}.db"
    gw = config.load(GatewayConfig, ROOT / "etc" / "ws.yaml")   # the gateway follows the services
    assert gw.message_rpc.endpoints == (f"127.0.0.1:{ports['SKYEIM_MESSAGE_PORT']}",)
    assert gw.friend_rpc.endpoints == (f"127.0.0.1:{ports['SKYEIM_FRIEND_PORT']}",)
    assert gw.auth_rpc.endpoints == (f"127.0.0.1:{ports['SKYEIM_AUTH_PORT']}",)


def test_every_port_key_of_the_shipped_files_has_an_environment_variable():
    # a new port or data path in etc/*.yaml must get its ${SKYEIM_...} too
    for path in (ROOT / "etc").glob("*.yaml"):
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            if re.search(r"\b(Port|DataSource|Endpoints):", line):   # Admin's Port too
                assert "${SKYEIM_" in line, f"{path.name}: {line}"


@pytest.mark.parametrize("program", ["wsserver.py", "skyeim.message", "skyeim.auth"])
@pytest.mark.parametrize("text,where,what", [
    ("Name: x\nPort: [1, 2\nHost: a\n", ":3:5:", "expected ',' or ']'"),
    ("Name: x\n  Port: 3\n", ":2:7:", "mapping values are not allowed here"),
    ('Name: "x\n', ":2:1:", "found unexpected end of stream"),
])
def test_a_yaml_syntax_error_is_one_line_naming_file_line_and_column(tmp_path, program, text, where, what):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    argv = [str(ROOT / program)] if program.endswith(".py") else ["-m", program]
    r = subprocess.run([sys.executable, *argv, "-f", str(p)],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"error: {p}{where} not valid YAML:") and what in lines[0], lines[0]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 40.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}"
        try:
            return requests.get(url, timeout=1).status_code
        except requests.RequestException:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in {timeout}s")


def test_without_f_the_shipped_files_run_on_ports_and_data_from_the_environment(tmp_path):
    """The README's layout without -f: etc/ws.yaml and the services' files beside it, every
    port and database from the environment; each program says which file it loaded."""
    ports = {var: str(free_port()) for var in ENV_PORTS.values()}
    env = {**os.environ, **ports, "PYTHONUNBUFFERED": "1",
           **{var: f"sqlite:///{tmp_path}/{var.lower()}.db" for var in ENV_DATA.values()}}
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "wsserver.py", "--standalone"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 40
            while _wait_http(f"http://127.0.0.1:{ports['SKYEIM_PORT']}/readyz", proc) != 200:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            for var in ("SKYEIM_MESSAGE_PORT", "SKYEIM_FRIEND_PORT", "SKYEIM_AUTH_PORT"):
                assert requests.get(f"http://127.0.0.1:{ports[var]}/healthz", timeout=5).status_code == 200
        finally:
            proc.terminate()
            proc.wait(30)
    text = log.read_text()
    assert f"configuration: {ROOT / 'etc' / 'ws.yaml'} (the default; -f to choose)" in text, text
    for var in ENV_DATA.values():
        assert (tmp_path / f"{var.lower()}.db").exists(), var


def test_a_service_without_f_loads_its_shipped_file_and_says_so(tmp_path):
    port = free_port()
    env = {**os.environ, "SKYEIM_FRIEND_PORT": str(port), "PYTHONUNBUFFERED": "1",
           "SKYEIM_FRIEND_DB": f"sqlite:///{tmp_path}/friend.db"}
    log = tmp_path / "friend.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "skyeim.friend"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            assert _wait_http(f"http://127.0.0.1:{port}/healthz", proc) == 200
        finally:
            proc.terminate()
            proc.wait(30)
    assert f"configuration: {ROOT / 'etc' / 'friend.yaml'} (the default; -f to choose)" in log.read_text()
