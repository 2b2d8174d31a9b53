"""The stand-in services of tests/support/standins.py, and their fault switches.

They stand for a team's own services (PROTOCOL.md section 9.1): section 6 and
nothing more. The contract checker's tests (test_contract_check.py) show that
they implement section 6; these show that they implement nothing else, and that
the switches the gateway's fallback tests rely on do what they say.
"""
from __future__ import annotations

import threading
import time

import jwt
import pytest
import requests

from standin_harness import running_standin

SECRET = "standin-internal-secret"
ACCESS_SECRET = "standin-access-secret-of-32-bytes-or-more"

BEYOND_SECTION_6 = {
    "message": [("POST", "/v1/messages/batch"), ("POST", "/v1/messages/unread/batch"),
                ("POST", "/v1/messages/delivered/batch"), ("GET", "/v1/messages/conversation"),
                ("POST", "/v1/groups/messages"), ("GET", "/v1/groups/last")],
    "friend": [("POST", "/v1/friends/lists"), ("POST", "/v1/groups"), ("GET", "/v1/groups"),
               ("POST", "/v1/groups/lists")],
    "auth": [("GET", "/v1/revocations"), ("POST", "/v1/revocations"), ("POST", "/v1/password")],
}


@pytest.mark.parametrize("kind", sorted(BEYOND_SECTION_6))
def test_endpoints_beyond_section_6_answer_404_or_405(kind, tmp_path):
    """As in any Flask app: 404, or 405 where the path fits a section 6 route of
    another method (POST /v1/friends/lists is GET /v1/friends/<userId>'s path)."""
    absent = {404: "not_found", 405: "method_not_allowed"}
    with running_standin(kind, tmp_path, internal_secret=SECRET) as svc:
        for method, path in BEYOND_SECTION_6[kind]:
            r = svc.session.request(method, svc.url + path, json={"userIds": [1]}, timeout=5)
            assert absent.get(r.status_code) == r.json()["code"], (method, path, r.text)
        assert svc.requests()[-1][:2] == BEYOND_SECTION_6[kind][-1]
        assert svc.requests()[-1][2] in absent


def test_the_internal_secret_is_required_but_not_for_healthz(tmp_path):
    with running_standin("friend", tmp_path, internal_secret=SECRET) as svc:
        assert requests.get(svc.url + "/v1/friends/1", timeout=5).status_code == 401
        wrong = requests.get(svc.url + "/v1/friends/1", headers={"X-Internal-Secret": "x"}, timeout=5)
        assert (wrong.status_code, wrong.json()["code"]) == (401, "unauthorized")
        assert svc.session.get(svc.url + "/v1/friends/1", timeout=5).json() == {"friends": []}
        assert requests.get(svc.url + "/healthz", timeout=5).status_code == 200


def test_fail_answers_500_until_healed(tmp_path):
    with running_standin("message", tmp_path) as svc:
        svc.fail()
        r = svc.session.get(svc.url + "/v1/messages/unread", params={"userId": 1}, timeout=5)
        assert (r.status_code, r.json()["code"]) == (500, "internal")
        assert svc.session.get(svc.url + "/healthz", timeout=5).status_code == 200
        svc.heal()
        r = svc.session.get(svc.url + "/v1/messages/unread", params={"userId": 1}, timeout=5)
        assert r.status_code == 200
        svc.fail("/v1/messages/read")          # only the paths named
        assert svc.session.post(svc.url + "/v1/messages/read", json={"userId": 1, "peerId": 2},
                                timeout=5).status_code == 500
        assert svc.session.get(svc.url + "/v1/messages/unread", params={"userId": 1},
                               timeout=5).status_code == 200


def test_hang_holds_requests_until_healed_or_a_client_timeout(tmp_path):
    with running_standin("friend", tmp_path, hang_max=30) as svc:
        svc.hang()
        with pytest.raises(requests.Timeout):
            svc.session.get(svc.url + "/v1/friends/1", timeout=0.5)
        healer = threading.Timer(1.0, svc.heal)
        healer.start()
        started = time.monotonic()
        r = svc.session.get(svc.url + "/v1/friends/1", timeout=10)
        waited = time.monotonic() - started
        healer.join()
        assert r.status_code == 200 and 0.8 < waited < 5, waited


def test_go_away_refuses_connections_and_come_back_keeps_the_data(tmp_path):
    with running_standin("message", tmp_path) as svc:
        body = {"msgId": "kept-1", "fromUserId": 5, "toUserId": 6, "content": "stored before"}
        stored = svc.session.post(svc.url + "/v1/messages", json=body, timeout=5).json()
        svc.go_away()
        assert not svc.running
        with pytest.raises(requests.ConnectionError):
            svc.session.get(svc.url + "/healthz", timeout=2)
        svc.come_back()
        history = svc.session.get(svc.url + "/v1/messages/history",
                                  params={"userId": 6, "peerId": 5}, timeout=5).json()
        assert [(m["msgId"], m["seq"], m["createdAt"]) for m in history["messages"]] == \
            [("kept-1", 1, stored["createdAt"])]
        again = svc.session.post(svc.url + "/v1/messages", json=body, timeout=5).json()
        assert again["duplicate"] is True


def test_auth_tokens_verify_with_the_gateways_access_secret(tmp_path):
    """The gateway verifies what a team's Auth service issues (PROTOCOL.md section 1)."""
    with running_standin("auth", tmp_path, access_secret=ACCESS_SECRET, access_expire=600) as svc:
        creds = {"username": "Standin.User", "password": "eight chars"}
        user_id = svc.session.post(svc.url + "/v1/users", json=creds, timeout=10).json()["userId"]
        login = svc.session.post(svc.url + "/v1/tokens", json=creds, timeout=10).json()
        claims = jwt.decode(login["token"], ACCESS_SECRET, algorithms=["HS256"])
        assert claims["userId"] == user_id == login["userId"]
        assert login["expiresAt"] == claims["exp"] * 1000
        assert 590 <= claims["exp"] - time.time() <= 601
