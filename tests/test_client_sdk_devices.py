"""The SDK (skyeim.client) with several devices per user and typing, against live
gateways: the `platform` parameter, `send_typing` and `Typing` frames, own read state,
sent-chat copies, and 409 `too_many_devices` as a final refusal."""
from __future__ import annotations

import threading

import pytest

from harness import new_msg_id, running_system
from sdk_harness import next_of
from skyeim.client import (ChatMessage, ReadReceipt, Replaced, TooManyDevices,
                           Typing)



@pytest.fixture(scope="module")
def allow(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("sdk_allow"),
                        ws={"WebSocket": {"MultiLogin": "allow", "MaxDevicesPerUser": 2}}) as s:
        yield s


@pytest.fixture(scope="module")
def per_platform(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("sdk_platform"),
                        ws={"WebSocket": {"MultiLogin": "one-per-platform"}}) as s:
        yield s


def test_platform_parameter_makes_a_same_platform_login_replace_only_its_own(per_platform, clients):
    alice = per_platform.minted_user("a")
    web = clients(per_platform.url, alice.token, platform="web")
    ios = clients(per_platform.url, alice.token, platform="ios")
    web2 = clients(per_platform.url, alice.token, platform="web")
    with pytest.raises(Replaced):
        for _ in web.frames(timeout=5):
            pass
    assert web.reconnect_attempts == 0 and not web.live
    assert ios.live and web2.live
    assert ios.ping() is not None


def test_send_typing_reaches_the_peer_as_a_typing_frame(allow, clients):
    alice, bob = allow.minted_user("a"), allow.minted_user("b")
    ca = clients(allow.url, alice.token, typing_interval=60)
    cb = clients(allow.url, bob.token)
    seen: list[Typing] = []
    got = threading.Event()
    cb.on("typing", lambda f: (seen.append(f), got.set()))
    assert ca.send_typing(bob.id) is True
    frame = next_of(cb, Typing)
    assert frame.from_user_id == alice.id and frame.state == "typing" and frame.timestamp > 0
    assert got.wait(5) and seen[0] == frame
    assert ca.send_typing(bob.id) is False            # the same state again, too soon: skipped
    assert ca.send_typing(bob.id, "paused") is True   # a change of state always goes
    assert next_of(cb, Typing).state == "paused"
    with pytest.raises(ValueError):
        ca.send_typing(bob.id, "shouting")


def test_own_read_state_and_sent_copies_reach_the_other_device(allow, clients):
    alice, bob = allow.minted_user("a"), allow.minted_user("b")
    phone = clients(allow.url, alice.token)
    laptop = clients(allow.url, alice.token)
    cb = clients(allow.url, bob.token)
    sent = phone.send_chat(bob.id, "from the phone", wait="sent")
    copy = next_of(laptop, ChatMessage)
    assert (copy.msg_id, copy.from_user_id, copy.to_user_id) == (sent.msg_id, alice.id, bob.id)
    mid = new_msg_id()
    cb.send_chat(alice.id, "read me", msg_id=mid, wait="sent")
    assert next_of(phone, ChatMessage).msg_id == mid
    phone.mark_read(bob.id, [mid])
    own = next_of(laptop, ReadReceipt)
    assert own.own is True and own.peer_id == bob.id and own.msg_ids == (mid,)
    receipt = next_of(cb, ReadReceipt)
    assert receipt.own is False and receipt.peer_id == alice.id


def test_too_many_devices_is_final_and_not_retried(allow, clients):
    alice = allow.minted_user("a")
    clients(allow.url, alice.token)
    clients(allow.url, alice.token)                  # MaxDevicesPerUser 2
    third = clients(allow.url, alice.token, connect=False)
    with pytest.raises(TooManyDevices) as e:
        third.connect()
    assert e.value.status == 409 and e.value.code == "too_many_devices"
    assert third.reconnect_attempts == 0


def test_typing_and_own_read_frames_parse_to_their_classes():
    from skyeim.client import parse_frame
    t = parse_frame({"type": "typing", "data": {"fromUserId": 3, "state": "paused", "timestamp": 5}})
    assert t == Typing(3, "paused", 5) and t.type == "typing"
    own = parse_frame({"type": "read", "data": {"peerId": 2, "msgIds": ["m"], "timestamp": 1,
                                                "own": True}})
    assert isinstance(own, ReadReceipt) and own.own is True and own.peer_id == 2
    receipt = parse_frame({"type": "read", "data": {"peerId": 2, "msgIds": ["m"], "timestamp": 1}})
    assert receipt.own is False
