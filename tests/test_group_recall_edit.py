"""Recall and edit of group messages (docs/protocol.md "Recall, edit, delete", issue 16):
`recall`/`edit` with a `groupId`; `message_recalled`/`message_edited` with `groupId` to
every live connection of every member (one node and across two cluster nodes); the
windows and their refusals; group history and sync pages keep the markers; a member
that was away learns of changes at its next group sync (`changedSince`)."""
from __future__ import annotations

import time

import pytest

from cluster_harness import running_cluster
from harness import new_msg_id

SKIP = ("pong", "group_unread", "online", "offline", "group_changed")


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    """A gateway with a 2 s recall and edit window."""
    from harness import running_system
    with running_system(tmp_path_factory.mktemp("group_recall_short"),
                        ws={"Chat": {"RecallWindow": 2, "EditWindow": 2}}) as s:
        yield s


def create_group(api, owner, members, name="recalls") -> int:
    r = api("POST", "/api/groups", owner, json={"name": name, "memberIds": [m.id for m in members]})
    assert r.status_code == 200, r.text
    return r.json()["groupId"]


def two_in_a_group(system, prefix: str):
    """Users ``<prefix>_ann`` and ``<prefix>_bob``, a group of ann's with bob, and a
    connection of each: (ann, bob, gid, ann's connection, bob's connection)."""
    ann, bob = system.users(f"{prefix}_ann", f"{prefix}_bob")
    gid = create_group(system.api, ann, [bob])
    return ann, bob, gid, system.connect(ann), system.connect(bob)


def posted(sender, others, gid, content="hello group", mentions=None) -> tuple[str, int]:
    """``sender`` sends a groupchat; every one of ``others`` gets it. Its msgId and seq."""
    mid = new_msg_id()
    data = {"groupId": gid, "msgId": mid, "content": content}
    if mentions:
        data["mentions"] = mentions
    sender.send("groupchat", data)
    seq = sender.expect_ack(mid, "sent", skip=SKIP)["seq"]
    for c in others:
        assert c.expect("groupchat", skip=SKIP)["msgId"] == mid
    return mid, seq


def history(system, user, gid) -> dict:
    r = system.api("GET", f"/api/groups/{gid}/messages", user)
    assert r.status_code == 200, r.text
    return {m["msgId"]: m for m in r.json()["messages"]}


def read_sync(client) -> tuple[list, list, dict]:
    """(sync pages, change frames, sync_complete) of one sync answer."""
    pages, changes = [], []
    for _ in range(200):                # bounded: a test's answers are small
        frame = client.recv_frame(10.0)
        kind = frame["type"]
        if kind in SKIP:
            continue
        if kind == "sync_complete":
            return pages, changes, frame["data"]
        if kind in ("message_recalled", "message_edited"):
            changes.append(frame)
        else:
            assert kind == "sync_messages", frame
            pages.append(frame["data"])
    raise AssertionError("no sync_complete")


def test_a_recall_reaches_every_member_and_history_and_sync_keep_a_marker(system):
    ann, bob, cat, out = system.users("gr_ann", "gr_bob", "gr_cat", "gr_out")
    gid = create_group(system.api, ann, [bob, cat])
    ca, cb, cc, co = (system.connect(u) for u in (ann, bob, cat, out))
    mid, seq = posted(ca, (cb, cc), gid, "oops, wrong group", mentions=[bob.id])
    assert system.api("GET", "/api/groups", bob).json()["groups"][0]["mentions"] == 1
    ca.send("recall", {"msgId": mid, "groupId": gid})
    for c in (ca, cb, cc):
        frame = c.expect("message_recalled", skip=SKIP)
        assert isinstance(frame.pop("recalledAt"), int)
        assert frame == {"msgId": mid, "fromUserId": ann.id, "groupId": gid, "seq": seq}
    co.assert_no_frame(0.3, skip=SKIP)
    for viewer in (ann, bob):
        m = history(system, viewer, gid)[mid]
        assert (m["recalled"], m["content"], m["seq"]) == (True, "", seq)
        assert "mentions" not in m
    # a recalled mention is no longer counted
    assert "mentions" not in system.api("GET", "/api/groups", bob).json()["groups"][0]
    cb.send("sync", {"requestId": "s1", "conversations": [{"groupId": gid, "afterSeq": 0}]})
    pages, _, _ = read_sync(cb)
    synced = {m["msgId"]: m for p in pages for m in p["messages"]}
    assert synced[mid]["recalled"] is True and synced[mid]["content"] == ""
    # idempotent: again, the same frame to everyone, no error
    ca.send("recall", {"msgId": mid, "groupId": gid})
    for c in (ca, cb, cc):
        assert c.expect("message_recalled", skip=SKIP)["msgId"] == mid
    # a recalled message cannot be edited
    ca.send("edit", {"msgId": mid, "groupId": gid, "content": "back"})
    ca.expect_error("recalled", mid, skip=SKIP)
    # a resend of the msgId is a duplicate: the content stays away
    ca.send("groupchat", {"groupId": gid, "msgId": mid, "content": "oops, wrong group"})
    assert ca.expect_ack(mid, "sent", skip=SKIP)["duplicate"] is True
    assert history(system, cat, gid)[mid]["content"] == ""


def test_an_edit_reaches_every_member_and_history_has_the_new_content(system):
    ann, bob, gid, ca, cb = two_in_a_group(system, "ge")
    mid, seq = posted(ca, (cb,), gid, "teh meeting")
    ca.send("edit", {"msgId": mid, "groupId": gid, "content": "the meeting"})
    for c in (ca, cb):
        frame = c.expect("message_edited", skip=SKIP)
        assert isinstance(frame.pop("editedAt"), int)
        assert frame == {"msgId": mid, "fromUserId": ann.id, "groupId": gid, "seq": seq,
                         "content": "the meeting", "contentType": 1}
    m = history(system, bob, gid)[mid]
    assert (m["content"], m["edited"], m["seq"]) == ("the meeting", True, seq)
    # the same content again: the same frame, nothing changes
    ca.send("edit", {"msgId": mid, "groupId": gid, "content": "the meeting"})
    assert ca.expect("message_edited", skip=SKIP)["content"] == "the meeting"


def test_only_the_sender_and_only_members_recall_or_edit(system):
    ann, bob, out = system.users("go_ann", "go_bob", "go_out")
    gid = create_group(system.api, ann, [bob])
    other = create_group(system.api, ann, [bob], name="other")
    ca, cb, co = system.connect(ann), system.connect(bob), system.connect(out)
    mid, _ = posted(ca, (cb,), gid)
    cb.send("recall", {"msgId": mid, "groupId": gid})          # someone else's message
    cb.expect_error("not_found", mid, skip=SKIP)
    cb.send("edit", {"msgId": mid, "groupId": gid, "content": "mine now"})
    cb.expect_error("not_found", mid, skip=SKIP)
    ca.send("recall", {"msgId": mid, "groupId": other})        # the wrong group
    ca.expect_error("not_found", mid, skip=SKIP)
    ca.send("recall", {"msgId": mid})                          # no groupId: a 1:1 message
    ca.expect_error("not_found", mid, skip=SKIP)
    co.send("recall", {"msgId": mid, "groupId": gid})          # not a member
    co.expect_error("forbidden", mid, skip=SKIP)
    for bad in ({"msgId": mid, "groupId": 0}, {"msgId": mid, "groupId": "7"},
                {"msgId": mid, "groupId": gid, "content": ""}):
        ca.send("edit", bad)
        ca.expect_error("bad_request", mid, skip=SKIP)
    assert history(system, bob, gid)[mid]["content"] == "hello group"
    ca.assert_open()


def test_recall_and_edit_after_their_windows_are_refused_too_late(short):
    ann, bob, gid, ca, cb = two_in_a_group(short, "gw")
    mid, _ = posted(ca, (cb,), gid)
    time.sleep(2.3)
    ca.send("edit", {"msgId": mid, "groupId": gid, "content": "later"})
    err = ca.expect_error("too_late", mid, skip=SKIP)
    assert "2 s" in err["message"]
    ca.send("recall", {"msgId": mid, "groupId": gid})
    ca.expect_error("too_late", mid, skip=SKIP)
    cb.assert_no_frame(0.3, skip=SKIP)
    assert history(short, bob, gid)[mid]["content"] == "hello group"


def test_a_member_that_was_away_learns_of_changes_at_its_next_group_sync(system):
    ann, bob, gid, ca, cb = two_in_a_group(system, "gs")
    m1, s1 = posted(ca, (cb,), gid, "first")
    m2, s2 = posted(ca, (cb,), gid, "second")
    cb.send("sync", {"conversations": [{"groupId": gid, "afterSeq": s2}], "changedSince": 0})
    _, _, done = read_sync(cb)
    since = done["serverTime"]
    cb.close()
    ca.send("recall", {"msgId": m1, "groupId": gid})
    ca.expect("message_recalled", skip=SKIP)
    ca.send("edit", {"msgId": m2, "groupId": gid, "content": "second, fixed"})
    ca.expect("message_edited", skip=SKIP)
    m3, s3 = posted(ca, (), gid, "third")
    cb = system.connect(bob)
    cb.send("sync", {"requestId": "back", "changedSince": since,
                     "conversations": [{"groupId": gid, "afterSeq": s2}]})
    pages, changes, done = read_sync(cb)
    assert [m["msgId"] for p in pages for m in p["messages"]] == [m3]
    assert [(f["type"], f["data"]["msgId"], f["data"]["groupId"]) for f in changes] == [
        ("message_recalled", m1, gid), ("message_edited", m2, gid)]
    assert changes[1]["data"]["content"] == "second, fixed"
    assert done["conversations"] == [{"groupId": gid, "lastSeq": s3, "hasMore": False}]
    # nothing changed since this sync: no change frames
    cb.send("sync", {"changedSince": done["serverTime"],
                     "conversations": [{"groupId": gid, "afterSeq": s3}]})
    assert read_sync(cb)[1] == []


def test_recall_and_edit_reach_members_on_the_other_node(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("group_recall_cluster"),
                         "group_recall_cluster") as cluster:
        n1, n2 = cluster[1], cluster[2]
        ann, bob, cat = cluster.users("grc_ann", "grc_bob", "grc_cat")
        gid = create_group(n1.api, ann, [bob, cat])
        a1, b2, c1 = n1.connect(ann), n2.connect(bob), n1.connect(cat)
        mid, seq = posted(a1, (b2, c1), gid)
        a1.send("edit", {"msgId": mid, "groupId": gid, "content": "edited on node 1"})
        for c in (a1, b2, c1):
            assert c.expect("message_edited", skip=SKIP)["content"] == "edited on node 1"
        a1.send("recall", {"msgId": mid, "groupId": gid})
        for c in (a1, b2, c1):
            frame = c.expect("message_recalled", skip=SKIP)
            assert (frame["msgId"], frame["groupId"], frame["seq"]) == (mid, gid, seq)
        r = n2.api("GET", f"/api/groups/{gid}/messages", bob)
        assert r.json()["messages"][0]["recalled"] is True


def test_a_message_service_without_the_routes_gets_not_supported(system_factory, tmp_path):
    """PROTOCOL.md 9.1: the group recall and edit routes are optional; a section-6-only
    Message service (the stand-in) answers 404, and the frame gets `not_supported`."""
    from standin_harness import running_standin
    with running_standin("message", tmp_path) as standin:
        s = system_factory(standalone=False, ws={"MessageRpc": {"Endpoints": [standin.endpoint]}})
        ann, bob = s.users("gns_ann", "gns_bob")
        gid = create_group(s.api, ann, [bob])
        c = s.connect(ann)
        c.send("recall", {"msgId": "m-1", "groupId": gid})
        assert "cannot recall or edit" in c.expect_error("not_supported", "m-1", skip=SKIP)["message"]
        c.send("edit", {"msgId": "m-1", "groupId": gid, "content": "x"})
        c.expect_error("not_supported", "m-1", skip=SKIP)
        c.assert_open()
        assert "Traceback" not in s.log_text()
