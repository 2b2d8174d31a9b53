"""`typing` frames (docs/protocol.md "Typing"): relayed to every device of the peer
when online, never stored, never acked, rate-limited per connection (WebSocket.TypingRate;
over it they are dropped silently), only to friends under Chat.RequireFriendship."""
from __future__ import annotations

import time

import pytest

from harness import assert_ms_timestamp, now_ms, running_system


@pytest.fixture(scope="module")
def typing_system(tmp_path_factory):
    ws = {"WebSocket": {"MultiLogin": "allow", "TypingRate": {"Rate": 2, "Burst": 3}}}
    with running_system(tmp_path_factory.mktemp("typing"), ws=ws) as s:
        yield s


def test_typing_reaches_every_device_of_the_peer(typing_system):
    s = typing_system
    alice, bob = s.minted_user("a"), s.minted_user("b")
    ca = s.connect(alice)
    phone, laptop = s.connect(bob), s.connect(bob)
    before = now_ms()
    ca.send("typing", {"toUserId": bob.id, "state": "typing"})
    for device in (phone, laptop):
        frame = device.expect("typing")
        assert frame["fromUserId"] == alice.id and frame["state"] == "typing"
        assert_ms_timestamp(frame["timestamp"], before, slack_ms=5000)
    ca.send("typing", {"toUserId": bob.id, "state": "paused"})
    assert phone.expect("typing")["state"] == "paused"
    ca.send("typing", {"toUserId": bob.id})          # state defaults to "typing"
    assert phone.expect("typing")["state"] == "typing"
    ca.assert_no_frame(0.5)                           # no ack, nothing back


def test_typing_is_never_stored_nor_delivered_later(typing_system):
    s = typing_system
    alice, bob = s.minted_user("a"), s.minted_user("b")
    ca = s.connect(alice)
    ca.send("typing", {"toUserId": bob.id})           # bob is offline: dropped
    ca.assert_no_frame(0.5)
    cb = s.connect(bob)
    assert cb.backlog == [] and cb.connected["unreadPushed"] == 0
    cb.assert_no_frame(0.5)
    assert s.history(alice, bob)["messages"] == []


def test_bad_typing_frames_are_bad_request(typing_system):
    s = typing_system
    alice = s.minted_user("a")
    ca = s.connect(alice)
    for data in (None, [], {"toUserId": "2"}, {"toUserId": alice.id}, {"toUserId": 0},
                 {"toUserId": 5, "state": "shouting"}, {"toUserId": 5, "state": 1}):
        ca.send("typing", data)
        ca.expect_error("bad_request")
    ca.assert_open()


def test_typing_over_its_rate_is_dropped_silently(typing_system):
    s = typing_system
    alice, bob = s.minted_user("a"), s.minted_user("b")
    ca, cb = s.connect(alice), s.connect(bob)
    for _ in range(10):                               # Burst 3, Rate 2/s
        ca.send("typing", {"toUserId": bob.id})
    ca.ping()
    ca.expect("pong", skip=())                         # no error frame came before the pong
    got = [f for f in cb.frames_for(1.0) if f["type"] == "typing"]
    assert 3 <= len(got) <= 5, got                     # the burst, plus what refilled meanwhile
    time.sleep(1.1)                                    # the bucket refills with time: nothing else to await
    ca.send("typing", {"toUserId": bob.id})
    assert cb.expect("typing")["fromUserId"] == alice.id


def test_typing_only_to_friends_when_friendship_is_required(system_factory):
    s = system_factory(ws={"Chat": {"RequireFriendship": True}})
    alice, bob, carol = s.minted_user("a"), s.minted_user("b"), s.minted_user("c")
    r = s.service("friend", "POST", "/v1/friends", {"userId": alice.id, "friendId": bob.id})
    assert r.status_code == 200
    ca, cb, cc = s.connect(alice), s.connect(bob), s.connect(carol)
    assert ca.expect("online")["userId"] == bob.id
    ca.send("typing", {"toUserId": carol.id})
    ca.expect_error("not_friends")
    cc.assert_no_frame(0.5)
    ca.send("typing", {"toUserId": bob.id})
    assert cb.expect("typing")["fromUserId"] == alice.id


def test_typing_in_a_group_reaches_the_other_members_devices_and_no_one_else(typing_system):
    s = typing_system
    ann, bob, cat, outsider = s.users("gt_ann", "gt_bob", "gt_cat", "gt_out")
    r = s.api("POST", "/api/groups", ann, json_body={"name": "typists",
                                                     "memberIds": [bob.id, cat.id]})
    assert r.status_code == 200, r.text
    gid = r.json()["groupId"]
    a_phone, a_laptop = s.connect(ann), s.connect(ann)
    b_phone, b_laptop = s.connect(bob), s.connect(bob)
    out = s.connect(outsider)
    for member in (a_phone, a_laptop, b_phone, b_laptop):
        member.expect("group_unread")                 # members hear of their groups first
    before = now_ms()
    a_phone.send("typing", {"groupId": gid, "state": "typing"})
    for device in (b_phone, b_laptop):
        frame = device.expect("typing")
        assert (frame["fromUserId"], frame["groupId"], frame["state"]) == (ann.id, gid, "typing")
        assert_ms_timestamp(frame["timestamp"], before, slack_ms=5000)
    for silent in (a_phone, a_laptop, out):           # not the typist's devices, not strangers
        silent.assert_no_frame(0.5)
    # never stored: a member who connects later hears nothing of it
    c = s.connect(cat)
    c.expect("group_unread")
    c.assert_no_frame(0.5)
    # a stranger may not signal into the group; one frame names one target
    out.send("typing", {"groupId": gid})
    out.expect_error("forbidden")
    for data in ({"groupId": gid, "toUserId": bob.id}, {"groupId": "1"}, {"groupId": 0}):
        a_phone.send("typing", data)
        a_phone.expect_error("bad_request")
