"""Group chat across two cluster nodes (docs/protocol.md "Groups", PROTOCOL.md section 8):
a group frame is published once per cluster and every node fans it out to its own
members; an invite or a leave through one node reaches the other's member cache at once.

Without redis-server or PostgreSQL the module is skipped, unless
SKYEIM_REQUIRE_SERVICES=1, which makes that a failure.
"""
from __future__ import annotations

import os

import pytest

from cluster_harness import running_cluster
from harness import new_msg_id

REQUIRE_SERVICES = os.environ.get("SKYEIM_REQUIRE_SERVICES") == "1"
SKIP = ("pong", "group_unread")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # a long cache TTL: only the invalidation can make the other node see a change
    with running_cluster(tmp_path_factory.mktemp("groups_cluster"), "groups_cluster",
                         ws={"WebSocket": {"MultiLogin": "allow"},
                             "Groups": {"MembersCacheTtlMs": 600_000}}) as system:
        yield system


def send(client, gid, content):
    mid = new_msg_id()
    client.send("groupchat", {"groupId": gid, "msgId": mid, "content": content})
    ack = client.expect_ack(mid, "sent", skip=SKIP + ("groupchat",))
    return mid, ack


def test_a_groupchat_reaches_members_and_other_devices_on_both_nodes(cluster):
    n1, n2 = cluster[1], cluster[2]
    ann, bob, cat, dan = cluster.users("gc_ann", "gc_bob", "gc_cat", "gc_dan")
    r = n1.api("POST", "/api/groups", ann, json={"name": "x", "memberIds": [bob.id, cat.id]})
    assert r.status_code == 200, r.text
    gid = r.json()["groupId"]
    a1, a2 = n1.connect(ann), n2.connect(ann)
    b2, c1, d2 = n2.connect(bob), n1.connect(cat), n2.connect(dan)
    mid, ack = send(a1, gid, "across nodes")
    for c in (a2, b2, c1):
        got = c.expect("groupchat", skip=SKIP)
        assert (got["msgId"], got["seq"], got["fromUserId"]) == (mid, ack["seq"], ann.id)
    for c in (a1, a2, b2, c1, d2):
        c.assert_no_frame(0.5, skip=SKIP)
    # dan is invited through node 1; node 2, which holds dan, re-reads the list at once
    r = n1.api("POST", f"/api/groups/{gid}/members", ann, json={"userIds": [dan.id]})
    assert r.status_code == 200 and r.json() == {"added": [dan.id]}
    # every member on both nodes hears of it (group_changed join), dan too
    for c in (a1, a2, b2, c1, d2):
        assert c.expect("group_changed", skip=SKIP) == {
            "groupId": gid, "change": "join", "byUserId": ann.id, "userIds": [dan.id]}
    # bob leaves through node 2; node 1 must stop counting him too (he is on node 2 only,
    # so the check is that node 2's own fan-out of a node-1 message skips him)
    r = n2.api("POST", f"/api/groups/{gid}/leave", bob)
    assert r.status_code == 200 and r.json()["left"] is True
    for c in (a1, a2, b2, c1, d2):       # bob's own connection hears it as well
        assert c.expect("group_changed", skip=SKIP) == {
            "groupId": gid, "change": "leave", "byUserId": bob.id, "userId": bob.id,
            "ownerId": ann.id}
    mid, _ = send(c1, gid, "welcome dan")
    for c in (a1, a2, d2):
        assert c.expect("groupchat", skip=SKIP)["msgId"] == mid
    b2.assert_no_frame(0.5, skip=SKIP)
    c1.assert_no_frame(0.2, skip=SKIP)
    # dan may send from node 2 at once: node 2's cache knows he is a member
    mid, _ = send(d2, gid, "thanks")
    assert c1.expect("groupchat", skip=SKIP)["msgId"] == mid
    # typing in the group: the other members on both nodes hear it, the typist's devices not
    a1.send("typing", {"groupId": gid})
    for c in (d2, c1):
        t = c.expect("typing", skip=SKIP + ("groupchat",))
        assert (t["fromUserId"], t["groupId"], t["state"]) == (ann.id, gid, "typing")
    for c in (a1, a2):
        c.assert_no_frame(0.5, skip=SKIP + ("groupchat",))
