"""PROTOCOL.md section 4, "Heartbeat": protocol pings every PingInterval,
4004 only after PongTimeout of silence; application ping/pong frames."""
from __future__ import annotations

import time

import pytest

from harness import NoFrame, running_system


@pytest.fixture(scope="module")
def hb_system(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("hb"),
                        ws={"WebSocket": {"PingInterval": 1, "PongTimeout": 2}}) as s:
        yield s


def test_app_ping_is_answered_with_pong(system):
    alice = system.register_user("ping")
    ca = system.connect(alice)
    ca.send("ping", None)
    assert ca.expect("pong", skip=()) is None
    ca.assert_no_frame(0.3)


def test_each_app_ping_gets_one_pong(system):
    alice = system.register_user("pings")
    ca = system.connect(alice)
    for _ in range(5):
        ca.send("ping", None)
    assert [ca.expect("pong", skip=()) for _ in range(5)] == [None] * 5
    ca.assert_no_frame(0.3, skip=())


def test_protocol_ping_from_client_is_answered(system):
    alice = system.register_user("pping")
    ca = system.connect(alice)
    ca.ws.ping(b"are-you-there")
    ca.assert_no_frame(0.5)
    assert ca.pongs, "no protocol pong for the client's ping"


@pytest.mark.timeout(60)
def test_server_sends_protocol_pings_every_ping_interval(hb_system):
    alice = hb_system.register_user("hbp")
    ca = hb_system.connect(alice)           # answers every ping (auto_pong)
    ca.assert_no_frame(4.5)
    assert len(ca.pings) >= 3, f"{len(ca.pings)} pings in 4.5s with PingInterval 1"
    gaps = [b - a for a, b in zip(ca.pings, ca.pings[1:])]
    assert all(0.5 <= g <= 1.7 for g in gaps), gaps


@pytest.mark.timeout(60)
def test_client_answering_pings_stays_connected_past_pong_timeout(hb_system):
    alice = hb_system.register_user("hbk")
    ca = hb_system.connect(alice)
    ca.assert_no_frame(5.0)                 # 2.5 x PongTimeout, only answering pings
    assert not ca.closed
    ca.assert_open()


@pytest.mark.timeout(60)
def test_any_client_frame_counts_as_sign_of_life(hb_system):
    """Nothing (pong *or any frame*) for PongTimeout closes; app pings are frames."""
    alice = hb_system.register_user("hba")
    ca = hb_system.connect(alice, auto_pong=False)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        ca.send("ping", None)
        assert ca.expect("pong", timeout=2, skip=()) is None
        ca.assert_no_frame(0.5)
    assert ca.pings, "no protocol pings seen"
    assert not ca.closed


@pytest.mark.timeout(60)
def test_heartbeat_timeout_closes_4004_and_friends_see_offline(hb_system):
    alice, bob = hb_system.users("hbo_a", "hbo_b")
    hb_system.befriend(alice, bob)
    cb = hb_system.connect(bob)
    ca = hb_system.connect(alice, auto_pong=False)
    cb.expect("online")
    deadline = time.monotonic() + 10
    while True:          # wait for alice's close while bob keeps answering pings
        try:
            code = ca.expect_close(timeout=0.2)
            break
        except NoFrame:
            assert time.monotonic() < deadline, "alice was not closed"
            cb.assert_no_frame(0.05)
    assert code == 4004
    assert cb.expect("offline", timeout=5)["userId"] == alice.id
    cb.assert_open()


@pytest.mark.timeout(60)
def test_protocol_pings_from_the_client_count_as_sign_of_life(hb_system):
    """"Nothing (pong or any frame)": a client that never answers the server's
    pings but sends its own protocol pings is alive."""
    alice = hb_system.register_user("hbc")
    ca = hb_system.connect(alice, auto_pong=False)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        ca.ws.ping(b"me")
        ca.assert_no_frame(0.5)
    assert ca.pings, "no protocol pings seen"
    assert not ca.closed
