"""Several devices per user and typing across cluster nodes (PROTOCOL.md section 8 with
the docs/protocol.md extensions): two gateway nodes, the services on one PostgreSQL
database, a private redis-server. One user's devices sit on different nodes.

Without redis-server or PostgreSQL the module is skipped, unless
SKYEIM_REQUIRE_SERVICES=1, which makes that a failure.
"""
from __future__ import annotations

import os

import pytest
import websocket

from cluster_harness import ClusterSystem, running_cluster
from harness import new_msg_id

REQUIRE_SERVICES = os.environ.get("SKYEIM_REQUIRE_SERVICES") == "1"
KICK_WITHIN = 2.0 + 1.5      # section 8's 2 s, plus slack for a loaded machine


def _cluster(tmp_path_factory, name: str, ws: dict):
    with running_cluster(tmp_path_factory.mktemp(name), name, ws=ws) as system:
        yield system


@pytest.fixture(scope="module")
def allow(tmp_path_factory):
    yield from _cluster(tmp_path_factory, "mdc_allow",
                        {"WebSocket": {"MultiLogin": "allow", "MaxDevicesPerUser": 2}})


@pytest.fixture(scope="module")
def per_platform(tmp_path_factory):
    yield from _cluster(tmp_path_factory, "mdc_platform",
                        {"WebSocket": {"MultiLogin": "one-per-platform"}})


def befriend(cluster: ClusterSystem, a, b) -> None:
    r = cluster.service("friend", "POST", "/v1/friends", {"userId": a.id, "friendId": b.id})
    assert r.status_code == 200, r.text


def test_devices_on_two_nodes_all_get_chats_copies_reads_and_typing(allow):
    alice, bob = allow.minted_user("a"), allow.minted_user("b")
    a1, a2 = allow[1].connect(alice), allow[2].connect(alice)
    cb = allow[1].connect(bob)
    a1.assert_open()
    # a chat from bob (node 1) reaches alice's devices on node 1 and node 2
    mid = new_msg_id()
    cb.chat(alice.id, "to both nodes", msg_id=mid)
    cb.expect_ack(mid, "sent")
    for device in (a1, a2):
        assert device.expect("chat")["msgId"] == mid
    cb.expect_ack(mid, "delivered", timeout=10)
    cb.assert_no_frame(1.0)
    # a read on node 2 reaches bob and alice's device on node 1
    a2.read(bob.id, [mid])
    assert cb.expect("read")["msgIds"] == [mid]
    own = a1.expect("read")
    assert own["peerId"] == bob.id and own["own"] is True and own["msgIds"] == [mid]
    # a chat sent on node 1 is copied to alice's device on node 2
    mid2 = new_msg_id()
    a1.chat(bob.id, "sent on node 1", msg_id=mid2)
    a1.expect_ack(mid2, "sent")
    copy = a2.expect("chat")
    assert (copy["msgId"], copy["fromUserId"], copy["toUserId"]) == (mid2, alice.id, bob.id)
    # typing from bob reaches both of alice's devices
    cb.send("typing", {"toUserId": alice.id})
    for device in (a1, a2):
        frame = device.expect("typing", skip=("pong", "ack"))
        assert frame["fromUserId"] == bob.id and frame["state"] == "typing"


def test_presence_offline_only_when_the_last_device_on_any_node_goes(allow):
    alice, bob = allow.minted_user("a"), allow.minted_user("b")
    befriend(allow, alice, bob)
    cb = allow[1].connect(bob)
    a1 = allow[1].connect(alice)
    assert cb.expect("online")["userId"] == alice.id
    a2 = allow[2].connect(alice)
    cb.assert_no_frame(0.5)
    a1.close()
    cb.assert_no_frame(1.0)                # alice is still on node 2
    a2.assert_open()
    a2.close()
    assert cb.expect("offline", timeout=10)["userId"] == alice.id


def test_device_limit_counts_devices_on_every_node(allow):
    alice = allow.minted_user("a")
    a1, a2 = allow[1].connect(alice), allow[2].connect(alice)   # MaxDevicesPerUser 2
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        allow[1].connect(alice)
    assert refused.value.status_code == 409
    a1.assert_open(), a2.assert_open()


def test_one_per_platform_kicks_the_same_platform_on_another_node(per_platform):
    alice, bob = per_platform.minted_user("a"), per_platform.minted_user("b")
    befriend(per_platform, alice, bob)
    cb = per_platform[1].connect(bob)
    ios = per_platform[1].connect(alice, query="platform=ios")
    assert cb.expect("online")["userId"] == alice.id
    web = per_platform[1].connect(alice, query="platform=web")
    ios2 = per_platform[2].connect(alice, query="platform=ios")
    assert ios.expect_close(timeout=KICK_WITHIN) == 4001
    web.assert_open()
    cb.assert_no_frame(0.5)                 # replaced, never seen offline
    mid = new_msg_id()
    cb.chat(alice.id, "hi", msg_id=mid)
    for device in (web, ios2):
        assert device.expect("chat")["msgId"] == mid
    web.close()
    ios2.close()
    assert cb.expect("offline", skip=("pong", "ack"), timeout=10)["userId"] == alice.id
    for node in per_platform.nodes:
        assert node.friends_online(bob) == {alice.id: False}
