"""The Auth service (PROTOCOL.md section 6), as a real process, on SQLite and PostgreSQL."""
from __future__ import annotations

import itertools
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from service_harness import INTERNAL_SECRET, database_url, running_service
from skyeim import tokens

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
              "AccessSecret": ACCESS_SECRET, "AccessExpire": ACCESS_EXPIRE}
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
