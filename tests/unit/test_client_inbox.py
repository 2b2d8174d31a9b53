"""The SDK's inbox (skyeim/client/inbox.py): every message is yielded once,
whether it comes live, as backlog again or in a sync page, and the sync frames
it asks for (a catch-up after `connected`, a range for a gap, the groups that
`group_unread` says are behind). No sockets."""
from __future__ import annotations

from skyeim.client.frames import parse_frame
from skyeim.client.inbox import Inbox

ME, BOB = 1, 2


def chat(msg_id: str, seq: int, frm: int = BOB, to: int = ME):
    return parse_frame({"type": "chat", "data": {"msgId": msg_id, "fromUserId": frm,
                                                 "toUserId": to, "content": "x", "seq": seq}})


def page(*msgs, peer: int = BOB) -> dict:
    return {"requestId": "r", "peerId": peer, "hasMore": False, "messages": [
        {"msgId": m, "fromUserId": BOB, "toUserId": ME, "content": "x", "seq": s} for m, s in msgs]}


def test_a_chat_is_yielded_once_live_or_as_backlog_or_from_a_page():
    box = Inbox()
    assert box.admit(chat("a", 1), ME) is True
    assert box.admit(chat("a", 1), ME) is False                # the backlog pushed again
    got = box.page(page(("c", 3), ("a", 1), ("b", 2)), ME)
    assert [f.msg_id for f in got] == ["b", "c"]               # new ones, in seq order
    assert box.conversations.marks == {BOB: 3}


def test_without_sync_chats_are_not_deduplicated_and_pages_pass_by():
    box = Inbox(sync=False)
    assert box.admit(chat("a", 1), ME) and box.admit(chat("a", 1), ME)
    assert not box.takes_page(page(("a", 1)))
    assert box.takes_page({"groupId": 7, "messages": []})      # groups always are
    assert box.after(parse_frame({"type": "connected", "data": {"userId": ME}}), live=True) == []


def test_my_own_chat_from_this_client_is_not_yielded_back():
    box = Inbox(own=lambda msg_id: msg_id == "mine")
    assert box.admit(chat("mine", 4, frm=ME, to=BOB), ME) is False
    assert box.admit(chat("other-device", 5, frm=ME, to=BOB), ME) is True
    assert box.conversations.marks == {BOB: 5}


def test_connected_asks_for_every_known_conversation_and_a_gap_for_its_range():
    box = Inbox()
    box.conversations.track(BOB, 2)
    connected = parse_frame({"type": "connected", "data": {"userId": ME}})
    assert box.after(connected, live=False) == []
    [sync] = box.after(connected, live=True)
    assert sync["type"] == "sync"
    assert sync["data"]["conversations"] == [{"peerId": BOB, "afterSeq": 2}]
    box.after(parse_frame({"type": "sync_complete", "data": {
        "requestId": sync["data"]["requestId"],
        "conversations": [{"peerId": BOB, "lastSeq": 2, "hasMore": False}]}}), live=True)
    late = chat("z", 5)
    assert box.admit(late, ME)
    [gap] = box.after(late, live=True)
    assert gap["data"]["conversations"] == [{"peerId": BOB, "afterSeq": 2, "beforeSeq": 5}]


def test_my_acked_chat_moves_the_mark():
    box = Inbox()
    box.conversations.track(BOB, 1)
    box.sent(ME, BOB, "m", 2)
    assert box.conversations.marks == {BOB: 2}


def test_group_messages_once_and_the_sync_after_group_unread():
    box = Inbox()
    g = parse_frame({"type": "groupchat", "data": {"groupId": 7, "msgId": "g1", "fromUserId": 3,
                                                   "content": "x", "seq": 1}})
    assert box.admit(g, ME) and not box.admit(g, ME)
    got = box.page({"groupId": 7, "requestId": "r", "hasMore": False, "messages": [
        {"groupId": 7, "msgId": "g2", "fromUserId": 3, "content": "y", "seq": 2},
        {"groupId": 7, "msgId": "g1", "fromUserId": 3, "content": "x", "seq": 1}]}, ME)
    assert [f.msg_id for f in got] == ["g2"] and box.groups.held == {7: 2}
    unread = parse_frame({"type": "group_unread", "data": {"groups": [
        {"groupId": 7, "name": "a", "lastSeq": 5, "readSeq": 0},
        {"groupId": 8, "name": "b", "lastSeq": 3, "readSeq": 3}]}})
    [sync] = box.after(unread, live=True)
    assert sync["data"]["conversations"] == [{"groupId": 7, "afterSeq": 2}]
    assert box.groups.sync_from(8)[0]["data"]["conversations"] == [{"groupId": 8, "afterSeq": 0}]


def test_group_syncs_ask_for_changes_since_the_last_one():
    box = Inbox()
    box.groups.track(7, 4)           # held from an app's storage: synced for its changes
    unread = parse_frame({"type": "group_unread", "data": {"groups": [
        {"groupId": 7, "name": "a", "lastSeq": 4, "readSeq": 4},
        {"groupId": 8, "name": "b", "lastSeq": 3, "readSeq": 3}]}})
    [sync] = box.after(unread, live=True)
    assert sync["data"]["conversations"] == [{"groupId": 7, "afterSeq": 4}]
    assert sync["data"]["changedSince"] == 0
    done = parse_frame({"type": "sync_complete", "data": {
        "requestId": sync["data"]["requestId"], "serverTime": 1234,
        "conversations": [{"groupId": 7, "lastSeq": 4, "hasMore": False}]}})
    box.after(done, live=True)
    [again] = box.after(unread, live=True)
    assert again["data"]["changedSince"] == 1234
