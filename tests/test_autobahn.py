"""WebSocket framing conformance: the echo route (WebSocket.EchoPath) and Autobahn|Testsuite.

The echo route is off by default; when on, it serves an unauthenticated echo
through the same transport as /ws (same MaxMessageSize, close codes, capacity).
Autobahn's fuzzingclient, cases 1 to 10 (12 and 13 are compression, which the
gateway does not implement), checks the framing layer through it: no case may
be FAILED, and the 9.* performance cases must finish within Autobahn's limits.
"""
from __future__ import annotations

import collections
import time

import pytest

from autobahn_harness import (SetupFailed, autobahn_venv, case_key, find_python27,
                              run_fuzzingclient)
from harness import OPCODE_BINARY, OPCODE_TEXT, REQUIRE_SERVICES, Client, running_system

ECHO = "/echo"
MAX = 1024


def open_echo(system, path: str = ECHO) -> Client:
    """A WebSocket on the echo route: no token, no `connected` frame."""
    return Client(system.open_ws(path=path), None, label="echo client")


def echoed(client: Client, timeout: float = 5.0) -> tuple[int, bytes]:
    return client._next_message(time.monotonic() + timeout)


@pytest.fixture(scope="module")
def echo_system(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("echo"),
                        ws={"WebSocket": {"EchoPath": ECHO, "MaxMessageSize": MAX}}) as s:
        yield s


# ---------------------------------------------------------------------------
# The echo route

def test_echo_path_is_off_by_default(system):
    assert system.handshake(path=ECHO).status == 404
    assert system.handshake(path=ECHO, upgrade=False).status == 404


def test_echo_sends_back_text_and_binary_as_received_without_a_token(echo_system):
    c = open_echo(echo_system)
    c.send_raw("héllo ✓", OPCODE_TEXT)
    assert echoed(c) == (OPCODE_TEXT, "héllo ✓".encode())
    c.send_raw(bytes(range(256)), OPCODE_BINARY)
    assert echoed(c) == (OPCODE_BINARY, bytes(range(256)))
    c.send_fragments([b"frag", b"mented", b""], OPCODE_BINARY)
    assert echoed(c) == (OPCODE_BINARY, b"fragmented")


def test_echo_path_without_an_upgrade_is_400_not_websocket(echo_system):
    r = echo_system.handshake(path=ECHO, upgrade=False)
    assert r.status == 400 and r.json["code"] == "not_websocket"


def test_over_size_message_on_echo_closes_1009_as_on_ws(echo_system):
    s = echo_system
    c = open_echo(s)
    c.send_raw("x" * MAX, OPCODE_TEXT)            # exactly the limit: fine
    assert echoed(c) == (OPCODE_TEXT, b"x" * MAX)
    c.send_raw("x" * (MAX + 1), OPCODE_TEXT)
    assert c.expect_close() == 1009
    chat = s.connect(s.minted_user("big"))
    chat.send_raw("x" * (MAX + 1), OPCODE_TEXT)
    assert chat.expect_close() == 1009


def test_unmasked_frame_on_echo_closes_1002(echo_system):
    c = open_echo(echo_system)
    c.ws.sock.sendall(b"\x81\x02hi")                # FIN text, length 2, no mask bit
    assert c.expect_close() == 1002


def test_echo_connections_count_against_max_connections(system_factory):
    s = system_factory(ws={"WebSocket": {"EchoPath": ECHO, "MaxConnections": 2}})
    a, b = open_echo(s), open_echo(s)                 # MaxConnections: 2
    for c in (a, b):                                  # both accepted and served
        c.send_raw("here", OPCODE_TEXT)
        assert echoed(c) == (OPCODE_TEXT, b"here")
    r = s.handshake(path=ECHO)
    assert r.status == 503 and r.json["code"] == "overloaded"
    assert s.handshake(s.minted_user("full").token).status == 503
    a.close()
    deadline = time.monotonic() + 10                  # the gateway sees a's close shortly
    while (status := s.handshake(path=ECHO).status) != 101 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status == 101


def test_silent_echo_client_is_closed_4004_after_pong_timeout(system_factory):
    s = system_factory(ws={"WebSocket": {"EchoPath": ECHO, "PingInterval": 1, "PongTimeout": 2}})
    c = open_echo(s)
    c.send_raw("then silence", OPCODE_TEXT)
    assert echoed(c) == (OPCODE_TEXT, b"then silence")
    assert c.expect_close(timeout=15) == 4004


def test_graceful_stop_closes_echo_connections_1001(system_factory):
    s = system_factory(ws={"WebSocket": {"EchoPath": ECHO, "ShutdownTimeout": 5}})
    c = open_echo(s)
    c.send_raw("before", OPCODE_TEXT)
    assert echoed(c) == (OPCODE_TEXT, b"before")
    s.signal_gateway()
    assert c.expect_close(timeout=10) == 1001
    assert s.wait_exit(timeout=15) == 0


def test_start_up_warns_that_the_echo_route_is_on(echo_system):
    assert f"WebSocket.EchoPath is on: {ECHO}" in echo_system.log_text()


# ---------------------------------------------------------------------------
# Autobahn|Testsuite fuzzingclient, cases 1 to 10

# every case of sections 1 to 10 in autobahntestsuite 25.10.1 (pinned)
AUTOBAHN_CASES = 301
# the cases whose outcome Autobahn only records (its own "informational" cases)
INFORMATIONAL = {"7.1.6", "7.13.1", "7.13.2"}


@pytest.fixture(scope="module")
def wstest_venv():
    python27 = find_python27()
    if python27 is None:
        reason = ("Autobahn|Testsuite needs Python 2.7 (pyenv's 2.7.18 or SKYEIM_PYTHON27); "
                  "none found")
        if REQUIRE_SERVICES:
            pytest.fail(reason + " and SKYEIM_REQUIRE_SERVICES=1")
        pytest.skip(reason)
    t0 = time.monotonic()
    try:
        venv = autobahn_venv(python27)
    except SetupFailed as e:
        pytest.fail(f"could not build the Autobahn virtualenv: {e}")
    print(f"\nautobahn venv {venv} ready in {time.monotonic() - t0:.1f}s")
    return venv


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_autobahn_fuzzingclient_cases_1_to_10_have_no_failure(wstest_venv, system_factory,
                                                             tmp_path):
    # MaxMessageSize fits case 9's 16 MiB messages; the rest is the default /ws stack
    s = system_factory(ws={"WebSocket": {"EchoPath": "/autobahn", "MaxMessageSize": 16 << 20}})
    results, seconds, output = run_fuzzingclient(
        wstest_venv, f"ws://{s.host}:{s.port}/autobahn", tmp_path,
        cases=[f"{n}.*" for n in range(1, 11)], exclude=["12.*", "13.*"], timeout=900)

    behaviors = collections.Counter(r["behavior"] for r in results.values())
    closes = collections.Counter(r["behaviorClose"] for r in results.values())
    slowest = sorted(results, key=lambda c: -results[c]["duration"])[:5]
    print(f"\nAutobahn fuzzingclient 1-10: {len(results)} cases in {seconds:.1f}s; "
          f"behavior {dict(behaviors)}; behaviorClose {dict(closes)}; slowest (ms): "
          + ", ".join(f"{c}={results[c]['duration']}" for c in slowest))
    not_ok = {c: r for c, r in results.items() if r["behavior"] != "OK"}
    for case in sorted(not_ok, key=case_key):
        print(f"  {case}: {not_ok[case]['behavior']} / {not_ok[case]['behaviorClose']}")

    assert len(results) == AUTOBAHN_CASES, sorted(results, key=case_key)
    assert {case_key(c)[0] for c in results} == set(range(1, 11)) - {8}   # 8 has no cases
    failed = sorted((c for c, r in results.items()
                     if "FAILED" in (r["behavior"], r["behaviorClose"])), key=case_key)
    assert not failed, f"Autobahn cases FAILED: {failed} (reports in {tmp_path / 'reports'})"
    assert behaviors["UNIMPLEMENTED"] == 0
    # 9.*: 16 MiB messages and 1-byte to 4 MiB fragments, within Autobahn's time limits
    nine = {c: (r["behavior"], r["behaviorClose"]) for c, r in results.items() if c.startswith("9.")}
    assert nine and all(v == ("OK", "OK") for v in nine.values()), nine
    assert {c for c, r in results.items() if r["behavior"] == "INFORMATIONAL"} == INFORMATIONAL
    assert "Running test case ID 10.1.1" in output
