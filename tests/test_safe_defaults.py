"""Safe defaults (issue 12 part 2), with real processes.

* The shipped supervisord.conf with no secret set (the Quick start): the four
  programs share a generated InternalSecret in data/internal-secret (mode
  0600), so the services refuse callers without it, and the Auth service
  believes the gateway's X-Client-Address: the per-address login limit keys on
  the real client's address. 20 failed logins with random usernames from one
  address lock out that address only; alice, from another address, logs in.
  X-Forwarded-For is ignored (TrustedProxies is empty).
* Behind a trusted proxy (WebSocket.TrustedProxies) the limit keys on the
  X-Forwarded-For address the proxy adds.
* A program that would listen on (or call) a non-loopback address with an
  empty InternalSecret refuses to start: one line, exit 2.
* Standalone with no InternalSecret works, with a secret made in the process:
  its services refuse calls without it.
"""
from __future__ import annotations

import http.client
import json
import os
import secrets
import stat
import subprocess
import sys

import requests
import yaml

from harness import DELETE, PASSWORD, REPO, System, unique
from shipped_layout import ShippedLayout, tracebacks

MAX_ADDRESS_FAILURES = 20          # LoginLimit.MaxAddressFailures, the shipped default


def post_json(port: int, path: str, body: dict, source: str = "127.0.0.1",
              headers: dict | None = None) -> tuple[int, dict]:
    """POST from the given local address (any of 127.0.0.0/8 is this machine)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15, source_address=(source, 0))
    try:
        conn.request("POST", path, json.dumps(body),
                     {"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def fail_logins(port: int, count: int, source: str = "127.0.0.1", headers=None) -> list[int]:
    return [post_json(port, "/api/login", {"username": unique("nobody"), "password": "wrong-password"},
                      source, headers)[0] for _ in range(count)]


def test_shipped_layout_without_secrets_keys_the_login_limit_on_the_real_address(tmp_path):
    layout = ShippedLayout(tmp_path / "vm")          # no SKYEIM_* secret at all
    with layout.start(["prlimit", "--nofile=1024:20000", "--"]):     # a VM's limits (minfds needs them)
        port = layout.ports["ws"]
        secret_file = layout.root / "data" / "internal-secret"
        assert secret_file.exists()
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert len(secret_file.read_text().strip()) >= 32
        for program in ("message", "friend", "auth", "gateway"):
            assert "using the generated one in data/internal-secret" in layout.log_text(program), program
        # the services are not open to whoever reaches them
        for name in ("message", "friend", "auth"):
            r = requests.get(f"http://127.0.0.1:{layout.ports[name]}/v1/friends/1", timeout=10)
            assert r.status_code == 401, (name, r.status_code, r.text)

        alice = unique("alice")
        assert post_json(port, "/api/register", {"username": alice, "password": PASSWORD})[0] == 200
        # 20 failures from 127.0.0.1, each claiming another X-Forwarded-For (not believed)
        statuses = [post_json(port, "/api/login", {"username": unique("nobody"), "password": "wrong"},
                              headers={"X-Forwarded-For": f"198.51.100.{i}"})[0]
                    for i in range(MAX_ADDRESS_FAILURES)]
        assert statuses == [401] * MAX_ADDRESS_FAILURES
        # the limit still applies to that address ...
        status, body = post_json(port, "/api/login", {"username": alice, "password": PASSWORD})
        assert status == 429 and body["code"] == "rate_limited", (status, body)
        # ... and to that address only: alice, from another one, logs in
        status, body = post_json(port, "/api/login", {"username": alice, "password": PASSWORD},
                                 source="127.0.0.2")
        assert status == 200 and body["token"], (status, body)
    assert tracebacks(layout.all_logs()) == {}


def test_behind_a_trusted_proxy_the_limit_keys_on_x_forwarded_for(tmp_path):
    s = System(tmp_path / "proxy", standalone=False,
               ws={"WebSocket": {"TrustedProxies": ["127.0.0.1/32"]}, "InternalSecret": DELETE},
               message={"InternalSecret": DELETE}, friend={"InternalSecret": DELETE},
               auth={"InternalSecret": DELETE})
    env_file = tmp_path / "proxy" / "internal-secret"
    os.environ["SKYEIM_INTERNAL_SECRET_FILE"] = str(env_file)      # inherited by the programs
    try:
        s.start()
        alice = s.register_user("alice")
        client = {"X-Forwarded-For": "203.0.113.7"}
        assert fail_logins(s.port, MAX_ADDRESS_FAILURES, headers=client) == [401] * MAX_ADDRESS_FAILURES
        status, _ = post_json(s.port, "/api/login", {"username": alice.username, "password": PASSWORD},
                              headers=client)
        assert status == 429
        # the proxy itself, and another client behind it, are not locked out
        for headers in ({"X-Forwarded-For": "203.0.113.8"}, {}):
            status, body = post_json(s.port, "/api/login", {"username": alice.username, "password": PASSWORD},
                                     headers=headers)
            assert status == 200, (headers, status, body)
        assert env_file.exists()
    finally:
        os.environ.pop("SKYEIM_INTERNAL_SECRET_FILE", None)
        s.stop()


def run_program(argv: list[str], config: dict, path, timeout: float = 60) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYEIM_")}
    env["SKYEIM_INTERNAL_SECRET_FILE"] = str(path.parent / "internal-secret")
    return subprocess.run([sys.executable, *argv, "-f", str(path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_an_empty_internal_secret_off_loopback_refuses_to_start(tmp_path):
    service = {"Name": "friend", "Host": "0.0.0.0", "Port": 1,
               "DataSource": f"sqlite:///{tmp_path / 'friend.db'}", "InternalSecret": ""}
    done = run_program(["-m", "skyeim.friend"], service, tmp_path / "friend.yaml")
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "InternalSecret" in lines[0] and "0.0.0.0" in lines[0], done.stderr
    assert "Traceback" not in done.stderr

    gateway = {"Name": "ws-server", "Host": "127.0.0.1", "Port": 1,
               "Auth": {"AccessSecret": secrets.token_urlsafe(24)},
               "AuthRpc": {"Endpoints": ["10.9.8.7:10303"]}, "InternalSecret": ""}
    done = run_program(["wsserver.py"], gateway, tmp_path / "ws.yaml")
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "InternalSecret" in lines[0] and "10.9.8.7" in lines[0], done.stderr
    assert not (tmp_path / "internal-secret").exists()


def test_standalone_without_an_internal_secret_makes_one_in_the_process(tmp_path):
    s = System(tmp_path / "alone", ws={"InternalSecret": DELETE}, message={"InternalSecret": DELETE},
               friend={"InternalSecret": DELETE}, auth={"InternalSecret": DELETE})
    try:
        s.start()
        assert "using a random one made in this process" in s.log_text("gateway")
        alice, bob = s.register_user("alice"), s.register_user("bob")
        ca, cb = s.connect(alice), s.connect(bob)
        mid = ca.chat(bob, "no secrets set")
        ca.expect_ack(mid, "sent")
        assert cb.expect("chat")["msgId"] == mid
        for name in ("message", "friend", "auth"):
            r = requests.get(f"{s.service_url(name)}/v1/friends/1", timeout=10)
            assert r.status_code == 401, (name, r.status_code)
    finally:
        s.stop()
