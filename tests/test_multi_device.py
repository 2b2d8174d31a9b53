"""Several devices per user (docs/protocol.md "Several devices per user"):
WebSocket.MultiLogin allow and one-per-platform, MaxDevicesPerUser, the `platform`
query parameter, sent-message copies and read-state sync, against live gateways.
(The kick default is pinned by tests/test_connect_flow.py; cluster mode by
tests/test_multi_device_cluster.py.)"""
from __future__ import annotations

import pytest
import websocket

from harness import System, new_msg_id, running_system, wait_until


def befriend(system: System, a, b) -> None:
    """A friendship at the Friend service (minted users are unknown to /api/friends)."""
    r = system.service("friend", "POST", "/v1/friends", {"userId": a.id, "friendId": b.id})
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def allow(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("md_allow"),
                        ws={"WebSocket": {"MultiLogin": "allow", "MaxDevicesPerUser": 3}}) as s:
        yield s


@pytest.fixture(scope="module")
def per_platform(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("md_platform"),
                        ws={"WebSocket": {"MultiLogin": "one-per-platform"}}) as s:
        yield s


def on(system: System, user, platform: str | None = None, **kw):
    path = "/ws" if platform is None else f"/ws?platform={platform}"
    return system.connect(user, path=path, **kw)


# -- allow ---------------------------------------------------------------------------

def test_allow_keeps_every_device_live_and_a_chat_reaches_all(allow):
    alice, bob = allow.minted_user("a"), allow.minted_user("b")
    phone, laptop = allow.connect(alice), allow.connect(alice)
    cb = allow.connect(bob)
    phone.assert_open()
    mid = new_msg_id()
    cb.chat(alice.id, "to both", msg_id=mid)
    cb.expect_ack(mid, "sent")
    for device in (phone, laptop):
        chat = device.expect("chat")
        assert (chat["msgId"], chat["fromUserId"], chat["content"]) == (mid, bob.id, "to both")
    cb.expect_ack(mid, "delivered", timeout=10)
    cb.assert_no_frame(1.0)               # delivered once, though written to two sockets


def test_allow_copies_a_sent_chat_to_the_senders_other_devices(allow):
    alice, bob = allow.minted_user("a"), allow.minted_user("b")
    phone, laptop = allow.connect(alice), allow.connect(alice)
    cb = allow.connect(bob)
    mid = new_msg_id()
    phone.chat(bob.id, "from my phone", msg_id=mid)
    sent = phone.expect_ack(mid, "sent")
    copy = laptop.expect("chat")
    assert copy == {"msgId": mid, "fromUserId": alice.id, "toUserId": bob.id,
                    "content": "from my phone", "contentType": 1,
                    "createdAt": sent["timestamp"], "seq": sent["seq"]}
    assert cb.expect("chat")["msgId"] == mid
    phone.expect_ack(mid, "delivered", timeout=10)
    # `delivered` reaches every device of the sender (its copy gets the tick too) ...
    laptop.expect_ack(mid, "delivered", timeout=10)
    phone.assert_no_frame(0.5)            # ... but the sending device gets no copy of its own
    laptop.assert_no_frame(0.5)           # and `sent` only goes to the sending device
    phone.chat(bob.id, "again", msg_id=mid)   # a resend is no new message: no second copy
    assert phone.expect_ack(mid, "sent")["duplicate"] is True
    laptop.assert_no_frame(0.5)


def test_allow_syncs_read_state_to_the_readers_other_devices(allow):
    alice, bob = allow.minted_user("a"), allow.minted_user("b")
    phone, laptop = allow.connect(alice), allow.connect(alice)
    cb = allow.connect(bob)
    mid = new_msg_id()
    cb.chat(alice.id, "read me", msg_id=mid)
    phone.expect("chat"), laptop.expect("chat")
    phone.read(bob.id, [mid])
    receipt = cb.expect("read", skip=("pong", "ack"))
    assert receipt["peerId"] == alice.id and receipt["msgIds"] == [mid] and "own" not in receipt
    own = laptop.expect("read")
    assert own == {"peerId": bob.id, "msgIds": [mid], "timestamp": receipt["timestamp"],
                   "own": True}
    phone.assert_no_frame(0.5)            # the reader itself gets nothing back
    phone.read(bob.id, [mid])             # nothing newly marked: nobody hears of it
    laptop.assert_no_frame(0.5)


def test_allow_presence_counts_devices(allow):
    alice, bob = allow.minted_user("a"), allow.minted_user("b")
    befriend(allow, alice, bob)
    cb = allow.connect(bob)
    phone = allow.connect(alice)
    assert cb.expect("online")["userId"] == alice.id
    laptop = allow.connect(alice)
    cb.assert_no_frame(0.5)               # a second device: no second `online`
    phone.close()
    cb.assert_no_frame(0.8)               # one device left: not offline
    laptop.assert_open()
    laptop.close()
    assert cb.expect("offline", timeout=10)["userId"] == alice.id


def test_allow_refuses_a_device_over_the_limit_with_409(allow):
    alice = allow.minted_user("a")
    devices = [allow.connect(alice) for _ in range(3)]     # MaxDevicesPerUser 3
    answer = allow.handshake(alice.token)
    assert answer.status == 409
    assert answer.json["code"] == "too_many_devices"
    for d in devices:
        d.assert_open()                   # nobody was kicked
    devices[0].close()

    def fourth():
        try:
            return allow.connect(alice)
        except websocket.WebSocketBadStatusException:
            return None       # 409 until the closed device's unregister
    # once one device has gone, a new one is let in
    wait_until(fourth, timeout=10, message="a device slot did not free up").assert_open()


# -- one-per-platform ---------------------------------------------------------------------

def test_invalid_platform_is_refused_before_the_upgrade(per_platform):
    alice = per_platform.minted_user("a")
    for bad in ("tv", "WEB", "web%20"):
        answer = per_platform.handshake(alice.token, path=f"/ws?platform={bad}")
        assert answer.status == 400, bad
        assert answer.json["code"] == "bad_request"


def test_one_per_platform_kicks_only_the_same_platform(per_platform):
    alice, bob = per_platform.minted_user("a"), per_platform.minted_user("b")
    befriend(per_platform, alice, bob)
    cb = per_platform.connect(bob)
    web = on(per_platform, alice, "web")
    assert cb.expect("online")["userId"] == alice.id
    ios = on(per_platform, alice, "ios")
    legacy = on(per_platform, alice)       # no platform: "unknown", a platform of its own
    web2 = on(per_platform, alice, "web")
    assert web.expect_close() == 4001
    assert web.close_reason == "replaced by a newer login"
    ios.assert_open()
    legacy.assert_open()
    cb.assert_no_frame(0.5)               # a replaced device is never seen offline
    mid = new_msg_id()
    cb.chat(alice.id, "hi all", msg_id=mid)
    for device in (ios, legacy, web2):
        assert device.expect("chat")["msgId"] == mid
    for device in (ios, legacy, web2):
        device.close()
    assert cb.expect("offline", skip=("pong", "ack"), timeout=10)["userId"] == alice.id


def test_platform_parameter_is_accepted_in_kick_mode_and_changes_nothing(system_factory):
    s = system_factory()                  # MultiLogin kick, the default
    alice = s.minted_user("a")
    web = on(s, alice, "web")
    ios = on(s, alice, "ios")
    assert web.expect_close() == 4001     # kick replaces whatever the platform
    ios.assert_open()
    assert s.handshake(alice.token, path="/ws?platform=toaster").status == 400
