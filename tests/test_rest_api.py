"""PROTOCOL.md section 7: the client REST API on the gateway."""
from __future__ import annotations

import secrets
import time

import jwt
import pytest

from harness import PASSWORD, unique


def assert_error(r, status: int, code: str) -> None:
    assert r.status_code == status, f"expected {status} {code}, got {r.status_code} {r.text}"
    body = r.json()
    assert body.get("code") == code, body
    assert isinstance(body.get("message"), str), body


# ---------------------------------------------------------------------------
# register / login

def test_register_then_login(system):
    name = unique("reg")
    r = system.api("POST", "/api/register", json_body={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    user_id = r.json()["userId"]
    assert type(user_id) is int and user_id >= 1
    before = time.time()
    r = system.api("POST", "/api/login", json_body={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["userId"] == user_id
    assert type(body["expiresAt"]) is int
    # expiresAt is ms; AccessExpire is 3600 s in the harness
    assert abs(body["expiresAt"] - (before + 3600) * 1000) <= 10_000, body
    claims = jwt.decode(body["token"], system.secret, algorithms=["HS256"])
    assert claims["userId"] == user_id
    assert claims["exp"] * 1000 == body["expiresAt"]
    # and the token opens a socket
    assert system.connect(None, token=body["token"]).connected["userId"] == user_id


def test_usernames_are_unique_without_regard_to_case(system):
    name = unique("Case")
    r = system.api("POST", "/api/register", json_body={"username": name, "password": PASSWORD})
    assert r.status_code == 200
    uid = r.json()["userId"]
    r = system.api("POST", "/api/register", json_body={"username": name.upper(), "password": PASSWORD})
    assert_error(r, 409, "conflict")
    r = system.api("POST", "/api/login", json_body={"username": name.lower(), "password": PASSWORD})
    assert r.status_code == 200 and r.json()["userId"] == uid


@pytest.mark.parametrize("username", ["ab", "x" * 33, "has space", "bäd", "semi;colon", "", 123,
                                      None, "slash/name"],
                         ids=["2-chars", "33-chars", "space", "non-ascii", "semicolon", "empty",
                              "number", "null", "slash"])
def test_register_with_invalid_username_is_400(system, username):
    r = system.api("POST", "/api/register", json_body={"username": username, "password": PASSWORD})
    assert_error(r, 400, "bad_request")


@pytest.mark.parametrize("make_name", [
    lambda: "a" + secrets.token_hex(1),                 # 3 characters
    lambda: "A.b-C_9" + secrets.token_hex(4),           # every allowed kind
    lambda: unique("y").ljust(32, "z"),                 # 32 characters
], ids=["3-chars", "all-kinds", "32-chars"])
def test_register_accepts_valid_username_shapes(system, make_name):
    name = make_name()
    r = system.api("POST", "/api/register", json_body={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    r = system.api("POST", "/api/login", json_body={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("password", ["1234567", "p" * 129, "", 12345678, None],
                         ids=["7-chars", "129-chars", "empty", "number", "null"])
def test_register_with_invalid_password_is_400(system, password):
    r = system.api("POST", "/api/register", json_body={"username": unique("pw"), "password": password})
    assert_error(r, 400, "bad_request")


@pytest.mark.parametrize("password", ["12345678", "p" * 128, "pässwörd-ünicode"])
def test_register_accepts_passwords_of_8_to_128(system, password):
    name = unique("pwok")
    r = system.api("POST", "/api/register", json_body={"username": name, "password": password})
    assert r.status_code == 200, r.text
    r = system.api("POST", "/api/login", json_body={"username": name, "password": password})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("body", [None, [], "text", {}, {"username": "abcdef"}])
def test_register_with_bad_body_is_400(system, body):
    if body is None:
        r = system.api("POST", "/api/register", data="not json",
                       headers={"Content-Type": "application/json"})
    else:
        r = system.api("POST", "/api/register", json_body=body)
    assert_error(r, 400, "bad_request")


def test_login_with_wrong_password_or_unknown_user_is_401(system):
    user = system.register_user("login")
    r = system.api("POST", "/api/login", json_body={"username": user.username, "password": "wrong-password"})
    assert_error(r, 401, "unauthorized")
    r = system.api("POST", "/api/login", json_body={"username": unique("nobody"), "password": PASSWORD})
    assert_error(r, 401, "unauthorized")


def test_username_is_kept_as_typed(system):
    alice = system.register_user("MixedCase")
    bob = system.register_user("other")
    system.befriend(bob, alice)
    r = system.api("GET", "/api/friends", bob)
    assert [f["username"] for f in r.json()["friends"]] == [alice.username]


# ---------------------------------------------------------------------------
# friends

def friends_of(system, user) -> list[dict]:
    r = system.api("GET", "/api/friends", user)
    assert r.status_code == 200, r.text
    return r.json()["friends"]


def test_new_user_has_no_friends(system):
    assert friends_of(system, system.register_user("lonely")) == []


def test_add_friend_by_id_lists_both_ways_with_names_and_online(system):
    alice, bob, carol = system.users("fr_a", "fr_b", "fr_c")
    r = system.api("POST", "/api/friends", alice, json_body={"friendId": bob.id})
    assert r.status_code == 200 and r.json() == {"ok": True}
    system.api("POST", "/api/friends", alice, json_body={"friendId": carol.id})
    system.connect(bob)
    got = sorted(friends_of(system, alice), key=lambda f: f["userId"])
    assert got == sorted([{"userId": bob.id, "username": bob.username, "online": True},
                          {"userId": carol.id, "username": carol.username, "online": False}],
                         key=lambda f: f["userId"])
    assert friends_of(system, bob) == [{"userId": alice.id, "username": alice.username, "online": False}]


def test_add_friend_by_username_ignores_case(system):
    alice, bob = system.users("fru_a", "fru_b")
    r = system.api("POST", "/api/friends", alice, json_body={"username": bob.username.upper()})
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert [f["userId"] for f in friends_of(system, alice)] == [bob.id]
    assert [f["userId"] for f in friends_of(system, bob)] == [alice.id]


def test_add_friend_is_idempotent(system):
    alice, bob = system.users("fri_a", "fri_b")
    for _ in range(2):
        r = system.api("POST", "/api/friends", alice, json_body={"friendId": bob.id})
        assert r.status_code == 200
    r = system.api("POST", "/api/friends", bob, json_body={"friendId": alice.id})
    assert r.status_code == 200
    assert [f["userId"] for f in friends_of(system, alice)] == [bob.id]


def test_add_unknown_friend_is_404(system):
    alice = system.register_user("fr404")
    r = system.api("POST", "/api/friends", alice, json_body={"friendId": 2**62})
    assert_error(r, 404, "not_found")
    r = system.api("POST", "/api/friends", alice, json_body={"username": unique("ghost")})
    assert_error(r, 404, "not_found")
    assert friends_of(system, alice) == []


def test_befriending_oneself_is_400(system):
    alice = system.register_user("self")
    r = system.api("POST", "/api/friends", alice, json_body={"friendId": alice.id})
    assert_error(r, 400, "bad_request")
    r = system.api("POST", "/api/friends", alice, json_body={"username": alice.username})
    assert_error(r, 400, "bad_request")


@pytest.mark.parametrize("body", [{}, {"friendId": "2"}, {"friendId": 0}, {"friendId": True},
                                  {"friendId": 1.5}, {"username": 5}, [], None],
                         ids=["empty", "string-id", "zero", "bool", "float", "username-number",
                              "list", "not-json"])
def test_add_friend_with_bad_body_is_400(system, body):
    alice = system.register_user("frbad")
    if body is None:
        r = system.api("POST", "/api/friends", alice, data="{{",
                       headers={"Content-Type": "application/json"})
    else:
        r = system.api("POST", "/api/friends", alice, json_body=body)
    assert_error(r, 400, "bad_request")


def test_delete_friend_removes_both_directions_and_is_idempotent(system):
    alice, bob = system.users("frd_a", "frd_b")
    system.befriend(alice, bob)
    r = system.api("DELETE", f"/api/friends/{bob.id}", alice)
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert friends_of(system, alice) == []
    assert friends_of(system, bob) == []
    r = system.api("DELETE", f"/api/friends/{bob.id}", alice)
    assert r.status_code == 200 and r.json() == {"ok": True}


# ---------------------------------------------------------------------------
# messages (history)

@pytest.fixture
def history_pair(system):
    """alice sent bob 5 messages; bob received 3 live and read 2; 2 more sent while offline."""
    alice, bob = system.users("hist_a", "hist_b")
    ca, cb = system.connect(alice), system.connect(bob)
    ids = []
    for i in range(3):
        ids.append(ca.chat(bob, f"live {i}"))
        ca.expect_ack(ids[-1], "sent")
        ca.expect_ack(ids[-1], "delivered")
    cb.collect("chat", 3)
    cb.read(alice, ids[:2])
    ca.expect("read")
    cb.close()
    for i in range(2):
        ids.append(ca.chat(bob, f"offline {i}"))
        ca.expect_ack(ids[-1], "sent")
    return alice, bob, ids


def test_history_is_newest_first_with_statuses(system, history_pair):
    alice, bob, ids = history_pair
    body = system.history(alice, bob)
    assert body["hasMore"] is False
    msgs = body["messages"]
    assert [m["msgId"] for m in msgs] == ids[::-1]
    assert [m["seq"] for m in msgs] == [5, 4, 3, 2, 1]
    assert [m["status"] for m in msgs] == ["sent", "sent", "delivered", "read", "read"]
    for m in msgs:
        assert m["fromUserId"] == alice.id and m["toUserId"] == bob.id
        assert m["contentType"] == 1 and type(m["createdAt"]) is int
    # the same conversation from bob's side
    assert system.history(bob, alice)["messages"] == msgs


def test_history_paging_with_limit_and_before_seq(system, history_pair):
    alice, bob, ids = history_pair
    page1 = system.history(alice, bob, limit=2)
    assert [m["seq"] for m in page1["messages"]] == [5, 4] and page1["hasMore"] is True
    page2 = system.history(alice, bob, limit=2, beforeSeq=4)
    assert [m["seq"] for m in page2["messages"]] == [3, 2] and page2["hasMore"] is True
    page3 = system.history(alice, bob, limit=2, beforeSeq=2)
    assert [m["seq"] for m in page3["messages"]] == [1] and page3["hasMore"] is False
    assert system.history(alice, bob, beforeSeq=1) == {"messages": [], "hasMore": False}


def test_history_of_another_conversation_is_separate(system, history_pair):
    alice, bob, ids = history_pair
    carol = system.register_user("hist_c")
    assert system.history(alice, carol) == {"messages": [], "hasMore": False}
    assert system.history(carol, alice) == {"messages": [], "hasMore": False}


@pytest.mark.timeout(120)
def test_history_limit_defaults_to_50_and_is_capped_at_200(system):
    alice, bob = system.users("lim_a", "lim_b")
    system.seed_many(alice, bob, 210, prefix="lim")
    default = system.history(alice, bob)
    assert len(default["messages"]) == 50 and default["hasMore"] is True
    assert [m["seq"] for m in default["messages"]] == list(range(210, 160, -1))
    capped = system.history(alice, bob, limit=500)
    assert len(capped["messages"]) == 200 and capped["hasMore"] is True
    tail = system.history(alice, bob, limit=200, beforeSeq=11)
    assert [m["seq"] for m in tail["messages"]] == list(range(10, 0, -1))
    assert tail["hasMore"] is False


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1.5", "1e2", "²", "true"])
def test_history_with_invalid_limit_is_400(system, limit):
    alice, bob = system.users("limx_a", "limx_b")
    r = system.api("GET", "/api/messages", alice, params={"peerId": bob.id, "limit": limit})
    assert_error(r, 400, "bad_request")


@pytest.mark.parametrize("before_seq", ["abc", "-1", "1.5", "²"])
def test_history_with_invalid_before_seq_is_400(system, before_seq):
    alice, bob = system.users("bsx_a", "bsx_b")
    r = system.api("GET", "/api/messages", alice, params={"peerId": bob.id, "beforeSeq": before_seq})
    assert_error(r, 400, "bad_request")


@pytest.mark.parametrize("params", [{}, {"peerId": "abc"}, {"peerId": "0"}, {"peerId": "1.5"}],
                         ids=["missing", "text", "zero", "float"])
def test_history_with_invalid_peer_is_400(system, params):
    alice = system.register_user("peerx")
    r = system.api("GET", "/api/messages", alice, params=params)
    assert_error(r, 400, "bad_request")


# ---------------------------------------------------------------------------
# authentication of the API

ROUTES = [("GET", "/api/friends", None), ("POST", "/api/friends", {"friendId": 1}),
          ("DELETE", "/api/friends/1", None), ("GET", "/api/messages?peerId=1", None)]


@pytest.mark.parametrize("method,path,body", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_api_without_valid_bearer_is_401(system, method, path, body):
    user = system.register_user("noauth")
    kw = {} if body is None else {"json_body": body}
    assert_error(system.api(method, path, None, **kw), 401, "unauthorized")
    for bad in ["garbage", system.token_for(user.id, secret="wrong-secret"),
                system.token_for(user.id, exp=int(time.time()) - 120),
                system.token_for(user.id, alg="none")]:
        assert_error(system.api(method, path, bad, **kw), 401, "unauthorized")
    r = system.api(method, path, None, headers={"Authorization": f"Basic {user.token}"}, **kw)
    assert_error(r, 401, "unauthorized")


def test_health_endpoints(system):
    r = system.api("GET", "/healthz")
    assert r.status_code == 200
    r = system.api("GET", "/readyz")
    assert r.status_code == 200
