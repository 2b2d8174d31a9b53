"""Friend requests and blocking (docs/protocol.md "Friend requests and blocking"):
Friends.RequireAcceptance, the live frames, the push at connect, blocks keeping two
users apart (chats, typing, requests, presence), over real processes."""
from __future__ import annotations

import time

import pytest

from harness import new_msg_id, running_system
from relations_harness import (accept, block, blocked_ids, call, decline, friend_ids,
                               request_friend, requests_of, unblock)


# registrations hash passwords: on a loaded machine the Auth service may take seconds
SLOW_AUTH = {"AuthRpc": {"Timeout": 15000}}


@pytest.fixture(scope="module")
def accepting(tmp_path_factory):
    ws = {"Friends": {"RequireAcceptance": True}, "Chat": {"RequireFriendship": True},
          **SLOW_AUTH}
    with running_system(tmp_path_factory.mktemp("friend_requests"), ws=ws) as s:
        yield s


def test_a_request_then_accept_befriends_with_frames_to_both(accepting):
    alice, bob = accepting.users("fr_a", "fr_b")
    ca, cb = accepting.connect(alice), accepting.connect(bob)
    request_friend(accepting, alice, bob)
    got = cb.expect("friend_request")
    assert got["fromUserId"] == alice.id and got["username"] == alice.username
    assert isinstance(got["createdAt"], int)
    assert [r["userId"] for r in requests_of(accepting, bob)["incoming"]] == [alice.id]
    assert [r["userId"] for r in requests_of(accepting, alice)["outgoing"]] == [bob.id]
    assert requests_of(accepting, bob)["incoming"][0]["username"] == alice.username
    # not friends yet: a chat is refused
    mid = new_msg_id()
    ca.chat(bob.id, "too early", msg_id=mid)
    ca.expect_error("not_friends", mid)
    # a second request is no second frame (the connect-time list may still come: bob's
    # connection was new, and a request made meanwhile is in both; the list is state)
    request_friend(accepting, alice, bob)
    cb.assert_no_frame(0.5, skip=("pong", "friend_requests"))

    assert accept(accepting, bob, alice) == {"ok": True}
    assert cb.expect("friend_added")["userId"] == alice.id
    frames = {f["type"]: f["data"] for f in ca.frames_for(2.0)}
    assert frames["friend_added"]["userId"] == bob.id
    assert frames["friend_request_answered"] == {"userId": bob.id, "accepted": True}
    assert friend_ids(accepting, alice) == [bob.id] and friend_ids(accepting, bob) == [alice.id]
    assert requests_of(accepting, bob) == {"incoming": [], "outgoing": []}
    assert requests_of(accepting, alice) == {"incoming": [], "outgoing": []}
    accept(accepting, bob, alice, status=404)           # nothing pending any more
    mid = new_msg_id()
    ca.chat(bob.id, "now we can", msg_id=mid)
    ca.expect_ack(mid, "sent")
    # asking a friend again: nothing to do
    request_friend(accepting, bob, alice, status="friends")


def test_a_decline_is_told_to_the_requester(accepting):
    alice, bob = accepting.users("frd_a", "frd_b")
    ca = accepting.connect(alice)
    request_friend(accepting, alice, bob)
    assert decline(accepting, bob, alice) == {"ok": True}
    assert ca.expect("friend_request_answered") == {"userId": bob.id, "accepted": False}
    assert requests_of(accepting, alice) == {"incoming": [], "outgoing": []}
    assert friend_ids(accepting, alice) == []
    assert decline(accepting, bob, alice, status=404)["code"] == "not_found"


def test_a_request_to_someone_who_asked_first_is_an_accept(accepting):
    alice, bob = accepting.users("frm_a", "frm_b")
    ca = accepting.connect(alice)
    request_friend(accepting, alice, bob)
    request_friend(accepting, bob, alice, status="friends")
    frames = {f["type"]: f["data"] for f in ca.frames_for(2.0)}
    assert frames["friend_request_answered"] == {"userId": bob.id, "accepted": True}
    assert frames["friend_added"]["userId"] == bob.id
    assert friend_ids(accepting, bob) == [alice.id]
    assert requests_of(accepting, alice) == {"incoming": [], "outgoing": []}


def test_pending_requests_are_pushed_after_connected(accepting):
    alice, carol, bob, dave = accepting.users("frp_a", "frp_c", "frp_b", "frp_d")
    request_friend(accepting, alice, bob)
    request_friend(accepting, carol, bob)
    cb = accepting.connect(bob)
    pushed = cb.expect("friend_requests")["requests"]
    assert [(r["fromUserId"], r["username"]) for r in pushed] == \
        [(alice.id, alice.username), (carol.id, carol.username)]
    assert all(isinstance(r["createdAt"], int) for r in pushed)
    cd = accepting.connect(dave)                 # none pending: no frame
    cd.assert_no_frame(0.8)


def test_a_block_keeps_two_users_apart(accepting):
    alice, bob = accepting.users("frb_a", "frb_b")
    request_friend(accepting, alice, bob)
    accept(accepting, bob, alice)
    ca, cb = accepting.connect(alice), accepting.connect(bob)
    assert ca.expect("online")["userId"] == bob.id
    block(accepting, alice, bob)
    assert ca.expect("friend_removed") == {"userId": bob.id}
    assert cb.expect("friend_removed") == {"userId": alice.id}
    assert blocked_ids(accepting, alice) == [bob.id] and blocked_ids(accepting, bob) == []
    assert friend_ids(accepting, alice) == [] and friend_ids(accepting, bob) == []
    # bob's chat: not_friends, as to anyone who is not a friend
    mid = new_msg_id()
    cb.chat(alice.id, "hello?", msg_id=mid)
    cb.expect_error("not_friends", mid)
    # bob's request: looks pending to bob, never reaches alice
    request_friend(accepting, bob, alice)
    assert requests_of(accepting, alice)["incoming"] == []
    # bob cannot be befriended by alice either while she blocks him
    assert call(accepting, "POST", "/api/friends", alice, {"friendId": bob.id},
                status=409)["code"] == "conflict"
    # presence: bob leaving and coming back is not heard by alice, nor the other way
    cb.close()
    cb = accepting.connect(bob)
    assert cb.connected["onlineFriends"] == []
    ca.close()
    ca = accepting.connect(alice)
    cb.assert_no_frame(0.8)
    ca.assert_no_frame(0.3)
    # unblocked: a request reaches alice again
    unblock(accepting, alice, bob)
    assert blocked_ids(accepting, alice) == []
    request_friend(accepting, bob, alice)
    assert ca.expect("friend_request")["fromUserId"] == bob.id


@pytest.fixture(scope="module")
def open_chat(tmp_path_factory):
    """Today's defaults: anyone may chat with anyone, befriending is at once."""
    with running_system(tmp_path_factory.mktemp("blocks_open"), ws=SLOW_AUTH) as s:
        yield s


def test_without_require_acceptance_befriending_is_at_once(open_chat):
    alice, bob = open_chat.users("fo_a", "fo_b")
    cb = open_chat.connect(bob)
    assert call(open_chat, "POST", "/api/friends", alice, {"friendId": bob.id}) == {"ok": True}
    assert cb.expect("friend_added")["userId"] == alice.id
    assert friend_ids(open_chat, bob) == [alice.id]
    assert open_chat.connect(alice).assert_no_frame(0.5) is None   # nothing pushed at connect


def test_a_blocked_user_cannot_chat_type_or_befriend_without_friendship_rules(open_chat):
    alice, bob = open_chat.users("fob_a", "fob_b")
    ca, cb = open_chat.connect(alice), open_chat.connect(bob)
    mid = new_msg_id()
    cb.chat(alice.id, "before", msg_id=mid)
    cb.expect_ack(mid, "sent")
    assert ca.expect("chat")["msgId"] == mid
    cb.expect_ack(mid, "delivered", timeout=10)
    block(open_chat, alice, bob)
    for sender, to in ((cb, alice), (ca, bob)):        # either way
        mid = new_msg_id()
        sender.chat(to.id, "blocked", msg_id=mid)
        sender.expect_error("not_friends", mid)
    cb.send("typing", {"toUserId": alice.id, "state": "typing"})
    ca.assert_no_frame(0.8, skip=("pong", "ack"))
    cb.assert_no_frame(0.3, skip=("pong", "ack"))      # dropped silently: no error
    # bob "befriends" alice: answered as usual, nothing happens
    assert call(open_chat, "POST", "/api/friends", bob, {"friendId": alice.id}) == {"ok": True}
    assert friend_ids(open_chat, alice) == [] and friend_ids(open_chat, bob) == []
    ca.assert_no_frame(0.3)
    # the Friend service itself refuses the friendship while the block stands
    r = open_chat.service("friend", "POST", "/v1/friends", {"userId": bob.id, "friendId": alice.id})
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    unblock(open_chat, alice, bob)
    mid = new_msg_id()
    cb.chat(alice.id, "after", msg_id=mid)
    cb.expect_ack(mid, "sent")
    assert ca.expect("chat")["msgId"] == mid


def test_bad_input_gets_a_clear_error(open_chat):
    alice, = open_chat.users("fbad_a")
    for body in ({}, {"userId": "12"}, {"userId": True}, {"userId": alice.id}):
        assert call(open_chat, "POST", "/api/blocks", alice, body, status=400)["code"] == "bad_request"
    assert call(open_chat, "POST", "/api/blocks", alice, {"userId": 2**60},
                status=404)["code"] == "not_found"
    assert call(open_chat, "POST", "/api/friends/requests/abc/accept", alice,
                status=400)["code"] == "bad_request"
    assert call(open_chat, "DELETE", f"/api/blocks/{alice.id}", alice,
                status=400)["code"] == "bad_request"
    assert call(open_chat, "GET", "/api/blocks", None, status=401)["code"] == "unauthorized"
    assert call(open_chat, "GET", "/api/friends/requests", None, status=401)["code"] == "unauthorized"
    assert "Traceback" not in open_chat.log_text()


def test_the_friend_service_endpoints(open_chat):
    """The Friend service's own API (relations_api.py): statuses and the block check."""
    svc = lambda method, path, body=None: open_chat.service(  # noqa: E731
        "friend", method, path, *(() if body is None else (body,)))
    a, b, c = 9_000_001, 9_000_002, 9_000_003
    first = svc("POST", "/v1/friends/requests", {"fromUserId": a, "toUserId": b}).json()
    assert first["status"] == "requested" and first["new"] is True
    again = svc("POST", "/v1/friends/requests", {"fromUserId": a, "toUserId": b}).json()
    assert again == {"status": "requested", "createdAt": first["createdAt"], "new": False}
    assert svc("POST", "/v1/friends/requests", {"fromUserId": b, "toUserId": a}).json() == \
        {"status": "mutual"}
    assert svc("GET", f"/v1/friends/requests/{a}/{b}").json() == {"pending": True}
    assert svc("POST", "/v1/blocks", {"userId": c, "blockedId": a}).json() == {"wereFriends": False}
    assert svc("POST", "/v1/friends/requests", {"fromUserId": a, "toUserId": c}).json() == \
        {"status": "blocked"}
    assert svc("POST", "/v1/friends/requests", {"fromUserId": c, "toUserId": a}).json() == \
        {"status": "blocking"}
    assert svc("POST", "/v1/blocks/check", {"pairs": [[a, c], [c, a], [a, b]]}).json() == \
        {"blocked": [True, True, False]}
    for bad in ({"pairs": []}, {"pairs": [[a]]}, {"pairs": [[a, "x"]]}, {}):
        assert svc("POST", "/v1/blocks/check", bad).status_code == 400
    assert svc("POST", "/v1/friends/requests", {"fromUserId": a, "toUserId": a}).status_code == 400
    assert svc("DELETE", f"/v1/blocks/{c}/{a}").json() == {"unblocked": True}
    assert svc("DELETE", f"/v1/blocks/{c}/{a}").json() == {"unblocked": False}
