"""Connection limits before the upgrade: WebSocket.MaxConnectionsPerIp (the
client address; X-Forwarded-For believed only from WebSocket.TrustedProxies)
and WebSocket.MaxConnectionsPerUser (sockets of one user, from the handshake
until the socket is gone). A refusal is plain HTTP 503 with
{"code": "too_many_connections", "message"} (docs/protocol.md), after the
contract's own checks (400, 403, 401, 503 overloaded).

The gateway-wide WebSocket.MaxConnections (503 overloaded) is covered in
test_handshake.py."""
from __future__ import annotations

import pytest

from harness import running_system, wait_until
from load_harness import scrape
from skyeim.config import ConfigError, WebSocketConfig, from_mapping
from skyeim.gateway.transport.limits import ConnectionLimits


def idle(s) -> None:
    """The sockets of earlier tests on this module's system are gone (their slots free)."""
    wait_until(lambda: scrape(s.metrics_url)["skyeim_ws_connections"] == 0, timeout=15)


def assert_too_many(answer) -> None:
    assert answer.status == 503, (answer.status, answer.body)
    assert answer.json["code"] == "too_many_connections", answer.json
    assert isinstance(answer.json["message"], str) and answer.json["message"]


@pytest.fixture(scope="module")
def per_ip(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("per_ip"),
                        ws={"WebSocket": {"MaxConnectionsPerIp": 3}}) as s:
        yield s


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("proxy"),
                        ws={"WebSocket": {"MaxConnectionsPerIp": 2,
                                          "TrustedProxies": ["127.0.0.0/8"]}}) as s:
        yield s


@pytest.fixture(scope="module")
def per_user(tmp_path_factory):
    # a replaced socket that does not answer its close frame is held CloseTimeout seconds
    with running_system(tmp_path_factory.mktemp("per_user"),
                        ws={"WebSocket": {"MaxConnectionsPerUser": 2, "CloseTimeout": 5}}) as s:
        yield s


def test_per_ip_limit_refuses_the_next_socket_from_that_address(per_ip):
    s = per_ip
    idle(s)
    users = [s.minted_user(f"ip{i}") for i in range(4)]
    clients = [s.connect(u) for u in users[:3]]
    before = scrape(s.metrics_url).get('skyeim_handshake_refusals_total{code="too_many_connections"}', 0)
    assert_too_many(s.handshake(users[3].token))
    after = scrape(s.metrics_url)['skyeim_handshake_refusals_total{code="too_many_connections"}']
    assert after == before + 1
    for c in clients:
        c.assert_open()
    clients[0].close()
    # the slot is free once the socket is gone
    wait_until(lambda: s.handshake(users[3].token).status == 101, timeout=10)


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(per_ip):
    s = per_ip
    idle(s)
    users = [s.minted_user(f"xff{i}") for i in range(4)]
    for u in users[:3]:
        s.connect(u, headers=[f"X-Forwarded-For: 10.9.0.{u.id % 250}"])
    assert_too_many(s.handshake(users[3].token, headers={"X-Forwarded-For": "10.1.2.3"}))


def test_unauthorized_is_checked_before_the_per_ip_limit(per_ip):
    s = per_ip
    idle(s)
    for i in range(3):
        s.connect(s.minted_user(f"order{i}"))
    answer = s.handshake("not-a-jwt")
    assert answer.status == 401 and answer.json["code"] == "unauthorized"


def test_behind_a_trusted_proxy_the_forwarded_address_counts(behind_proxy):
    s = behind_proxy
    idle(s)
    users = [s.minted_user(f"px{i}") for i in range(6)]
    for u in users[:2]:
        s.connect(u, headers=["X-Forwarded-For: 203.0.113.7"])
    assert_too_many(s.handshake(users[2].token, headers={"X-Forwarded-For": "203.0.113.7"}))
    # another client behind the same proxy is another address
    s.connect(users[3], headers=["X-Forwarded-For: 203.0.113.8"])
    # entries left of the last untrusted hop are the client's own words: they prove nothing
    assert_too_many(s.handshake(users[4].token,
                                headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}))
    # a trusted hop on the right is skipped
    assert_too_many(s.handshake(users[5].token,
                                headers={"X-Forwarded-For": "203.0.113.7, 127.0.0.5"}))


def test_per_user_limit_counts_a_replaced_socket_until_it_is_gone(per_user):
    s = per_user
    idle(s)
    user = s.minted_user("flood")
    first = s.connect(user)                  # then reads nothing: its close frame goes unanswered
    second = s.connect(user)                 # kicks the first, which is closing for CloseTimeout
    assert_too_many(s.handshake(user.token))
    second.assert_open()                     # a refused handshake kicks nobody
    other = s.minted_user("flood_other")     # other users are not affected
    s.connect(other).assert_open()
    assert first.expect_close(timeout=10) == 4001
    # once the replaced socket is gone, a new login is accepted (and replaces the second)
    wait_until(lambda: s.handshake(user.token).status == 101, timeout=15)


def test_limits_release_every_count():
    limits = ConnectionLimits(per_ip=2, per_user=2)
    for _ in range(100):
        assert limits.acquire("10.0.0.1", 7) is None
        limits.release("10.0.0.1", 7)
    assert limits.by_ip == {} and limits.by_user == {}


@pytest.mark.parametrize("raw,key", [({"MaxConnectionsPerIp": -1}, "WebSocket.MaxConnectionsPerIp"),
                                     ({"MaxConnectionsPerUser": -1}, "WebSocket.MaxConnectionsPerUser"),
                                     ({"TrustedProxies": ["not-an-ip"]}, "WebSocket.TrustedProxies")])
def test_bad_limit_config_names_the_key(raw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_mapping(WebSocketConfig, raw).validate("WebSocket")
