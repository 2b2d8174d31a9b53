"""The conversation list across two cluster nodes (docs/protocol.md "Conversation
list"): chats sent through either node are in the list read through the other
(services on PostgreSQL), and a flag changed through one node reaches the user's
connections on both as `conversation_updated`.

Without redis-server or PostgreSQL the module is skipped, unless
SKYEIM_REQUIRE_SERVICES=1, which makes that a failure.
"""
from __future__ import annotations

import pytest

from cluster_harness import running_cluster
from harness import new_msg_id

SKIP = ("pong", "group_unread", "online", "offline")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("conv_cluster"), "conv_cluster",
                         ws={"WebSocket": {"MultiLogin": "allow"}}) as system:
        yield system


def test_the_list_and_its_flags_are_the_same_through_both_nodes(cluster):
    n1, n2 = cluster[1], cluster[2]
    me, a, b = cluster.users("cc_me", "cc_a", "cc_b")
    ca, cb = n1.connect(a), n2.connect(b)
    m1, m2 = n1.connect(me), n2.connect(me)
    for client, content in ((ca, "via node 1"), (cb, "via node 2")):
        mid = new_msg_id()
        client.send("chat", {"toUserId": me.id, "msgId": mid, "content": content})
        client.expect_ack(mid, "sent", skip=SKIP)
    for node in (n1, n2):
        r = node.api("GET", "/api/conversations", me)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert [(i["peerId"], i["lastMessage"]["content"]) for i in items] == \
            [(b.id, "via node 2"), (a.id, "via node 1")]
        assert [i["unread"] for i in items] == [1, 1]
    r = n1.api("POST", "/api/conversations/pin", me, json={"peerId": a.id, "pinned": True})
    assert r.status_code == 200, r.text
    for client in (m1, m2):
        got = client.expect("conversation_updated", skip=SKIP + ("chat",))
        assert got == {"peerId": a.id, "muted": False, "pinned": True}
    m2.send("conversations", {"requestId": "n2", "limit": 1})
    page = m2.expect("conversations", skip=SKIP + ("chat",))
    assert page["requestId"] == "n2" and [i["peerId"] for i in page["items"]] == [a.id]
    assert page["items"][0]["pinned"] is True and page["nextCursor"]
