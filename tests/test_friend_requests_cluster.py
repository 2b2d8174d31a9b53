"""Friend requests and blocking across two cluster nodes (docs/protocol.md "Friend
requests and blocking"; PROTOCOL.md section 8): the live frames reach the other
node, and a block made on one node holds on the other within Friends.BlockCacheTtlMs."""
from __future__ import annotations

import time

import pytest

from cluster_harness import running_cluster
from harness import new_msg_id
from relations_harness import accept, block, friend_ids, request_friend, requests_of

BLOCK_TTL_MS = 500


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ws = {"Friends": {"RequireAcceptance": True, "BlockCacheTtlMs": BLOCK_TTL_MS},
          "AuthRpc": {"Timeout": 15000}}
    with running_cluster(tmp_path_factory.mktemp("fr_cluster"), "fr_cluster", nodes=2,
                         ws=ws) as system:
        yield system


def test_requests_answers_and_blocks_cross_nodes(cluster):
    n1, n2 = cluster[1], cluster[2]
    alice, bob, carol = cluster.users("frx_a", "frx_b", "frx_c")
    request_friend(n1, carol, bob)                          # pending while bob is away
    ca, cb = n1.connect(alice), n2.connect(bob)
    pushed = cb.expect("friend_requests")["requests"]
    assert [r["fromUserId"] for r in pushed] == [carol.id]
    # a request made on node 1 reaches bob on node 2, the answer made there reaches alice
    request_friend(n1, alice, bob)
    assert cb.expect("friend_request")["fromUserId"] == alice.id
    assert [r["userId"] for r in requests_of(n2, bob)["incoming"]] == [carol.id, alice.id]
    accept(n2, bob, alice)
    frames = {f["type"]: f["data"] for f in ca.frames_for(3.0)}
    assert frames["friend_request_answered"] == {"userId": bob.id, "accepted": True}
    assert frames["friend_added"]["userId"] == bob.id
    assert cb.expect("friend_added")["userId"] == alice.id
    mid = new_msg_id()
    cb.chat(alice.id, "hi from node 2", msg_id=mid)
    cb.expect_ack(mid, "sent")
    assert ca.expect("chat")["msgId"] == mid
    cb.expect_ack(mid, "delivered", timeout=10)
    # warm node 2's block cache for the pair: not blocked
    cb.send("typing", {"toUserId": alice.id, "state": "typing"})
    assert ca.expect("typing")["fromUserId"] == bob.id
    # alice blocks bob on node 1: bob on node 2 hears friend_removed; once node 2's
    # cache entry expires his chats are refused and his typing dropped there too
    block(n1, alice, bob)
    assert cb.expect("friend_removed") == {"userId": alice.id}
    assert ca.expect("friend_removed") == {"userId": bob.id}
    time.sleep(BLOCK_TTL_MS / 1000 + 0.5)
    mid = new_msg_id()
    cb.chat(alice.id, "still there?", msg_id=mid)
    cb.expect_error("not_friends", mid)
    cb.send("typing", {"toUserId": alice.id, "state": "typing"})
    ca.assert_no_frame(1.0)
    # presence: bob reconnecting on node 2 is not heard by alice on node 1
    cb.close()
    cb = n2.connect(bob)
    assert cb.connected["onlineFriends"] == []
    ca.assert_no_frame(1.0)
    assert friend_ids(n2, bob) == [] and friend_ids(n1, alice) == []
