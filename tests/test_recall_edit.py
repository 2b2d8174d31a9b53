"""Recall, edit and delete-for-me of 1:1 messages (docs/protocol.md "Recall, edit,
delete", issue 16): live frames to both users' devices, the windows and their
refusals, history and sync markers, idempotency, and across cluster nodes."""
from __future__ import annotations

import time

import pytest

from cluster_harness import running_cluster
from harness import new_msg_id
from sdk_harness import account, cli, next_of, ok, one_line_error
from skyeim.client import ChatMessage, Client, MessageEdited, MessageRecalled, MessagesDeleted

SKIP = ("pong", "online", "offline")


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    """A gateway with a 2 s recall and edit window."""
    from harness import running_system
    with running_system(tmp_path_factory.mktemp("recall_short"),
                        ws={"Chat": {"RecallWindow": 2, "EditWindow": 2}}) as s:
        yield s


def sent_and_received(system, a_user, b_user, ca, cb, content="hello"):
    mid = ca.chat(b_user, content)
    ca.expect_ack(mid, "sent")
    ca.expect_ack(mid, "delivered")
    got = cb.expect("chat", skip=SKIP)
    assert got["msgId"] == mid
    return mid, got["seq"]


def history(system, user, peer) -> dict:
    r = system.api("GET", f"/api/messages?peerId={peer.id}", token=user)
    assert r.status_code == 200, r.text
    return {m["msgId"]: m for m in r.json()["messages"]}


def test_a_recall_reaches_both_sides_and_history_keeps_a_marker(system):
    alice, bob = system.users("rc_a", "rc_b")
    ca, cb, ca2 = system.connect(alice), system.connect(bob), None
    mid, seq = sent_and_received(system, alice, bob, ca, cb, "oops, wrong chat")
    ca.send("recall", {"msgId": mid})
    for c in (ca, cb):
        frame = c.expect("message_recalled", skip=SKIP)
        assert (frame["msgId"], frame["fromUserId"], frame["toUserId"], frame["seq"]) == \
            (mid, alice.id, bob.id, seq)
        assert isinstance(frame["recalledAt"], int)
    for viewer, peer in ((alice, bob), (bob, alice)):
        m = history(system, viewer, peer)[mid]
        assert m["recalled"] is True and m["content"] == "" and m["seq"] == seq
    # idempotent: again, the same frame, no error
    ca.send("recall", {"msgId": mid})
    assert ca.expect("message_recalled", skip=SKIP)["msgId"] == mid
    # a resend of the msgId is a duplicate and does not bring the content back
    ca.chat(bob, "oops, wrong chat", msg_id=mid)
    assert ca.expect_ack(mid, "sent", skip=SKIP + ("message_recalled",))["duplicate"] is True
    assert history(system, bob, alice)[mid]["content"] == ""


def test_a_recalled_unread_message_is_not_pushed_at_the_next_connect(system):
    alice, bob = system.users("rc_off_a", "rc_off_b")
    ca = system.connect(alice)
    kept, recalled = ca.chat(bob, "keep me"), ca.chat(bob, "take me back")
    ca.expect_ack(kept, "sent")
    ca.expect_ack(recalled, "sent")
    ca.send("recall", {"msgId": recalled})
    assert ca.expect("message_recalled", skip=SKIP)["msgId"] == recalled
    cb = system.connect(bob)
    assert [m["msgId"] for m in cb.backlog] == [kept]


def test_only_the_sender_recalls_and_only_its_own_messages(system):
    alice, bob = system.users("rc_own_a", "rc_own_b")
    ca, cb = system.connect(alice), system.connect(bob)
    mid, _ = sent_and_received(system, alice, bob, ca, cb)
    cb.send("recall", {"msgId": mid})          # bob did not send it
    cb.expect_error("not_found", mid, skip=SKIP)
    unknown = new_msg_id()
    ca.send("recall", {"msgId": unknown})
    ca.expect_error("not_found", unknown, skip=SKIP)
    assert history(system, bob, alice)[mid]["content"] == "hello"


def test_recall_and_edit_after_their_windows_are_refused_too_late(short):
    alice, bob = short.users("rc_late_a", "rc_late_b")
    ca, cb = short.connect(alice), short.connect(bob)
    mid, _ = sent_and_received(short, alice, bob, ca, cb, "old news")
    time.sleep(2.5)
    ca.send("recall", {"msgId": mid})
    err = ca.expect_error("too_late", mid, skip=SKIP)
    assert "2 s" in err["message"]
    ca.send("edit", {"msgId": mid, "content": "new news"})
    ca.expect_error("too_late", mid, skip=SKIP)
    cb.assert_no_frame(0.5, skip=SKIP)
    assert history(short, bob, alice)[mid]["content"] == "old news"


def test_an_edit_reaches_both_sides_and_history_has_the_new_content(system):
    alice, bob = system.users("ed_a", "ed_b")
    ca, cb = system.connect(alice), system.connect(bob)
    mid, seq = sent_and_received(system, alice, bob, ca, cb, "see you at 5")
    ca.send("edit", {"msgId": mid, "content": "see you at 6"})
    for c in (ca, cb):
        frame = c.expect("message_edited", skip=SKIP)
        assert (frame["msgId"], frame["seq"], frame["content"]) == (mid, seq, "see you at 6")
        assert frame["contentType"] == 1 and isinstance(frame["editedAt"], int)
    m = history(system, bob, alice)[mid]
    assert (m["content"], m["edited"]) == ("see you at 6", True)
    # the same edit again changes nothing and answers the same
    ca.send("edit", {"msgId": mid, "content": "see you at 6"})
    assert ca.expect("message_edited", skip=SKIP)["editedAt"] == frame["editedAt"]
    # an edit of a recalled message is refused
    ca.send("recall", {"msgId": mid})
    ca.expect("message_recalled", skip=SKIP)
    ca.send("edit", {"msgId": mid, "content": "too late now"})
    ca.expect_error("recalled", mid, skip=SKIP)


def test_bad_recall_edit_and_delete_frames_get_bad_request(system):
    alice, bob = system.users("ed_bad_a", "ed_bad_b")
    ca = system.connect(alice)
    ca.send("recall", {})
    ca.expect_error("bad_request", None)
    mid = new_msg_id()
    ca.send("edit", {"msgId": mid, "content": ""})
    ca.expect_error("bad_request", mid)
    ca.send("delete", {"peerId": bob.id, "msgIds": []})
    ca.expect_error("bad_request", None)
    ca.send("delete", {"peerId": alice.id, "msgIds": [mid]})
    ca.expect_error("bad_request", None)


def test_delete_for_me_hides_from_my_history_only(system):
    alice, bob = system.users("del_a", "del_b")
    ca, cb = system.connect(alice), system.connect(bob)
    mine, _ = sent_and_received(system, alice, bob, ca, cb, "mine")
    theirs = cb.chat(alice, "theirs")
    cb.expect_ack(theirs, "sent", skip=SKIP)
    assert ca.expect("chat", skip=SKIP + ("ack",))["msgId"] == theirs
    ca.send("delete", {"peerId": bob.id, "msgIds": [mine, theirs, new_msg_id()]})
    frame = ca.expect("messages_deleted", skip=SKIP + ("ack",))
    assert frame == {"peerId": bob.id, "msgIds": [mine, theirs]}
    assert set(history(system, alice, bob)) == set()
    assert {mine, theirs} <= set(history(system, bob, alice))
    cb.assert_no_frame(0.3, skip=SKIP + ("ack",))
    # in a sync the deleted messages keep their seq, marked, without content
    ca.send("sync", {"conversations": [{"peerId": bob.id, "afterSeq": 0}]})
    page = ca.expect("sync_messages", skip=SKIP + ("ack",))
    by_id = {m["msgId"]: m for m in page["messages"]}
    assert by_id[mine]["deleted"] is True and by_id[mine]["content"] == ""
    ca.expect("sync_complete", skip=SKIP + ("ack",))


def test_a_device_that_was_away_learns_of_changes_at_its_next_sync(system):
    alice, bob = system.users("sync_ch_a", "sync_ch_b")
    ca, cb = system.connect(alice), system.connect(bob)
    edited, seq1 = sent_and_received(system, alice, bob, ca, cb, "draft")
    recalled, seq2 = sent_and_received(system, alice, bob, ca, cb, "secret")
    untouched, seq3 = sent_and_received(system, alice, bob, ca, cb, "fine")
    cb.send("sync", {"conversations": [{"peerId": alice.id, "afterSeq": seq3}]})
    since = cb.expect("sync_complete", skip=SKIP)["serverTime"]
    cb.close()
    ca.send("edit", {"msgId": edited, "content": "final"})
    ca.expect("message_edited", skip=SKIP)
    ca.send("recall", {"msgId": recalled})
    ca.expect("message_recalled", skip=SKIP)
    cb = system.connect(bob)
    cb.send("sync", {"conversations": [{"peerId": alice.id, "afterSeq": seq3}],
                     "changedSince": since})
    frames = [cb.expect(t, skip=SKIP) for t in ("message_edited", "message_recalled",
                                                  "sync_complete")]
    assert (frames[0]["msgId"], frames[0]["content"]) == (edited, "final")
    assert frames[1]["msgId"] == recalled
    # without changedSince, a v1.1 sync is as before: nothing about changes
    cb.send("sync", {"conversations": [{"peerId": alice.id, "afterSeq": seq3}]})
    cb.expect("sync_complete", skip=SKIP)


def test_recall_and_edit_reach_the_peer_on_another_node(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("recall_cluster"), "recall_cluster") as cluster:
        alice, bob = cluster.users("rcc_a", "rcc_b")
        ca = cluster.nodes[0].connect(alice)
        cb = cluster.nodes[1].connect(bob)
        mid, _ = sent_and_received(cluster, alice, bob, ca, cb, "across nodes")
        ca.send("edit", {"msgId": mid, "content": "edited across nodes"})
        assert cb.expect("message_edited", skip=SKIP)["content"] == "edited across nodes"
        ca.send("recall", {"msgId": mid})
        assert cb.expect("message_recalled", skip=SKIP)["msgId"] == mid


def test_the_sdk_recalls_edits_deletes_and_catches_up_after_a_reconnect(system):
    alice, bob = system.users("sdk_ed_a", "sdk_ed_b")
    a, b = Client(system.ws_url, alice.token), Client(system.ws_url, bob.token)
    a.connect()
    b.connect()
    try:
        first = a.send_chat(bob.id, "first draft", wait="delivered")
        second = a.send_chat(bob.id, "to be recalled", wait="delivered")
        next_of(b, ChatMessage, msg_id=second.msg_id)
        a.edit(first.msg_id, "final text")
        edited = next_of(b, MessageEdited, msg_id=first.msg_id)
        assert (edited.content, edited.from_user_id, edited.seq) == ("final text", alice.id, first.seq)
        a.recall(second.msg_id)
        assert next_of(b, MessageRecalled, msg_id=second.msg_id).seq == second.seq
        b.delete_for_me(alice.id, [first.msg_id])
        assert next_of(b, MessagesDeleted).msg_ids == (first.msg_id,)
        # bob away: alice edits again; bob's next sync (after the reconnect) tells him
        b.close()
        a.edit(first.msg_id, "final text, really")
        next_of(a, MessageEdited, content="final text, really")
        b2 = Client(system.ws_url, bob.token)
        b2.track(alice.id, second.seq)
        b2.connect()
        try:
            assert next_of(b2, MessageEdited, msg_id=first.msg_id).content == "final text, really"
        finally:
            b2.close()
    finally:
        a.close()
        b.close()


def test_the_cli_edits_and_recalls_and_says_why_when_it_cannot(system, tmp_path):
    a_name, a_file, a_id = account(system, tmp_path, "cli_ed_a")
    b_name, b_file, b_id = account(system, tmp_path, "cli_ed_b")
    sent = ok(cli(system, tmp_path, "send", str(b_id), "typo hree", "--msg-id", "cli-edit-1",
                  token_file=a_file))
    assert "cli-edit-1" in sent
    out = ok(cli(system, tmp_path, "edit", "cli-edit-1", "typo here", token_file=a_file))
    assert "edit" in out and "typo here" in out
    assert "recalled" in ok(cli(system, tmp_path, "recall", "cli-edit-1", token_file=a_file))
    err = one_line_error(cli(system, tmp_path, "edit", "cli-edit-1", "again", token_file=a_file))
    assert "recalled: a recalled message cannot be edited" in err
    err = one_line_error(cli(system, tmp_path, "recall", "cli-edit-1", token_file=b_file))
    assert "not_found" in err
    history = ok(cli(system, tmp_path, "history", str(a_id), token_file=b_file))
    assert "typo" not in history and "recalled" in history
