"""Friend requests and blocks in front of a team's own Friend service that has the
PROTOCOL.md section 6 endpoints only (9.1; the stand-in of tests/support/standins.py):
the REST calls answer 501 `not_supported`, nobody is blocked, and chats, typing and
befriending work as before."""
from __future__ import annotations

import pytest

from harness import new_msg_id
from own_services_harness import running_standin_system
from relations_harness import call


@pytest.fixture(scope="module")
def own_friend_service(tmp_path_factory):
    ws = {"Friends": {"RequireAcceptance": True}, "AuthRpc": {"Timeout": 15000}}
    with running_standin_system(tmp_path_factory.mktemp("fr_own"), standins=("friend",),
                                ws=ws) as s:
        yield s


def test_without_the_endpoints_requests_and_blocks_answer_not_supported(own_friend_service):
    system = own_friend_service
    alice, bob = system.users("fro_a", "fro_b")
    for method, path, body in (("GET", "/api/friends/requests", None),
                               ("POST", f"/api/friends/requests/{bob.id}/accept", None),
                               ("POST", f"/api/friends/requests/{bob.id}/decline", None),
                               ("GET", "/api/blocks", None),
                               ("POST", "/api/blocks", {"userId": bob.id}),
                               ("DELETE", f"/api/blocks/{bob.id}", None),
                               ("POST", "/api/friends", {"friendId": bob.id})):
        answer = call(system, method, path, alice, body, status=501)
        assert answer["code"] == "not_supported" and answer["message"], (method, path, answer)
    # the connect flow and chats do not depend on them: nobody is blocked
    ca, cb = system.connect(alice), system.connect(bob)
    mid = new_msg_id()
    ca.chat(bob.id, "hello", msg_id=mid)
    ca.expect_ack(mid, "sent")
    assert cb.expect("chat")["msgId"] == mid
    cb.send("typing", {"toUserId": alice.id, "state": "typing"})
    frame = ca.expect("typing", skip=("pong", "ack"))
    assert frame["fromUserId"] == bob.id
    assert "Traceback" not in system.log_text()
