"""Decoding every frame type the server sends (PROTOCOL.md sections 2, 5 and 9;
docs/protocol.md's extensions) into the SDK's typed frames
(skyeim/client/frames.py), and the generic ``Frame`` for the rest."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyeim.client import (Ack, ChatMessage, Connected, ErrorFrame, Frame, FriendAdded,
                           FriendRemoved, GroupChanged, GroupMessage, GroupRead, GroupUnread,
                           Notice, Pong, Presence, ReadReceipt, SyncComplete, TokenExpiring, Typing, parse_frame)
from skyeim.client.frames import decode


def frame(kind: str, data):
    return parse_frame({"type": kind, "data": data})


def test_connected():
    f = frame("connected", {"userId": 1, "onlineCount": 3, "onlineFriends": [2, 4, "x"],
                            "unreadPushed": 5, "serverTime": 10})
    assert f == Connected(1, 3, (2, 4), 5, 10) and f.type == "connected"


def test_pong_whatever_its_data():
    assert isinstance(frame("pong", None), Pong) and isinstance(frame("pong", {"x": 1}), Pong)


def test_chat_keeps_unknown_fields_in_raw():
    f = frame("chat", {"msgId": "m1", "fromUserId": 1, "toUserId": 2, "content": "hi",
                       "contentType": 2, "createdAt": 1700000000000, "seq": 3, "future": 1})
    assert f == ChatMessage("m1", 1, 2, "hi", 2, 1700000000000, 3)
    assert f.raw["data"]["future"] == 1 and f.status is None
    assert frame("chat", {"msgId": "m"}).content_type == 1          # text when absent


def test_acks_of_a_chat_and_of_a_group_message():
    assert frame("ack", {"msgId": "m", "status": "sent", "timestamp": 5, "seq": 3,
                         "duplicate": True}) == Ack("m", "sent", 5, 3, True)
    group = frame("ack", {"msgId": "g", "status": "sent", "timestamp": 6, "seq": 9, "groupId": 7})
    assert group.group_id == 7 and group.duplicate is False


def test_read_receipts_and_own_read_state():
    assert frame("read", {"peerId": 2, "msgIds": ["a", 3, "b"], "timestamp": 7}) == \
        ReadReceipt(2, ("a", "b"), 7)
    own = frame("read", {"peerId": 2, "msgIds": [], "timestamp": 7, "own": True})
    assert own.own is True and own.msg_ids == ()


def test_presence():
    on, off = frame("online", {"userId": 4, "timestamp": 8}), frame("offline", {"userId": 4})
    assert on == Presence(4, True, 8) and on.type == "online"
    assert off == Presence(4, False, None) and off.type == "offline"


def test_error_with_and_without_a_request_id():
    e = frame("error", {"msgId": None, "code": "bad_json", "message": "x"})
    assert e == ErrorFrame(None, "bad_json", "x") and e.request_id is None
    assert frame("error", {"msgId": None, "code": "unavailable", "requestId": "r1"}).request_id == "r1"


def test_token_expiring():
    assert frame("token_expiring", {"expiresAt": 11}) == TokenExpiring(11)


def test_sync_complete_and_a_sync_page():
    f = frame("sync_complete", {"requestId": "r", "conversations": [
        {"peerId": 2, "lastSeq": 9, "hasMore": False}, "junk"]})
    assert f == SyncComplete("r", ({"peerId": 2, "lastSeq": 9, "hasMore": False},))
    # pages are read by the Client itself (each message once); alone they stay generic
    page = frame("sync_messages", {"requestId": "r", "peerId": 2, "messages": [], "hasMore": False})
    assert isinstance(page, Frame) and page.type == "sync_messages"


def test_typing_to_a_user_and_in_a_group():
    assert frame("typing", {"fromUserId": 3, "state": "paused", "timestamp": 5}) == \
        Typing(3, "paused", 5)
    assert frame("typing", {"fromUserId": 3, "groupId": 8, "state": "typing"}).group_id == 8


def test_group_frames():
    m = frame("groupchat", {"groupId": 7, "msgId": "g1", "fromUserId": 3, "content": "hey",
                            "contentType": 1, "createdAt": 5, "seq": 2})
    assert m == GroupMessage(7, "g1", 3, "hey", 1, 5, 2) and m.type == "groupchat"
    assert frame("group_read", {"groupId": 7, "userId": 3, "seq": 2}) == GroupRead(7, 3, 2)
    u = frame("group_unread", {"groups": [{"groupId": 7, "name": "t", "lastSeq": 4,
                                           "readSeq": 1}, 5]})
    assert u == GroupUnread(({"groupId": 7, "name": "t", "lastSeq": 4, "readSeq": 1},))


def test_group_changed_and_mentions():
    m = frame("groupchat", {"groupId": 7, "msgId": "g1", "fromUserId": 3, "content": "@x",
                            "seq": 2, "mentions": [4, "5", 6]})
    assert m.mentions == (4, 6)
    c = frame("group_changed", {"groupId": 7, "change": "mute", "byUserId": 3, "userId": 4,
                                "until": 99})
    assert c == GroupChanged(7, "mute", 3, 4, None, 99) and c.type == "group_changed"
    assert frame("group_changed", {"groupId": 7, "change": "rename", "byUserId": 3,
                                   "name": "n"}).name == "n"


def test_v1_1_notice_and_friendship_frames():
    n = frame("notice", {"event": "deploy.done", "data": {"v": [1, 2]}, "timestamp": 12})
    assert n == Notice("deploy.done", {"v": [1, 2]}, 12) and n.type == "notice"
    assert frame("notice", {"event": "x", "data": None}).data is None
    a = frame("friend_added", {"userId": 5, "username": "bob", "online": True})
    assert a == FriendAdded(5, "bob", True) and a.type == "friend_added"
    assert frame("friend_added", {"userId": 5, "username": None, "online": False}).username is None
    assert frame("friend_removed", {"userId": 5}) == FriendRemoved(5)


def test_unknown_types_and_unexpected_shapes_are_generic_frames():
    f = parse_frame({"type": "sticker", "data": {"userId": 3}, "extra": 1})
    assert f == Frame("sticker", {"userId": 3}) and f.raw["extra"] == 1
    assert frame("ack", "weird") == Frame("ack", "weird")
    assert frame("notice", [1]) == Frame("notice", [1])
    with pytest.raises(ValueError):
        parse_frame({"data": {}})


def test_decode_takes_json_objects_with_a_string_type_only():
    assert decode(b'{"type":"pong","data":null}') == {"type": "pong", "data": None}
    assert decode('{"type":"x"}') == {"type": "x"}
    for bad in (b"not json", b"[1]", b'{"type": 3}', b"{}", b"[" * 100_000):
        assert decode(bad) is None


KINDS = ["connected", "pong", "chat", "ack", "read", "online", "offline", "error",
         "token_expiring", "sync_messages", "sync_complete", "typing", "groupchat", "group_read",
         "group_unread", "notice", "friend_added", "friend_removed", "whatever"]
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["msgId", "userId", "seq", "groups",
                                                       "msgIds", "data", "event", "x"]), inner,
                                      max_size=4),
                    max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(KINDS), data=JSON)
def test_any_data_of_any_type_decodes_without_raising(kind, data):
    f = parse_frame(json.loads(json.dumps({"type": kind, "data": data})))
    assert f.type == kind and f.raw["data"] == data


def test_group_recall_edit_join_and_leave():
    r = frame("message_recalled", {"msgId": "g1", "fromUserId": 3, "groupId": 7, "seq": 2,
                                   "recalledAt": 5})
    assert (r.group_id, r.to_user_id, r.seq, r.recalled_at) == (7, None, 2, 5)
    e = frame("message_edited", {"msgId": "g1", "fromUserId": 3, "groupId": 7, "seq": 2,
                                 "content": "new", "contentType": 1, "editedAt": 6})
    assert (e.group_id, e.content) == (7, "new")
    assert frame("message_edited", {"msgId": "m", "fromUserId": 3, "toUserId": 4,
                                    "content": "c"}).group_id is None
    j = frame("group_changed", {"groupId": 7, "change": "join", "byUserId": 3,
                                "userIds": [4, "x", 5]})
    assert (j.change, j.user_ids, j.owner_id) == ("join", (4, 5), None)
    left = frame("group_changed", {"groupId": 7, "change": "leave", "byUserId": 4, "userId": 4,
                                   "ownerId": 3})
    assert (left.user_id, left.owner_id, left.user_ids) == (4, 3, ())
    m = frame("groupchat", {"groupId": 7, "msgId": "g1", "fromUserId": 3, "content": "",
                            "seq": 2, "recalled": True})
    assert m.recalled and not m.edited
