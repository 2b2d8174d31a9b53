"""SQL injection: every text field of every endpoint, through the gateway and at the services.

Every query goes through SQLAlchemy Core with bound parameters, so an
injection string is data like any other: it is either stored and returned
byte-identical (chat content, passwords as far as login goes) or refused with
the contract's code (400 for a field whose form the contract fixes: usernames,
msgIds, ids, paging; 401/404 where the contract says so). Afterwards every
table is there, other users' data is unchanged, and the row counts are exactly
what the accepted requests explain.

Part 1 speaks to a standalone gateway (the client's surface: /api and the
socket); part 2 calls the three services directly, on SQLite and on
PostgreSQL (skipped without PostgreSQL unless SKYEIM_REQUIRE_SERVICES=1).
"""
from __future__ import annotations

import re
from collections import Counter
from urllib.parse import quote

import pytest
import requests
import sqlalchemy as sa

from harness import PASSWORD, running_system, unique
from service_harness import INTERNAL_SECRET, database_url, running_service

pytestmark = pytest.mark.timeout(240)

INJECTIONS = [
    "' OR 1=1 --",
    "' OR '1'='1",
    "'; DROP TABLE messages; --",
    "Robert'); DROP TABLE users;--",
    '"; DROP TABLE friendships; --',
    "1; DELETE FROM messages",
    "1 OR 1=1",
    "x' UNION SELECT password_hash, username FROM users --",
    "' || (SELECT username FROM users LIMIT 1) || '",
    "'; SELECT pg_sleep(5); --",
    "admin'--",
    "%s", "%(content)s", "%", "%%", "_", "$1", "?", ":content", "{0}",
    "\\", "\\'", '"', "'", "`", "\\x27",
    "\x00", "a\x00b", "'\x00; DROP TABLE users; --",
    "\u02bc OR 1=1 --",          # modifier letter apostrophe
    "\uff07 OR \uff071\uff07=\uff071",   # fullwidth apostrophes
    "\U0001f600'); DROP TABLE conversations; --",
    "line\u2028break\u2029; --",
    "/* comment */ OR 1=1",
]
# "_" alone is a legal msgId ([A-Za-z0-9_-]{1,64}): the others are not
BAD_MSG_IDS = [s for s in INJECTIONS if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", s)]
# each one long enough to be a password (8 to 128 characters)
PASSWORDS = [s if len(s) >= 8 else s + " padding" for s in INJECTIONS[:10] + INJECTIONS[26:31]]
HTTP_TIMEOUT = 10


def path_segment(s: str) -> str:
    return quote(s, safe="")


def expect_code(r: requests.Response, status: int, code: str, what: str) -> None:
    assert r.status_code == status, f"{what}: expected {status}, got {r.status_code} {r.text[:300]}"
    body = r.json()
    assert body.get("code") == code and isinstance(body.get("message"), str), f"{what}: {body!r}"


def refused_path(r: requests.Response, s: str, what: str) -> None:
    """A path segment is 400 -- or 404/405 when its decoded "/" changes the route."""
    if "/" in s:
        assert r.status_code in (400, 404, 405), f"{what}: {r.status_code} {r.text[:300]}"
    else:
        expect_code(r, 400, "bad_request", what)


# ===========================================================================
# Part 1: through the gateway (standalone, SQLite)

class Ledger:
    """What the accepted requests of this module should have left in the tables."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()


# Every injection string is tried as a wrong login: far more failures than the Auth
# service's login limit (LoginLimit) allows, which would answer 429 instead of 401.
NO_LOGIN_LIMIT = {"LoginLimit": {"MaxFailures": 100_000, "MaxAddressFailures": 100_000}}


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("test_sql_injection"), auth=NO_LOGIN_LIMIT) as s:
        yield s


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture(scope="module")
def victims(system, ledger):
    """Two users with a friendship and a conversation that nothing may touch."""
    alice, bob = system.users("victim_a", "victim_b")
    ledger.count["users"] += 2
    system.befriend(alice, bob)
    ledger.count["friendships"] += 2
    for i in range(3):
        system.seed_message(alice if i % 2 == 0 else bob, bob if i % 2 == 0 else alice,
                            f"victim message {i}")
        ledger.count["messages"] += 1
    ledger.count["conversations"] += 1
    snapshot = {"history": system.history(alice, bob), "friends_a": friends(system, alice),
                "friends_b": friends(system, bob)}
    return alice, bob, snapshot


def friends(system, user) -> list:
    r = system.api("GET", "/api/friends", user)
    assert r.status_code == 200, r.text
    return r.json()["friends"]


def test_injection_usernames_are_refused_at_register_and_unknown_at_login(system, victims):
    alice, bob, _ = victims
    for s in INJECTIONS + [alice.username + "' --", f"{alice.username}' OR 1=1 --"]:
        r = system.api("POST", "/api/register", json_body={"username": s, "password": PASSWORD})
        expect_code(r, 400, "bad_request", f"register {s!r}")
        r = system.api("POST", "/api/login", json_body={"username": s, "password": PASSWORD})
        expect_code(r, 401, "unauthorized", f"login {s!r}")   # "an unknown user alike"


def test_injection_passwords_never_log_in_as_someone_else(system, victims):
    alice, bob, _ = victims
    for s in INJECTIONS[:10]:
        r = system.api("POST", "/api/login", json_body={"username": alice.username, "password": s})
        expect_code(r, 401, "unauthorized", f"login as alice with {s!r}")


def test_injection_passwords_are_kept_exactly(system, ledger):
    """Such a password is legal (8 to 128 characters): it registers, logs in as
    typed, and a variant of it does not."""
    for s in PASSWORDS:
        name = unique("pw")
        r = system.api("POST", "/api/register", json_body={"username": name, "password": s})
        assert r.status_code == 200, f"register with password {s!r}: {r.status_code} {r.text}"
        ledger.count["users"] += 1
        user_id = r.json()["userId"]
        r = system.api("POST", "/api/login", json_body={"username": name, "password": s})
        assert r.status_code == 200 and r.json()["userId"] == user_id, f"{s!r}: {r.text}"
        r = system.api("POST", "/api/login", json_body={"username": name, "password": s + "'"})
        expect_code(r, 401, "unauthorized", f"login with {s + chr(39)!r}")


def test_friend_operations_with_injection_strings(system, victims):
    alice, bob, snapshot = victims
    for s in INJECTIONS:
        r = system.api("POST", "/api/friends", alice, json_body={"username": s})
        expect_code(r, 404, "not_found", f"befriend username {s!r}")   # no such user
        r = system.api("POST", "/api/friends", alice, json_body={"friendId": s})
        expect_code(r, 400, "bad_request", f"befriend friendId {s!r}")
        r = system.api("DELETE", f"/api/friends/{path_segment(s)}", alice)
        refused_path(r, s, f"unfriend {s!r}")
    assert friends(system, alice) == snapshot["friends_a"]
    assert friends(system, bob) == snapshot["friends_b"]


def test_chat_content_with_injection_strings_arrives_and_is_stored_byte_identical(system, ledger):
    sender, recipient = system.minted_user("inj_s"), system.minted_user("inj_r")
    cs, cr = system.connect(sender), system.connect(recipient)
    sent = []
    for i, s in enumerate(INJECTIONS):
        content_type = 1 if i % 3 else 2        # an image "URL" is stored as opaque text too
        mid = cs.chat(recipient, s, content_type=content_type)
        cs.expect_ack(mid, "sent")
        chat = cr.expect("chat")
        assert chat["msgId"] == mid and chat["content"] == s \
            and chat["contentType"] == content_type, f"{s!r} arrived as {chat!r}"
        cs.expect_ack(mid, "delivered")
        sent.append((mid, s))
    ledger.count["messages"] += len(sent)
    ledger.count["conversations"] += 1
    history = system.history(recipient, sender, limit=200)["messages"]
    assert [(m["msgId"], m["content"]) for m in reversed(history)] == sent


def test_msg_ids_with_injection_strings_are_bad_request_and_store_nothing(system):
    sender, recipient = system.minted_user("inj_m"), system.minted_user("inj_n")
    cs = system.connect(sender)
    for s in BAD_MSG_IDS:
        cs.chat(recipient, "hello", msg_id=s)
        cs.expect_error("bad_request", None)    # an invalid msgId is never echoed
        cs.read(recipient, [s])
        cs.expect_error("bad_request", None)
    cs.assert_open()
    assert system.history(sender, recipient)["messages"] == []


def test_history_parameters_with_injection_strings_are_400(system, victims):
    alice, bob, snapshot = victims
    for s in INJECTIONS:
        for params in ({"peerId": s}, {"peerId": bob.id, "beforeSeq": s},
                       {"peerId": bob.id, "limit": s}):
            r = system.api("GET", "/api/messages", alice, params=params)
            expect_code(r, 400, "bad_request", f"history {params!r}")
    assert system.history(alice, bob) == snapshot["history"]


def test_after_it_all_the_tables_are_intact_and_hold_exactly_what_was_accepted(system, victims,
                                                                              ledger):
    """(The module's last test: the ledger counts what the tests before it stored.)"""
    alice, bob, snapshot = victims
    assert system.history(alice, bob) == snapshot["history"]
    assert friends(system, alice) == snapshot["friends_a"]
    counts = {**db_counts(f"sqlite:///{system.tmp / 'auth.db'}", ["users"]),
              **db_counts(f"sqlite:///{system.tmp / 'friend.db'}", ["friendships"]),
              **db_counts(f"sqlite:///{system.tmp / 'message.db'}", ["messages", "conversations"])}
    assert counts == {t: ledger.count[t] for t in counts}, f"tables hold {counts}, expected " \
        f"{dict(ledger.count)}"


# ===========================================================================
# Part 2: the services directly, on SQLite and PostgreSQL

class Services:
    def __init__(self, auth, friend, message, urls: dict[str, str]):
        self.auth, self.friend, self.message, self.urls = auth, friend, message, urls

    @staticmethod
    def call(svc, method: str, path: str, body=None, **params) -> requests.Response:
        kw = {"params": params} if params else {}
        if body is not None:
            kw["json"] = body
        return svc.session.request(method, svc.url + path, timeout=HTTP_TIMEOUT, **kw)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def services(request, tmp_path_factory):
    backend = request.param
    workdir = tmp_path_factory.mktemp(f"inj-{backend}")
    with database_url(backend, workdir, "injauth") as auth_url, \
            database_url(backend, workdir, "injfriend") as friend_url, \
            database_url(backend, workdir, "injmsg") as msg_url:
        base = {"InternalSecret": INTERNAL_SECRET}
        with running_service("skyeim.auth", {**base, "Name": "auth", "DataSource": auth_url,
                                             "AccessSecret": "s" * 32, "AccessExpire": 3600,
                                             **NO_LOGIN_LIMIT},
                             workdir) as auth, \
                running_service("skyeim.friend", {**base, "Name": "friend",
                                                  "DataSource": friend_url}, workdir) as friend, \
                running_service("skyeim.message", {**base, "Name": "message",
                                                   "DataSource": msg_url}, workdir) as message:
            yield Services(auth, friend, message,
                           {"auth": auth_url, "friend": friend_url, "message": msg_url})


def db_counts(url: str, tables: list[str]) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {t: conn.execute(sa.select(sa.func.count()).select_from(sa.table(t)))
                    .scalar_one() for t in tables}
    finally:
        engine.dispose()


def test_services_keep_injection_strings_as_data_and_refuse_them_as_ids(services):
    s_ = services
    call = Services.call
    # the victims: two users, a friendship, a conversation
    ids = []
    for name in ("victim_a", "victim_b"):
        r = call(s_.auth, "POST", "/v1/users", {"username": unique(name), "password": PASSWORD})
        assert r.status_code == 200, r.text
        ids.append(r.json()["userId"])
    a, b = ids
    assert call(s_.friend, "POST", "/v1/friends", {"userId": a, "friendId": b}).status_code == 200
    victim = []
    for i in range(3):
        r = call(s_.message, "POST", "/v1/messages", {"msgId": f"v{i}", "fromUserId": a,
                                                      "toUserId": b, "content": f"victim {i}"})
        assert r.status_code == 200, r.text
        victim.append(r.json())
    victim_history = call(s_.message, "GET", "/v1/messages/history", userId=a, peerId=b).json()

    # Auth: usernames have a fixed form; lookups by such a name find nobody
    for s in INJECTIONS:
        expect_code(call(s_.auth, "POST", "/v1/users", {"username": s, "password": PASSWORD}),
                    400, "bad_request", f"register {s!r}")
        expect_code(call(s_.auth, "POST", "/v1/tokens", {"username": s, "password": PASSWORD}),
                    401, "unauthorized", f"token for {s!r}")
        r = call(s_.auth, "GET", "/v1/users", username=s)
        assert r.status_code == 200 and r.json() == {"users": []}, f"lookup {s!r}: {r.text}"
        expect_code(call(s_.auth, "GET", "/v1/users", ids=s), 400, "bad_request", f"ids={s!r}")
    # ... and a password is whatever the user typed
    for s in PASSWORDS[:4] + PASSWORDS[-3:]:
        name = unique("pw")
        r = call(s_.auth, "POST", "/v1/users", {"username": name, "password": s})
        assert r.status_code == 200, f"password {s!r}: {r.text}"
        r = call(s_.auth, "POST", "/v1/tokens", {"username": name, "password": s})
        assert r.status_code == 200, f"login with {s!r}: {r.text}"
        ids.append(r.json()["userId"])

    # Friend: ids are integers, in bodies and paths
    for s in INJECTIONS:
        for body in ({"userId": s, "friendId": b}, {"userId": a, "friendId": s}):
            expect_code(call(s_.friend, "POST", "/v1/friends", body), 400, "bad_request",
                        f"befriend {body!r}")
        refused_path(call(s_.friend, "GET", f"/v1/friends/{path_segment(s)}"), s, f"friends {s!r}")
        refused_path(call(s_.friend, "DELETE", f"/v1/friends/{a}/{path_segment(s)}"), s,
                     f"unfriend {s!r}")

    # Message: content is stored as sent; msgIds, ids, cursors and paging are refused
    stored = []
    for i, s in enumerate(INJECTIONS):
        r = call(s_.message, "POST", "/v1/messages", {"msgId": f"inj-{i}", "fromUserId": b,
                                                      "toUserId": a, "content": s})
        assert r.status_code == 200 and r.json()["content"] == s, f"{s!r}: {r.text[:300]}"
        stored.append((f"inj-{i}", s))
    for s in INJECTIONS:
        refusals = [("POST", "/v1/messages/delivered", {"userId": s, "messages": []}),
                    ("POST", "/v1/messages/read", {"userId": a, "peerId": s})]
        if s in BAD_MSG_IDS:
            refusals += [
                ("POST", "/v1/messages", {"msgId": s, "fromUserId": b, "toUserId": a,
                                          "content": "x"}),
                ("POST", "/v1/messages/delivered",
                 {"userId": a, "messages": [{"fromUserId": b, "msgId": s}]}),
                ("POST", "/v1/messages/read", {"userId": a, "peerId": b, "msgIds": [s]})]
        for method, path, body in refusals:
            expect_code(call(s_.message, method, path, body), 400, "bad_request",
                        f"{path} {body!r}")
        for params in ({"userId": s}, {"userId": a, "cursor": s}, {"userId": a, "limit": s}):
            expect_code(call(s_.message, "GET", "/v1/messages/unread", **params), 400,
                        "bad_request", f"unread {params!r}")
        for params in ({"userId": a, "peerId": s}, {"userId": a, "peerId": b, "beforeSeq": s},
                       {"userId": a, "peerId": b, "limit": s}):
            expect_code(call(s_.message, "GET", "/v1/messages/history", **params), 400,
                        "bad_request", f"history {params!r}")

    # every stored content comes back byte-identical, through history and the unread push
    history = call(s_.message, "GET", "/v1/messages/history", userId=a, peerId=b, limit=200).json()
    mine = [(m["msgId"], m["content"]) for m in reversed(history["messages"])
            if m["msgId"].startswith("inj-")]
    assert mine == stored
    unread = call(s_.message, "GET", "/v1/messages/unread", userId=a, limit=200).json()
    assert [(m["msgId"], m["content"]) for m in unread["messages"]
            if m["msgId"].startswith("inj-")] == stored

    # the victims' data is untouched, and the tables hold exactly what was accepted
    assert call(s_.friend, "GET", f"/v1/friends/{a}").json() == {"friends": [b]}
    after = call(s_.message, "GET", "/v1/messages/history", userId=a, peerId=b).json()
    assert [m for m in after["messages"] if m["msgId"].startswith("v")] \
        == [m for m in victim_history["messages"]]
    assert db_counts(s_.urls["auth"], ["users"]) == {"users": len(ids)}
    assert db_counts(s_.urls["friend"], ["friendships"]) == {"friendships": 2}
    assert db_counts(s_.urls["message"], ["messages", "conversations"]) \
        == {"messages": len(victim) + len(stored), "conversations": 1}
