"""PROTOCOL.md section 1: connecting, and handshakes refused before the upgrade
(400 not_websocket, 403 forbidden_origin, 401 unauthorized, 503 overloaded)."""
from __future__ import annotations

import time

import pytest
import websocket

from harness import DELETE, running_system, wait_until

MAX_USER_ID = 2**63 - 1


def assert_refused(answer, status: int, code: str) -> None:
    """Refused as plain HTTP, before any upgrade, with {"code", "message"}."""
    assert answer.status == status, f"expected {status} {code}, got {answer.status} {answer.body[:300]!r}"
    assert answer.headers.get("upgrade", "").lower() != "websocket"
    assert "sec-websocket-accept" not in answer.headers
    body = answer.json
    assert isinstance(body, dict), body
    assert body.get("code") == code, f"expected code {code!r}, got {body!r}"
    assert isinstance(body.get("message"), str), body


def assert_upgraded(answer) -> None:
    assert answer.status == 101, f"expected 101, got {answer.status} {answer.body[:300]!r}"
    assert answer.headers.get("upgrade", "").lower() == "websocket"
    assert "sec-websocket-accept" in answer.headers


@pytest.fixture
def user(system):
    return system.minted_user("hs")


# ---------------------------------------------------------------------------
# 400 not_websocket

def test_plain_get_to_ws_is_400_not_websocket(system, user):
    answer = system.handshake(user.token, upgrade=False)
    assert_refused(answer, 400, "not_websocket")


@pytest.mark.parametrize("headers", [
    {"Upgrade": None},
    {"Upgrade": "h2c"},
    {"Connection": "keep-alive"},
    {"Sec-WebSocket-Key": None},
    {"Sec-WebSocket-Key": "not-a-16-byte-key"},
    {"Sec-WebSocket-Version": None},
    {"Sec-WebSocket-Version": "12"},
], ids=["no-upgrade", "upgrade-h2c", "connection-keepalive", "no-key", "bad-key",
        "no-version", "version-12"])
def test_invalid_upgrade_is_400_not_websocket(system, user, headers):
    answer = system.handshake(user.token, headers=headers)
    assert_refused(answer, 400, "not_websocket")


def test_post_upgrade_is_400_not_websocket(system, user):
    answer = system.handshake(user.token, method="POST", headers={"Content-Length": "0"})
    assert_refused(answer, 400, "not_websocket")


def test_not_websocket_is_checked_before_the_token(system):
    answer = system.handshake(None, upgrade=False)
    assert_refused(answer, 400, "not_websocket")


def test_valid_upgrade_with_valid_token_is_101(system, user):
    assert_upgraded(system.handshake(user.token))


# ---------------------------------------------------------------------------
# 401 unauthorized

def _tokens():
    """(id, builder(system, user) -> token or None)."""
    now = lambda: int(time.time())  # noqa: E731
    return [
        ("missing", lambda s, u: None),
        ("empty", lambda s, u: ""),
        ("garbage", lambda s, u: "not-a-jwt"),
        ("three-garbage-parts", lambda s, u: "aaa.bbb.ccc"),
        ("truncated", lambda s, u: u.token[:-8]),
        ("bad-signature", lambda s, u: s.token_for(u.id, secret="some-other-secret")),
        ("expired", lambda s, u: s.token_for(u.id, exp=now() - 120)),
        ("alg-none", lambda s, u: s.token_for(u.id, alg="none")),
        ("alg-RS256", lambda s, u: s.token_for(u.id, alg="RS256")),
        ("alg-HS512", lambda s, u: s.token_for(u.id, alg="HS512")),
        ("alg-HS384", lambda s, u: s.token_for(u.id, alg="HS384")),
        ("no-exp", lambda s, u: s.token_for(u.id, exp=DELETE)),
        ("userId-missing", lambda s, u: s.token_for(DELETE)),
        ("userId-string", lambda s, u: s.token_for(str(u.id))),
        ("userId-float", lambda s, u: s.token_for(float(u.id))),
        ("userId-true", lambda s, u: s.token_for(True)),
        ("userId-null", lambda s, u: s.token_for(None)),
        ("userId-zero", lambda s, u: s.token_for(0)),
        ("userId-negative", lambda s, u: s.token_for(-1)),
        ("userId-2^63", lambda s, u: s.token_for(2**63)),
        ("userId-list", lambda s, u: s.token_for([u.id])),
    ]


BAD_TOKEN_CASES = [pytest.param(make, via, id=f"{via}-{name}")
                   for via in ("query", "header") for name, make in _tokens()
                   if not (via == "header" and name == "missing")]


@pytest.mark.parametrize("make_token,via", BAD_TOKEN_CASES)
def test_bad_token_is_401_unauthorized(system, user, make_token, via):
    token = make_token(system, user)
    answer = system.handshake(token, via=via)
    assert_refused(answer, 401, "unauthorized")


def test_bearer_header_with_another_scheme_is_401(system, user):
    answer = system.handshake(None, headers={"Authorization": f"Basic {user.token}"})
    assert_refused(answer, 401, "unauthorized")


def test_websocket_client_sees_401_for_bad_token(system, user):
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        system.open_ws(system.token_for(user.id, secret="wrong"))
    assert e.value.status_code == 401


def test_token_in_authorization_header_connects(system, user):
    client = system.connect(user, via="header")
    assert client.connected["userId"] == user.id


def test_minted_token_with_valid_claims_connects(system, user):
    client = system.connect(user, token=system.token_for(user.id, iat=DELETE))
    assert client.connected["userId"] == user.id


def test_largest_user_id_is_accepted(system):
    """User ids go up to 2^63-1 and stay exact JSON integers."""
    client = system.connect(None, token=system.token_for(MAX_USER_ID))
    assert client.connected["userId"] == MAX_USER_ID
    assert type(client.connected["userId"]) is int


def test_header_wins_over_query(system):
    a, b = system.users("hq_a", "hq_b")
    # both valid: the header's user is the one connected
    client = system.connect(None, token=b.token, via="query",
                            headers=[f"Authorization: Bearer {a.token}"])
    assert client.connected["userId"] == a.id


def test_invalid_header_token_is_not_rescued_by_valid_query_token(system, user):
    answer = system.handshake(user.token, via="query",
                              headers={"Authorization": "Bearer not-a-jwt"})
    assert_refused(answer, 401, "unauthorized")


def test_valid_header_token_wins_over_invalid_query_token(system, user):
    answer = system.handshake("not-a-jwt", via="query",
                              headers={"Authorization": f"Bearer {user.token}"})
    assert_upgraded(answer)


# ---------------------------------------------------------------------------
# 403 forbidden_origin

ALLOWED = ["https://app.example.com", "http://localhost:8080"]


@pytest.fixture(scope="module")
def origin_system(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("origins"),
                        ws={"WebSocket": {"AllowedOrigins": ALLOWED}}) as s:
        yield s


@pytest.fixture(scope="module")
def star_system(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("origin-star"),
                        ws={"WebSocket": {"AllowedOrigins": ["*"]}}) as s:
        yield s


@pytest.mark.parametrize("origin", ALLOWED)
def test_listed_origin_is_allowed(origin_system, origin):
    u = origin_system.register_user("orig")
    assert_upgraded(origin_system.handshake(u.token, headers={"Origin": origin}))


@pytest.mark.parametrize("origin", [
    "https://evil.example.com",
    "http://app.example.com",            # other scheme
    "https://app.example.com:8443",      # other port
    "https://app.example.com.evil.com",  # suffix trick
    "https://sub.app.example.com",
    "http://localhost:8081",
    "http://localhost",
    "null",
])
def test_unlisted_origin_is_403_forbidden_origin(origin_system, origin):
    u = origin_system.register_user("orig")
    answer = origin_system.handshake(u.token, headers={"Origin": origin})
    assert_refused(answer, 403, "forbidden_origin")


def test_no_origin_header_is_allowed(origin_system):
    u = origin_system.register_user("orig")
    assert_upgraded(origin_system.handshake(u.token))
    client = origin_system.connect(u)          # websocket-client without Origin
    assert client.connected["userId"] == u.id


def test_allowed_origin_connects_with_websocket_client(origin_system):
    u = origin_system.register_user("orig")
    client = origin_system.connect(u, origin="http://localhost:8080")
    assert client.connected["userId"] == u.id


def test_forbidden_origin_is_checked_before_the_token(origin_system):
    answer = origin_system.handshake("not-a-jwt", headers={"Origin": "https://evil.example.com"})
    assert_refused(answer, 403, "forbidden_origin")
    answer = origin_system.handshake(None, headers={"Origin": "https://evil.example.com"})
    assert_refused(answer, 403, "forbidden_origin")


def test_not_websocket_is_checked_before_the_origin(origin_system):
    answer = origin_system.handshake(None, upgrade=False,
                                     headers={"Origin": "https://evil.example.com"})
    assert_refused(answer, 400, "not_websocket")


def test_listed_origin_still_needs_a_valid_token(origin_system):
    answer = origin_system.handshake("not-a-jwt", headers={"Origin": ALLOWED[0]})
    assert_refused(answer, 401, "unauthorized")


@pytest.mark.parametrize("origin", ["https://anything.example", "http://localhost:1", "null"])
def test_star_allows_every_origin(star_system, origin):
    u = star_system.register_user("star")
    assert_upgraded(star_system.handshake(u.token, headers={"Origin": origin}))


def test_empty_allowed_origins_allows_every_origin(system, user):
    assert_upgraded(system.handshake(user.token, headers={"Origin": "https://evil.example.com"}))


# ---------------------------------------------------------------------------
# 503 overloaded

def connect_when_free(system, user):
    """Connect, waiting (bounded) for slots that earlier tests' clients still hold."""
    def attempt():
        try:
            return system.connect(user)
        except websocket.WebSocketBadStatusException as e:
            assert e.status_code == 503, e
            return None
    return wait_until(attempt, timeout=5, interval=0.1, message="no free slot")


@pytest.fixture(scope="module")
def small_system(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("maxconn"),
                        ws={"WebSocket": {"MaxConnections": 2}}) as s:
        yield s


def test_handshake_over_max_connections_is_503_overloaded(small_system):
    a, b, c = small_system.users("mc_a", "mc_b", "mc_c")
    connect_when_free(small_system, a)
    connect_when_free(small_system, b)
    answer = small_system.handshake(c.token)
    assert_refused(answer, 503, "overloaded")
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        small_system.open_ws(c.token)
    assert e.value.status_code == 503


def test_relogin_at_max_connections_counts_as_new_socket(small_system):
    a, b = small_system.users("mc_a", "mc_b")
    ca = connect_when_free(small_system, a)
    connect_when_free(small_system, b)
    answer = small_system.handshake(a.token)
    assert_refused(answer, 503, "overloaded")
    # the refused re-login did not kick the live connection
    ca.assert_open()


def test_unauthorized_is_checked_before_overloaded(small_system):
    a, b = small_system.users("mc_a", "mc_b")
    connect_when_free(small_system, a)
    connect_when_free(small_system, b)
    assert_refused(small_system.handshake("not-a-jwt"), 401, "unauthorized")


def test_closed_connection_frees_its_slot(small_system):
    a, b, c = small_system.users("mc_a", "mc_b", "mc_c")
    ca = connect_when_free(small_system, a)
    connect_when_free(small_system, b)
    assert_refused(small_system.handshake(c.token), 503, "overloaded")
    ca.close()
    client = connect_when_free(small_system, c)
    assert client.connected["userId"] == c.id



def test_token_with_iat_in_the_future_or_an_aud_claim_is_accepted(system, user):
    """Only userId and exp are the contract's claims: clock skew between the Auth
    service and a gateway (iat a little ahead) or an extra aud must not refuse it."""
    future_iat = system.token_for(user.id, iat=int(time.time()) + 30)
    with_aud = system.token_for(user.id, extra={"aud": "somebody"})
    for token in (future_iat, with_aud):
        assert system.handshake(token).status == 101


def test_an_empty_bearer_header_still_wins_over_the_query(system, user):
    answer = system.handshake(user.token, headers={"Authorization": "Bearer "})
    assert_refused(answer, 401, "unauthorized")
