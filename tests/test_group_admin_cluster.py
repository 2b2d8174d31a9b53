"""Group administration and mentions across two cluster nodes (docs/protocol.md "Group
administration", "Mentions in groups"): a change made through one node reaches members
on the other as `group_changed` (a kicked member and a dismissed group's members
included), and the other node's member cache learns of a mute at once.

Without redis-server or PostgreSQL the module is skipped, unless
SKYEIM_REQUIRE_SERVICES=1, which makes that a failure.
"""
from __future__ import annotations

import pytest

from cluster_harness import running_cluster
from harness import new_msg_id

SKIP = ("pong", "group_unread")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # a long cache TTL: only the invalidation can make the other node see a change
    with running_cluster(tmp_path_factory.mktemp("group_admin_cluster"), "group_admin_cluster",
                         ws={"Groups": {"MembersCacheTtlMs": 600_000}}) as system:
        yield system


def changed(client) -> dict:
    return client.expect("group_changed", skip=SKIP + ("groupchat",))


def test_changes_through_one_node_reach_members_on_the_other(cluster):
    n1, n2 = cluster[1], cluster[2]
    ann, bob, cat = cluster.users("gac_ann", "gac_bob", "gac_cat")
    r = n1.api("POST", "/api/groups", ann, json={"name": "x", "memberIds": [bob.id, cat.id]})
    assert r.status_code == 200, r.text
    gid = r.json()["groupId"]
    a1, b2, c2 = n1.connect(ann), n2.connect(bob), n2.connect(cat)
    # a mention sent on node 2 reaches the owner on node 1 with its mentions
    mid = new_msg_id()
    b2.send("groupchat", {"groupId": gid, "msgId": mid, "content": "@ann", "mentions": [ann.id]})
    b2.expect_ack(mid, "sent", skip=SKIP)
    got = a1.expect("groupchat", skip=SKIP)
    assert (got["msgId"], got["mentions"]) == (mid, [ann.id])
    c2.expect("groupchat", skip=SKIP)
    # node 2 has the list cached (for 10 minutes): the mute made through node 1 drops it
    r = n1.api("POST", f"/api/groups/{gid}/members/{bob.id}/mute", ann, json={"seconds": 300})
    assert r.status_code == 200, r.text
    for c in (a1, b2, c2):
        assert changed(c)["change"] == "mute"
    mid = new_msg_id()
    b2.send("groupchat", {"groupId": gid, "msgId": mid, "content": "still here?"})
    b2.expect_error("muted", mid, skip=SKIP)
    # a kick through node 1: the kicked member on node 2 hears it
    r = n1.api("DELETE", f"/api/groups/{gid}/members/{cat.id}", ann)
    assert r.status_code == 200, r.text
    for c in (a1, b2, c2):
        assert changed(c) == {"groupId": gid, "change": "kick", "byUserId": ann.id,
                              "userId": cat.id}
    mid = new_msg_id()
    c2.send("groupchat", {"groupId": gid, "msgId": mid, "content": "hello?"})
    c2.expect_error("forbidden", mid, skip=SKIP)
    # a rename through node 2, a dismissal through node 1
    assert n2.api("PATCH", f"/api/groups/{gid}", ann, json={"name": "y"}).status_code == 200
    for c in (a1, b2):
        assert changed(c)["name"] == "y"
    assert n1.api("DELETE", f"/api/groups/{gid}", ann).status_code == 200
    for c in (a1, b2):
        assert changed(c) == {"groupId": gid, "change": "dismiss", "byUserId": ann.id}
    c2.assert_no_frame(0.5, skip=SKIP)
