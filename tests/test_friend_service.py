"""The Friend service (PROTOCOL.md section 6), as a real process, on SQLite and PostgreSQL."""
from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from service_harness import INTERNAL_SECRET, database_url, running_service

MAX_ID = 2**63 - 1
_ids = itertools.count(1000)


def fresh_id() -> int:
    """A user id no other test has used, so tests stay independent in one database."""
    return next(_ids)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"friend-{request.param}")
    with database_url(request.param, workdir, "friend") as url, \
            running_service("skyeim.friend", {"Name": "friend", "DataSource": url,
                                              "InternalSecret": INTERNAL_SECRET}, workdir) as svc:
        yield svc


def friends_of(service, user_id) -> list[int]:
    r = service.session.get(f"{service.url}/v1/friends/{user_id}")
    assert r.status_code == 200, r.text
    return r.json()["friends"]


def befriend(service, user_id, friend_id) -> requests.Response:
    return service.session.post(f"{service.url}/v1/friends",
                                json={"userId": user_id, "friendId": friend_id})


def unfriend(service, user_id, friend_id) -> requests.Response:
    return service.session.delete(f"{service.url}/v1/friends/{user_id}/{friend_id}")


def assert_bad_request(r: requests.Response) -> None:
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "bad_request"
    assert r.json()["message"]


# -- listing, adding, removing ---------------------------------------------

def test_a_user_without_friends_has_an_empty_list(service):
    assert friends_of(service, fresh_id()) == []


def test_befriending_stores_both_directions(service):
    a, b = fresh_id(), fresh_id()
    r = befriend(service, a, b)
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert friends_of(service, a) == [b]
    assert friends_of(service, b) == [a]


def test_befriending_is_idempotent_in_either_direction(service):
    a, b = fresh_id(), fresh_id()
    for user, friend in [(a, b), (a, b), (b, a)]:
        r = befriend(service, user, friend)
        assert r.status_code == 200 and r.json() == {"ok": True}
    assert friends_of(service, a) == [b]
    assert friends_of(service, b) == [a]


def test_friends_are_listed_in_ascending_order(service):
    a = fresh_id()
    others = [fresh_id() for _ in range(4)]
    for friend in [others[2], others[0], others[3], others[1]]:
        assert befriend(service, a, friend).status_code == 200
    assert friends_of(service, a) == sorted(others)


def test_removing_deletes_both_directions(service):
    a, b, c = fresh_id(), fresh_id(), fresh_id()
    befriend(service, a, b)
    befriend(service, a, c)
    r = unfriend(service, b, a)        # removed from the other side
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert friends_of(service, a) == [c]
    assert friends_of(service, b) == []
    assert friends_of(service, c) == [a]


def test_removing_is_idempotent(service):
    a, b = fresh_id(), fresh_id()
    befriend(service, a, b)
    for _ in range(2):
        r = unfriend(service, a, b)
        assert r.status_code == 200 and r.json() == {"ok": True}
    never = unfriend(service, fresh_id(), fresh_id())    # never were friends
    assert never.status_code == 200 and never.json() == {"ok": True}


def test_friends_can_be_added_again_after_removal(service):
    a, b = fresh_id(), fresh_id()
    befriend(service, a, b)
    unfriend(service, a, b)
    assert befriend(service, b, a).status_code == 200
    assert friends_of(service, a) == [b]


def test_the_largest_user_id_works(service):
    a = fresh_id()
    assert befriend(service, a, MAX_ID).status_code == 200
    assert friends_of(service, MAX_ID) == [a]
    assert unfriend(service, MAX_ID, a).status_code == 200
    assert friends_of(service, a) == []


def test_concurrent_befriending_of_one_pair_never_fails(service):
    a, b = fresh_id(), fresh_id()
    pairs = [(a, b), (b, a)] * 10
    with ThreadPoolExecutor(len(pairs)) as pool:
        # A Session is not thread-safe: one plain request per call.
        responses = list(pool.map(
            lambda p: requests.post(f"{service.url}/v1/friends",
                                    json={"userId": p[0], "friendId": p[1]},
                                    headers={"X-Internal-Secret": INTERNAL_SECRET}, timeout=10),
            pairs))
    assert [r.status_code for r in responses] == [200] * len(pairs), [r.text for r in responses]
    assert friends_of(service, a) == [b]
    assert friends_of(service, b) == [a]


# -- invalid input -----------------------------------------------------------

def test_friend_lists_of_many_users_in_one_call(service):
    a, b, c, loner = fresh_id(), fresh_id(), fresh_id(), fresh_id()
    for uid, fid in [(a, c), (a, b), (b, c)]:
        assert befriend(service, uid, fid).status_code == 200
    r = service.session.post(f"{service.url}/v1/friends/lists", json={"userIds": [c, loner, a, c]})
    assert r.status_code == 200, r.text
    assert r.json() == {"friends": [sorted([a, b]), [], sorted([b, c]), sorted([a, b])]}
    assert r.json()["friends"][2] == friends_of(service, a)


@pytest.mark.parametrize("body", [{"userIds": []}, {"userIds": "1"}, {"userIds": [1, True]},
                                  {"userIds": [0]}, {"userIds": list(range(1, 1002))}, {}],
                         ids=["empty", "string", "bool", "zero", "1001", "missing"])
def test_friend_lists_refuse_malformed_ids(service, body):
    assert_bad_request(service.session.post(f"{service.url}/v1/friends/lists", json=body))


def test_befriending_oneself_is_400(service):
    a = fresh_id()
    assert_bad_request(befriend(service, a, a))
    assert friends_of(service, a) == []


BAD_BODY_IDS = [None, True, False, 1.0, 2.5, "5", 0, -1, 2**63, [5], {"id": 5}]


@pytest.mark.parametrize("bad", BAD_BODY_IDS, ids=repr)
def test_invalid_user_id_in_body_is_400(service, bad):
    assert_bad_request(befriend(service, bad, fresh_id()))


@pytest.mark.parametrize("bad", BAD_BODY_IDS, ids=repr)
def test_invalid_friend_id_in_body_is_400(service, bad):
    a = fresh_id()
    assert_bad_request(befriend(service, a, bad))
    assert friends_of(service, a) == []


@pytest.mark.parametrize("missing", ["userId", "friendId"])
def test_a_missing_id_is_400(service, missing):
    body = {"userId": fresh_id(), "friendId": fresh_id()}
    del body[missing]
    assert_bad_request(service.session.post(f"{service.url}/v1/friends", json=body))


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"null", b""])
def test_a_body_that_is_not_a_json_object_is_400(service, body):
    assert_bad_request(service.session.post(f"{service.url}/v1/friends", data=body,
                                            headers={"Content-Type": "application/json"}))


BAD_PATH_IDS = ["abc", "0", "-1", "1.5", "1e3", "+7", str(2**63), "9" * 25, "\u00b2", "%20"]


@pytest.mark.parametrize("bad", BAD_PATH_IDS)
def test_invalid_path_id_in_list_is_400(service, bad):
    assert_bad_request(service.session.get(f"{service.url}/v1/friends/{bad}"))


@pytest.mark.parametrize("bad", BAD_PATH_IDS)
def test_invalid_path_ids_in_remove_are_400(service, bad):
    assert_bad_request(unfriend(service, bad, fresh_id()))
    assert_bad_request(unfriend(service, fresh_id(), bad))


# -- InternalSecret and health ----------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"X-Internal-Secret": "wrong"}, {"X-Internal-Secret": ""}],
                         ids=["without", "wrong", "empty"])
def test_calls_without_the_right_internal_secret_are_401(service, headers):
    a, b = fresh_id(), fresh_id()
    calls = [
        requests.get(f"{service.url}/v1/friends/{a}", headers=headers),
        requests.post(f"{service.url}/v1/friends", json={"userId": a, "friendId": b}, headers=headers),
        requests.delete(f"{service.url}/v1/friends/{a}/{b}", headers=headers),
    ]
    for r in calls:
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "unauthorized"
    assert friends_of(service, a) == []    # the refused add did nothing


def test_healthz_needs_no_secret(service):
    r = requests.get(f"{service.url}/healthz")
    assert r.status_code == 200


def test_unknown_route_is_json_404(service):
    r = service.session.get(f"{service.url}/v1/nothing")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


# -- process lifecycle -------------------------------------------------------

def test_sigterm_exits_0(tmp_path):
    with database_url("sqlite", tmp_path, "friend-sigterm") as url, \
            running_service("skyeim.friend", {"Name": "friend", "DataSource": url}, tmp_path) as svc:
        assert befriend(svc, 1, 2).status_code == 200
        assert svc.terminate() == 0, svc.log()
