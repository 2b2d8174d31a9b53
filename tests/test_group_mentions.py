"""Mentions in groups (docs/protocol.md "Mentions in groups"): `mentions: [userId]` on a
groupchat (members only, deduplicated, at most Groups.MaxMentions), stored with the
message and delivered in the frame, in history and in sync; a mentioned member's
`group_unread` entry counts the mentions since its read cursor. Against a live system."""
from __future__ import annotations

import pytest

from harness import new_msg_id

SKIP = ("pong", "group_unread")


def create_group(system, owner, members) -> int:
    r = system.api("POST", "/api/groups", owner,
                   json_body={"name": "mentions", "memberIds": [m.id for m in members]})
    assert r.status_code == 200, r.text
    return r.json()["groupId"]


def send(client, gid, content, mentions=None) -> tuple[str, dict]:
    mid = new_msg_id()
    data = {"groupId": gid, "msgId": mid, "content": content}
    if mentions is not None:
        data["mentions"] = mentions
    client.send("groupchat", data)
    return mid, client.expect_ack(mid, "sent", skip=SKIP + ("groupchat",))


def unread_entry(system, user, gid) -> dict:
    c = system.connect(user)
    try:
        got = c.expect("group_unread", skip=("pong",))
        return next(g for g in got["groups"] if g["groupId"] == gid)
    finally:
        c.close()


@pytest.fixture(scope="module")
def people(system):
    return system.users("gm_ann", "gm_bob", "gm_cat", "gm_out")


def test_mentions_are_delivered_stored_and_synced(system, people):
    ann, bob, cat, _ = people
    gid = create_group(system, ann, [bob, cat])
    ca, cb, cc = (system.connect(u) for u in (ann, bob, cat))
    mid, _ = send(ca, gid, "@bob @cat look", [bob.id, cat.id, bob.id])
    for c in (cb, cc):
        got = c.expect("groupchat", skip=SKIP)
        assert got["msgId"] == mid and got["mentions"] == [bob.id, cat.id]
    plain, _ = send(ca, gid, "no one")
    assert "mentions" not in cb.expect("groupchat", skip=SKIP)
    history = system.api("GET", f"/api/groups/{gid}/messages", bob).json()["messages"]
    assert [(m["msgId"], m.get("mentions")) for m in history] == \
        [(plain, None), (mid, [bob.id, cat.id])]
    cb.send("sync", {"conversations": [{"groupId": gid}]})
    page = cb.expect("sync_messages", skip=SKIP)
    assert [m.get("mentions") for m in page["messages"]] == [[bob.id, cat.id], None]


def test_group_unread_counts_mentions_since_the_read_cursor(system, people):
    ann, bob, cat, _ = people
    gid = create_group(system, ann, [bob, cat])
    ca = system.connect(ann)
    send(ca, gid, "one", [bob.id])
    send(ca, gid, "two", [cat.id])
    _, ack = send(ca, gid, "three", [bob.id, cat.id])
    entry = unread_entry(system, bob, gid)
    assert (entry["lastSeq"], entry["readSeq"], entry["mentions"]) == (3, 0, 2)
    cb = system.connect(bob)
    cb.send("group_read", {"groupId": gid, "seq": 2})
    cb.assert_no_frame(0.5, skip=SKIP)
    cb.close()
    assert unread_entry(system, bob, gid)["mentions"] == 1
    assert unread_entry(system, cat, gid)["mentions"] == 2
    listed = {g["groupId"]: g for g in system.api("GET", "/api/groups", cat).json()["groups"]}
    assert listed[gid]["mentions"] == 2
    cb = system.connect(bob)
    cb.send("group_read", {"groupId": gid, "seq": ack["seq"]})
    cb.assert_no_frame(0.5, skip=SKIP)
    cb.close()
    assert "mentions" not in unread_entry(system, bob, gid)   # none unread: no count
    listed = {g["groupId"]: g for g in system.api("GET", "/api/groups", bob).json()["groups"]}
    assert "mentions" not in listed[gid]


@pytest.mark.parametrize("mentions", ["all", [0], ["2"], [True], [1.5], list(range(1, 52))])
def test_malformed_mentions_are_bad_requests(system, people, mentions):
    ann, bob, _, _ = people
    gid = create_group(system, ann, [bob])
    ca = system.connect(ann)
    mid = new_msg_id()
    ca.send("groupchat", {"groupId": gid, "msgId": mid, "content": "x", "mentions": mentions})
    ca.expect_error("bad_request", mid, skip=SKIP)


def test_mentioning_a_non_member_is_refused_and_nothing_is_stored(system, people):
    ann, bob, _, out = people
    gid = create_group(system, ann, [bob])
    ca = system.connect(ann)
    mid = new_msg_id()
    ca.send("groupchat", {"groupId": gid, "msgId": mid, "content": "x", "mentions": [out.id]})
    err = ca.expect_error("bad_request", mid, skip=SKIP)
    assert "member" in err["message"]
    assert system.api("GET", f"/api/groups/{gid}/messages", ann).json()["messages"] == []
