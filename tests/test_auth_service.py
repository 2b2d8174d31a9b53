"""The Auth service (PROTOCOL.md section 6), as a real process, on SQLite and PostgreSQL."""
from __future__ import annotations

import itertools
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests

from service_harness import INTERNAL_SECRET, database_url, running_service
from skyeim import tokens
from skyeim.db import now_ms

ACCESS_SECRET = "test-access-secret-of-at-least-32-bytes"
ACCESS_EXPIRE = 3600
PASSWORD = "correct horse battery"
_names = itertools.count(1)


def fresh_name(prefix: str = "user") -> str:
    """A username no other test has taken, so tests stay independent in one database."""
    return f"{prefix}{next(_names)}_{int(time.time() * 1000) % 100000}"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"auth-{request.param}")
    config = {"Name": "auth", "InternalSecret": INTERNAL_SECRET,
              "AccessSecret": ACCESS_SECRET, "AccessExpire": ACCESS_EXPIRE,
              # these tests fail logins from one address on purpose; the limit's
              # own tests (below) run a service of their own
              "LoginLimit": {"MaxAddressFailures": 10000}}
    with database_url(request.param, workdir, "auth") as url, \
            running_service("skyeim.auth", {**config, "DataSource": url}, workdir) as svc:
        yield svc


def register(service, username, password=PASSWORD) -> requests.Response:
    return service.session.post(f"{service.url}/v1/users",
                                json={"username": username, "password": password})


def registered(service, username=None, password=PASSWORD) -> int:
    r = register(service, username or fresh_name(), password)
    assert r.status_code == 200, r.text
    return r.json()["userId"]


def login(service, username, password=PASSWORD) -> requests.Response:
    return service.session.post(f"{service.url}/v1/tokens",
                                json={"username": username, "password": password})


def lookup(service, **params) -> requests.Response:
    return service.session.get(f"{service.url}/v1/users", params=params)


def assert_bad_request(r: requests.Response) -> None:
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "bad_request"


def assert_no_password_material(r: requests.Response, password: str = PASSWORD) -> None:
    """No key naming a password or hash, no hash string, no password, anywhere in the body."""
    assert password not in r.text and "scrypt" not in r.text and "pbkdf2" not in r.text, r.text

    def walk(value):
        if isinstance(value, dict):
            for key, item in value.items():
                assert "password" not in key.lower() and "hash" not in key.lower(), r.text
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
    walk(r.json())


# -- registration ------------------------------------------------------------

def test_register_returns_a_new_integer_user_id(service):
    r = register(service, fresh_name())
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"userId"}
    first = r.json()["userId"]
    assert tokens.is_user_id(first)
    second = registered(service)
    assert tokens.is_user_id(second) and second != first
    assert_no_password_material(r)


@pytest.mark.parametrize("name", ["Ab3", "L" + "o" * 30 + "g"], ids=["3", "32"])
def test_usernames_of_3_and_32_characters_are_accepted(service, name):
    assert register(service, name).status_code == 200
    assert lookup(service, username=name).json()["users"][0]["username"] == name


@pytest.mark.parametrize("length", [0, 2, 33, 100])
def test_usernames_shorter_than_3_or_longer_than_32_are_400(service, length):
    assert_bad_request(register(service, ("ab" + "c" * 100)[:length]))


@pytest.mark.parametrize("name", ["ab c", "abc!", "ab@cd", "h\u00e9llo", "abc/", "abc\n",
                                  "\u0430bcd", "abc\u0000", "ab\u200bcd", "a+b-c"])
def test_usernames_with_other_characters_are_400(service, name):
    assert_bad_request(register(service, name))


def test_all_allowed_characters_are_accepted(service):
    stamp = fresh_name("")[-8:]
    assert register(service, f"Az09_.-{stamp}").status_code == 200


@pytest.mark.parametrize("body", [
    {"username": 12345, "password": PASSWORD},
    {"username": None, "password": PASSWORD},
    {"username": ["alice"], "password": PASSWORD},
    {"username": True, "password": PASSWORD},
    {"password": PASSWORD},
    {"username": "typed_ok", "password": 12345678},
    {"username": "typed_ok", "password": None},
    {"username": "typed_ok", "password": True},
    {"username": "typed_ok", "password": {"p": PASSWORD}},
    {"username": "typed_ok"},
], ids=repr)
def test_non_string_credentials_are_400(service, body):
    assert_bad_request(service.session.post(f"{service.url}/v1/users", json=body))
    assert_bad_request(service.session.post(f"{service.url}/v1/tokens", json=body))


@pytest.mark.parametrize("body", [b"not json", b"[]", b"null", b"\"alice\""])
def test_a_body_that_is_not_a_json_object_is_400(service, body):
    for path in ("/v1/users", "/v1/tokens"):
        assert_bad_request(service.session.post(f"{service.url}{path}", data=body,
                                                headers={"Content-Type": "application/json"}))


@pytest.mark.parametrize("password", ["a" * 8, "a" * 128, "\U0001f600" * 8, "\U0001f600" * 128,
                                      "\u00e9" * 128, " " * 8])
def test_passwords_of_8_to_128_code_points_are_accepted(service, password):
    name = fresh_name()
    assert register(service, name, password).status_code == 200
    assert login(service, name, password).status_code == 200


@pytest.mark.parametrize("password", ["", "a" * 7, "a" * 129, "\U0001f600" * 7, "\U0001f600" * 129])
def test_passwords_shorter_than_8_or_longer_than_128_are_400(service, password):
    name = fresh_name()
    assert_bad_request(register(service, name, password))
    assert lookup(service, username=name).json() == {"users": []}


def test_a_password_with_a_lone_surrogate_is_400(service):
    body = '{"username": "%s", "password": "abcdefgh\\ud800"}' % fresh_name()
    assert_bad_request(service.session.post(f"{service.url}/v1/users", data=body,
                                            headers={"Content-Type": "application/json"}))


def test_a_taken_username_is_409_without_regard_to_case(service):
    name = fresh_name("MiXeD")
    user_id = registered(service, name)
    for again in (name, name.lower(), name.upper()):
        r = register(service, again, "another password")
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "conflict"
    # The name stays as first typed, and the first password stays valid.
    assert lookup(service, username=name.lower()).json() == {
        "users": [{"userId": user_id, "username": name}]}
    assert login(service, name).status_code == 200
    assert login(service, name, "another password").status_code == 401


def test_concurrent_registrations_of_one_name_let_exactly_one_win(service):
    name = fresh_name("Race")
    variants = [name, name.lower(), name.upper()] * 4
    with ThreadPoolExecutor(len(variants)) as pool:
        responses = list(pool.map(
            lambda n: requests.post(f"{service.url}/v1/users",
                                    json={"username": n, "password": PASSWORD},
                                    headers={"X-Internal-Secret": INTERNAL_SECRET}, timeout=30),
            variants))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * (len(variants) - 1), [r.text for r in responses]
    assert len(lookup(service, username=name).json()["users"]) == 1


# -- login -------------------------------------------------------------------

def test_login_issues_a_token_the_gateway_accepts(service):
    name = fresh_name()
    user_id = registered(service, name)
    before = time.time()
    r = login(service, name)
    after = time.time()
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"token", "userId", "expiresAt"}
    assert body["userId"] == user_id
    claims = tokens.verify(ACCESS_SECRET, body["token"])
    assert claims.user_id == user_id
    assert int(before) + ACCESS_EXPIRE <= claims.expires_at <= int(after) + ACCESS_EXPIRE
    assert body["expiresAt"] == claims.expires_at * 1000        # milliseconds
    assert type(body["expiresAt"]) is int
    assert_no_password_material(r)


def test_a_token_does_not_verify_with_another_secret(service):
    name = fresh_name()
    registered(service, name)
    with pytest.raises(tokens.InvalidToken):
        tokens.verify("some other secret, also 32 bytes long", login(service, name).json()["token"])


def test_login_matches_the_username_without_regard_to_case(service):
    name = fresh_name("CamelCase")
    user_id = registered(service, name)
    for typed in (name.lower(), name.upper()):
        r = login(service, typed)
        assert r.status_code == 200, r.text
        assert r.json()["userId"] == user_id


def test_the_password_is_case_sensitive(service):
    name = fresh_name()
    registered(service, name, "Secret-Password")
    assert login(service, name, "secret-password").status_code == 401


def test_wrong_password_and_unknown_user_get_the_same_401(service):
    name = fresh_name()
    registered(service, name)
    wrong = login(service, name, "not the password")
    unknown = login(service, fresh_name("nobody"), PASSWORD)
    invalid_name = login(service, "no such user!", PASSWORD)
    too_long = login(service, name, "x" * 500)
    for r in (wrong, unknown, invalid_name, too_long):
        assert r.status_code == 401, r.text
        assert r.json() == wrong.json()
        assert r.json()["code"] == "unauthorized"
        assert_no_password_material(r)


def test_an_unknown_user_costs_a_password_check_too(service):
    """So that response times do not reveal which usernames exist."""
    name = fresh_name()
    registered(service, name)

    def median_login_time(username: str) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            assert login(service, username, "not the password").status_code == 401
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    known, unknown = median_login_time(name), median_login_time(fresh_name("ghost"))
    assert unknown > known * 0.5, (known, unknown)


# -- lookup --------------------------------------------------------------------

def test_lookup_by_ids_leaves_unknown_ones_out(service):
    a_name, b_name = fresh_name("Alpha"), fresh_name("Beta")
    a, b = registered(service, a_name), registered(service, b_name)
    r = lookup(service, ids=f"{b},{2**63 - 1},{a},{b}")
    assert r.status_code == 200, r.text
    assert sorted(r.json()["users"], key=lambda u: u["userId"]) == [
        {"userId": a, "username": a_name}, {"userId": b, "username": b_name}]
    assert_no_password_material(r)


def test_lookup_of_only_unknown_or_no_ids_is_empty(service):
    assert lookup(service, ids=str(2**63 - 1)).json() == {"users": []}
    assert lookup(service, ids="").json() == {"users": []}


def test_lookup_takes_up_to_200_ids(service):
    a = registered(service)
    ids = [a] + list(range(2**62, 2**62 + 199))
    r = lookup(service, ids=",".join(map(str, ids)))
    assert r.status_code == 200, r.text
    assert [u["userId"] for u in r.json()["users"]] == [a]
    assert_bad_request(lookup(service, ids=",".join(map(str, ids + [5]))))


@pytest.mark.parametrize("ids", ["abc", "0", "-1", "1.5", "1,,2", "1,x", "true", str(2**63),
                                 "1;2", "\u00b2", ",", "[1,2]"])
def test_lookup_with_invalid_ids_is_400(service, ids):
    assert_bad_request(lookup(service, ids=ids))


def test_lookup_by_username_ignores_case_and_returns_it_as_typed(service):
    name = fresh_name("TypedCase")
    user_id = registered(service, name)
    for typed in (name, name.lower(), name.upper()):
        r = lookup(service, username=typed)
        assert r.status_code == 200, r.text
        assert r.json() == {"users": [{"userId": user_id, "username": name}]}
        assert_no_password_material(r)


@pytest.mark.parametrize("name", ["nobody_at_all_here", "no such user!", "x"])
def test_lookup_of_an_unknown_username_is_empty(service, name):
    r = lookup(service, username=name)
    assert r.status_code == 200 and r.json() == {"users": []}


def test_lookup_needs_exactly_one_of_ids_or_username(service):
    assert_bad_request(lookup(service))
    assert_bad_request(lookup(service, ids="1", username="alice"))


# -- InternalSecret, health, lifecycle ---------------------------------------

@pytest.mark.parametrize("headers", [{}, {"X-Internal-Secret": "wrong"}], ids=["without", "wrong"])
def test_calls_without_the_right_internal_secret_are_401(service, headers):
    name = fresh_name()
    body = {"username": name, "password": PASSWORD}
    calls = [
        requests.post(f"{service.url}/v1/users", json=body, headers=headers),
        requests.post(f"{service.url}/v1/tokens", json=body, headers=headers),
        requests.get(f"{service.url}/v1/users", params={"ids": "1"}, headers=headers),
    ]
    for r in calls:
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "unauthorized"
    assert lookup(service, username=name).json() == {"users": []}   # nothing was registered


def test_healthz_needs_no_secret(service):
    assert requests.get(f"{service.url}/healthz").status_code == 200


def test_sigterm_exits_0(tmp_path):
    config = {"Name": "auth", "AccessSecret": ACCESS_SECRET}
    with database_url("sqlite", tmp_path, "auth-sigterm") as url, \
            running_service("skyeim.auth", {**config, "DataSource": url}, tmp_path) as svc:
        assert register(svc, "sigterm_user").status_code == 200
        assert svc.terminate() == 0, svc.log()


# -- revocation (token generations) --------------------------------------------

def revoke(service, user_id) -> requests.Response:
    return service.session.post(f"{service.url}/v1/revocations", json={"userId": user_id})


def revocations(service, **params) -> dict:
    r = service.session.get(f"{service.url}/v1/revocations", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def change_password(service, username, old, new) -> requests.Response:
    return service.session.post(f"{service.url}/v1/password", json={
        "username": username, "oldPassword": old, "newPassword": new})


def token_gen(service, name, password=PASSWORD) -> int:
    r = login(service, name, password)
    assert r.status_code == 200, r.text
    return tokens.verify(ACCESS_SECRET, r.json()["token"]).gen


def test_a_revocation_raises_the_generation_that_new_tokens_carry(service):
    name = fresh_name()
    user_id = registered(service, name)
    first = login(service, name).json()["token"]
    assert "gen" not in jwt.decode(first, options={"verify_signature": False})   # never revoked
    before = now_ms()
    r = revoke(service, user_id)
    assert r.status_code == 200, r.text
    assert r.json()["userId"] == user_id and r.json()["gen"] == 1
    assert before <= r.json()["revokedAt"] <= now_ms()
    assert token_gen(service, name) == 1
    assert revoke(service, user_id).json()["gen"] == 2
    assert token_gen(service, name) == 2


def test_revocations_are_listed_oldest_first_since_a_time_and_paged(service):
    since = now_ms()
    a, b = registered(service), registered(service)
    revoke(service, a)
    revoke(service, b)
    revoke(service, a)
    body = revocations(service, since=since)
    mine = [r for r in body["revocations"] if r["userId"] in (a, b)]
    assert [(r["userId"], r["gen"]) for r in mine] == [(b, 1), (a, 2)]   # one row per user, latest gen
    assert all(r["revokedAt"] >= since for r in mine)
    assert since <= body["now"] <= now_ms() and body["hasMore"] is False
    # paging by (revokedAt, userId)
    first = revocations(service, since=since, limit=1)
    assert first["hasMore"] is True and len(first["revocations"]) == 1
    last = first["revocations"][0]
    rest = revocations(service, since=last["revokedAt"], afterUserId=last["userId"])
    assert first["revocations"] + rest["revocations"] == body["revocations"]
    assert revocations(service, since=body["now"] + 60_000)["revocations"] == []


def test_revoking_an_unknown_or_invalid_user_is_404_or_400(service):
    r = revoke(service, 2**63 - 1)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    for bad in ("1", 0, True, None):
        assert_bad_request(revoke(service, bad))
    assert_bad_request(service.session.get(f"{service.url}/v1/revocations", params={"since": "x"}))


def test_concurrent_first_revocations_of_one_user_both_count(service):
    user_id = registered(service)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: requests.post(
            f"{service.url}/v1/revocations", json={"userId": user_id},
            headers={"X-Internal-Secret": INTERNAL_SECRET}, timeout=30), range(4)))
    assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
    assert sorted(r.json()["gen"] for r in answers) == [1, 2, 3, 4]


def test_a_password_change_sets_the_password_and_revokes_earlier_tokens(service):
    name = fresh_name()
    user_id = registered(service, name)
    assert token_gen(service, name) == 0
    since = now_ms()
    r = change_password(service, name, PASSWORD, "the new password")
    assert r.status_code == 200 and r.json() == {"ok": True}, r.text
    assert_no_password_material(r)
    assert login(service, name).status_code == 401
    assert token_gen(service, name, "the new password") == 1
    assert [x["userId"] for x in revocations(service, since=since)["revocations"]].count(user_id) == 1


@pytest.mark.parametrize("body", [
    {"username": "someone", "oldPassword": PASSWORD},
    {"username": "someone", "oldPassword": PASSWORD, "newPassword": 12345678},
    {"username": None, "oldPassword": PASSWORD, "newPassword": "long enough"},
    {"username": "someone", "oldPassword": PASSWORD, "newPassword": "short"},
    {"username": "someone", "oldPassword": PASSWORD, "newPassword": "x" * 129},
], ids=["no-new", "int-new", "null-name", "short-new", "long-new"])
def test_a_password_change_with_bad_input_is_400(service, body):
    assert_bad_request(service.session.post(f"{service.url}/v1/password", json=body))


def test_a_password_change_with_a_wrong_old_password_is_401_and_changes_nothing(service):
    name = fresh_name()
    registered(service, name)
    r = change_password(service, name, "not the password", "the new password")
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    r = change_password(service, fresh_name("nobody"), PASSWORD, "the new password")
    assert r.status_code == 401
    assert token_gen(service, name) == 0


@pytest.mark.parametrize("headers", [{}, {"X-Internal-Secret": "wrong"}], ids=["without", "wrong"])
def test_revocation_and_password_calls_need_the_internal_secret(service, headers):
    calls = [requests.post(f"{service.url}/v1/revocations", json={"userId": 1}, headers=headers),
             requests.get(f"{service.url}/v1/revocations", headers=headers),
             requests.post(f"{service.url}/v1/password", headers=headers, json={
                 "username": "x", "oldPassword": PASSWORD, "newPassword": PASSWORD})]
    for r in calls:
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", r.text


# -- failed-login limits -----------------------------------------------------------

MAX_FAILURES, MAX_ADDRESS_FAILURES, WINDOW = 3, 6, 2   # a short window, to see it pass


def limited_service(tmp_path_factory, name: str, internal_secret: str):
    workdir = tmp_path_factory.mktemp(name)
    config = {"Name": "auth", "InternalSecret": internal_secret, "AccessSecret": ACCESS_SECRET,
              "DataSource": f"sqlite:///{workdir / 'auth.db'}",
              "LoginLimit": {"MaxFailures": MAX_FAILURES, "MaxAddressFailures": MAX_ADDRESS_FAILURES,
                             "Window": WINDOW}}
    return running_service("skyeim.auth", config, workdir)


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    with limited_service(tmp_path_factory, "auth-limited", INTERNAL_SECRET) as svc:
        yield svc


_addresses = itertools.count(1)


def fresh_address() -> str:
    return f"198.51.100.{next(_addresses) % 250 + 1}"


def login_from(service, address, username, password=PASSWORD) -> requests.Response:
    return service.session.post(f"{service.url}/v1/tokens", headers={"X-Client-Address": address},
                                json={"username": username, "password": password})


def assert_rate_limited(r: requests.Response) -> int:
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "rate_limited" and isinstance(r.json()["message"], str)
    retry_after = int(r.headers["Retry-After"])
    assert 1 <= retry_after <= WINDOW, retry_after
    return retry_after


def test_a_username_is_429_after_max_failures_until_the_window_passes(limited):
    name, other, addr = fresh_name(), fresh_name(), fresh_address()
    registered(limited, name)
    registered(limited, other)
    for _ in range(MAX_FAILURES):
        assert login_from(limited, addr, name, "not the password").status_code == 401
    # now even the right password waits, from any address
    wait = assert_rate_limited(login_from(limited, addr, name))
    assert_rate_limited(login_from(limited, fresh_address(), name.upper()))
    # another username is not affected
    assert login_from(limited, addr, other).status_code == 200
    time.sleep(wait)       # the window slides past the failures (Retry-After said when)
    assert login_from(limited, addr, name).status_code == 200


def test_a_success_resets_the_usernames_count(limited):
    name, addr = fresh_name(), fresh_address()
    registered(limited, name)
    for _ in range(2):
        for _ in range(MAX_FAILURES - 1):
            assert login_from(limited, addr, name, "not the password").status_code == 401
        assert login_from(limited, addr, name).status_code == 200


def test_an_address_is_429_after_its_failures_whatever_the_usernames(limited):
    addr, name = fresh_address(), fresh_name()
    registered(limited, name)
    for i in range(MAX_ADDRESS_FAILURES):
        assert login_from(limited, addr, fresh_name("ghost"), "not the password").status_code == 401
    assert_rate_limited(login_from(limited, addr, name))
    assert login_from(limited, fresh_address(), name).status_code == 200   # another address is not


def test_failed_password_changes_count_too(limited):
    name, addr = fresh_name(), fresh_address()
    registered(limited, name)
    for _ in range(MAX_FAILURES):
        r = limited.session.post(f"{limited.url}/v1/password", headers={"X-Client-Address": addr},
                                 json={"username": name, "oldPassword": "not the password",
                                       "newPassword": "the new password"})
        assert r.status_code == 401
    assert_rate_limited(login_from(limited, addr, name))


def test_the_client_address_header_is_trusted_only_with_the_internal_secret(tmp_path_factory):
    """An empty InternalSecret no longer leaves the service open to a forged
    X-Client-Address: it uses the generated secret (skyeim.internal_secret),
    and a caller without it is refused before the login is looked at."""
    with limited_service(tmp_path_factory, "auth-open", "") as svc:
        assert "using the generated one" in svc.log()
        generated = svc.secret_file.read_text().strip()
        assert svc.session.headers["X-Internal-Secret"] == generated
        for secret in ("", "a wrong secret"):
            r = requests.post(f"{svc.url}/v1/tokens", json={"username": "x", "password": "y"},
                              headers={"X-Client-Address": fresh_address(), "X-Internal-Secret": secret})
            assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        # with it, the header is believed: each address has its own count
        for _ in range(MAX_ADDRESS_FAILURES):
            r = login_from(svc, fresh_address(), fresh_name("ghost"), "not the password")
            assert r.status_code == 401


def test_the_memory_of_failures_is_bounded():
    from skyeim.auth.limits import FailureWindow
    window = FailureWindow(limit=2, window=60, max_keys=3)
    for i in range(10):
        window.fail(f"user{i}")
        window.fail(f"user{i}")
    assert len(window) == 3
    assert window.wait("user0") == 0            # forgotten, the least recently failed first
    assert window.wait("user9") > 0
