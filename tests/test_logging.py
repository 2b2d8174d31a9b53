"""Logs (docs/operations.md "Logs"): an access log without --debug in the gateway
and every service, ISO 8601 UTC times on every line, Log.Format json, and a
--debug without urllib3's connection-pool lines."""
from __future__ import annotations

import json
import re
import time

from harness import PYTHON

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
TEXT_LINE = re.compile(ISO_UTC.pattern + r" (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+ ")
ACCESS_HTTP = re.compile(r" INFO skyeim\.access (GET|POST|PUT|DELETE) (\S+) (\d{3}) (\d+\.\d)ms (\S+)$")
ACCESS_WS_CLOSE = re.compile(r" INFO skyeim\.access WS close /ws user=(\d+) code=(\d+) (\d+\.\d)ms ")


def _lines(system, name: str = "gateway") -> list[str]:
    return [line for line in system.log_text(name).splitlines() if line.strip()]


def _traffic(system):
    """HTTP to the gateway (and through it to each service), a WebSocket opened and closed."""
    alice, bob = system.users("log_a", "log_b")
    system.befriend(alice, bob)
    assert system.api("GET", "/api/friends?token=SECRET-IN-QUERY", alice).status_code == 200
    client = system.connect(alice)
    client.ping()                       # a frame: with --debug, a debug line
    client.expect("pong")
    client.close(1000)
    return alice, client


def _wait_for(system, pattern: re.Pattern, name: str = "gateway", timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in _lines(system, name):
            if (m := pattern.search(line)):
                return m
        time.sleep(0.1)
    raise AssertionError(f"no line like {pattern.pattern!r} in {name}'s log:\n"
                         + "\n".join(_lines(system, name)[-30:]))


def test_text_access_log_and_iso_utc_times_on_every_line_of_every_program(system_factory):
    system = system_factory(standalone=False)
    alice, _ = _traffic(system)
    # the gateway: a line per HTTP request, with status and duration; never the query string
    lines = _lines(system)
    http = [m for line in lines if (m := ACCESS_HTTP.search(line))]
    assert ("POST", "/api/login", "200") in {m.group(1, 2, 3) for m in http}, lines[-20:]
    assert ("GET", "/api/friends", "200") in {m.group(1, 2, 3) for m in http}
    assert "SECRET-IN-QUERY" not in system.log_text()
    # one line when the WebSocket opens and one when it closes, with its code and duration
    assert any(re.search(rf" INFO skyeim\.access WS open /ws user={alice.id} ", line) for line in lines)
    m = _wait_for(system, ACCESS_WS_CLOSE)
    assert (int(m.group(1)), int(m.group(2))) == (alice.id, 1000)
    # the services: a line per request the gateway made to them
    for name, path in (("auth", "/v1/tokens"), ("friend", "/v1/friends"), ("message", None)):
        svc = [m.group(1, 2, 3) for line in _lines(system, name) if (m := ACCESS_HTTP.search(line))]
        assert svc, f"{name}: no access lines"
        if path:
            assert ("POST", path, "200") in svc, svc
    # every line of every program starts with an ISO 8601 UTC time and a level
    system.stop()
    for name in ("gateway", "message", "friend", "auth"):
        for line in _lines(system, name):
            assert TEXT_LINE.match(line), f"{name}: {line!r}"


def test_json_format_is_one_object_per_line(system_factory):
    log = {"Log": {"Level": "info", "Format": "json"}}
    system = system_factory(standalone=False, ws=log, message=log, friend=log, auth=log)
    alice, _ = _traffic(system)
    _wait_for(system, re.compile(r'"event": "ws_close"'))
    system.stop()
    for name in ("gateway", "message", "friend", "auth"):
        records = []
        for line in _lines(system, name):
            obj = json.loads(line)               # every line is one JSON object
            assert {"ts", "level", "logger", "msg"} <= obj.keys(), line
            assert ISO_UTC.fullmatch(obj["ts"]), line
            records.append(obj)
        access = [r for r in records if r["logger"] == "skyeim.access"]
        assert access, name
        for r in access:
            if r["event"] == "http":
                assert isinstance(r["status"], int) and isinstance(r["duration_ms"], float)
                assert r["method"] in ("GET", "POST", "PUT", "DELETE") and r["path"].startswith("/")
    gw = [json.loads(line) for line in _lines(system)]
    login = [r for r in gw if r.get("event") == "http" and r["path"] == "/api/login"]
    assert login and login[0]["status"] == 200
    opened = [r for r in gw if r.get("event") == "ws_open"]
    closed = [r for r in gw if r.get("event") == "ws_close"]
    assert [r["user_id"] for r in opened] == [alice.id]
    assert [(r["user_id"], r["close_code"]) for r in closed] == [(alice.id, 1000)]
    assert closed[0]["duration_ms"] >= 0


def test_access_log_can_be_turned_off(system_factory):
    system = system_factory(ws={"Log": {"Level": "info", "Access": False}})
    system.users("log_off")
    assert not any(" skyeim.access " in line for line in _lines(system))


def test_debug_has_no_urllib3_connection_pool_lines(system_factory):
    system = system_factory(start=False)
    system._spawn("gateway", [PYTHON, "wsserver.py", "--standalone", "--debug",
                              "-f", str(system.paths["ws"])])
    system.wait_ready()
    _traffic(system)
    text = system.log_text()
    assert " DEBUG " in text                      # --debug is on
    noisy = [line for line in text.splitlines()
             if " urllib3." in line or "Starting new HTTP connection" in line]
    assert not noisy, noisy[:5]


def test_the_program_says_which_configuration_file_it_loaded(system):
    path = str(system.paths["ws"])
    assert any(f"configuration: {path}" in line for line in _lines(system))


def test_the_access_log_names_the_client_behind_a_trusted_proxy_only(system_factory):
    system = system_factory(ws={"WebSocket": {"TrustedProxies": ["127.0.0.1/32"]}})
    r = system.session.get(system.url + "/healthz", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10)
    assert r.status_code == 200
    _wait_for(system, re.compile(r" skyeim\.access GET /healthz 200 \d+\.\dms 203\.0\.113\.9$"))


def test_a_forwarded_address_from_an_untrusted_peer_is_not_logged(system):
    r = system.session.get(system.url + "/readyz", headers={"X-Forwarded-For": "198.51.100.7"}, timeout=10)
    assert r.status_code == 200
    _wait_for(system, re.compile(r" skyeim\.access GET /readyz 200 \d+\.\dms 127\.0\.0\.1$"))
    assert "198.51.100.7" not in system.log_text()
