"""``listen --pretty`` and ``chat`` lines (skyeim/client/pretty.py): a readable
line for every frame type the server can send (PROTOCOL.md sections 2, 5, 9;
docs/protocol.md's extensions), a generic one for a type it does not know,
and never an exception, whatever the data."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyeim.client import Frame, parse_frame
from skyeim.client.pretty import chat_line, describe

# one frame of every type the server sends, as on the wire, and what its line says
EVERY_FRAME = [
    ({"type": "connected", "data": {"userId": 1, "onlineCount": 3, "onlineFriends": [2],
                                    "unreadPushed": 0, "serverTime": 1}},
     "connected as 1; 3 online; friends online: [2]; 0 unread pushed"),
    ({"type": "pong", "data": None}, "pong"),
    ({"type": "chat", "data": {"msgId": "m1", "fromUserId": 2, "toUserId": 1, "content": "hi",
                               "contentType": 1, "createdAt": 1, "seq": 4}},
     "chat   #4 from 2 to 1 [m1] hi"),
    ({"type": "ack", "data": {"msgId": "m1", "status": "sent", "timestamp": 1, "seq": 4}},
     "ack    sent m1 seq=4"),
    ({"type": "ack", "data": {"msgId": "g1", "status": "sent", "timestamp": 1, "seq": 2,
                              "groupId": 7, "duplicate": True}},
     "ack    sent g1 seq=2 group=7 (duplicate)"),
    ({"type": "read", "data": {"peerId": 2, "msgIds": ["m1", "m2"], "timestamp": 1}},
     "read   by 2: m1, m2"),
    ({"type": "read", "data": {"peerId": 2, "msgIds": ["m1"], "timestamp": 1, "own": True}},
     "read   on another device, from 2: m1"),
    ({"type": "online", "data": {"userId": 2, "timestamp": 1}}, "online user 2"),
    ({"type": "offline", "data": {"userId": 2, "timestamp": 1}}, "offline user 2"),
    ({"type": "error", "data": {"msgId": "m1", "code": "not_friends", "message": "no"}},
     "error  not_friends m1: no"),
    ({"type": "error", "data": {"msgId": None, "code": "unavailable", "message": "down",
                                "requestId": "r1"}},
     "error  unavailable : down (request r1)"),
    ({"type": "token_expiring", "data": {"expiresAt": None}}, "token expires at -"),
    ({"type": "sync_messages", "data": {"requestId": "r1", "peerId": 2, "hasMore": True,
                                        "messages": [{"msgId": "a", "seq": 5},
                                                     {"msgId": "b", "seq": 6}]}},
     "sync   2 messages #5-#6 with user 2 (request r1, more follow)"),
    ({"type": "sync_messages", "data": {"requestId": None, "groupId": 7, "hasMore": False,
                                        "messages": []}},
     "sync   0 messages with group 7 (request None)"),
    ({"type": "sync_complete", "data": {"requestId": "r1", "conversations": [
        {"peerId": 2, "lastSeq": 6, "hasMore": False},
        {"groupId": 7, "lastSeq": 9, "hasMore": True}]}},
     "synced 2 conversations (request r1): user 2 up to #6, group 7 up to #9 (more)"),
    ({"type": "typing", "data": {"fromUserId": 2, "state": "typing", "timestamp": 1}},
     "typing user 2: typing"),
    ({"type": "typing", "data": {"fromUserId": 2, "groupId": 7, "state": "paused"}},
     "typing user 2 in group 7: paused"),
    ({"type": "groupchat", "data": {"groupId": 7, "msgId": "g1", "fromUserId": 2,
                                    "content": "https://x/y.png", "contentType": 2, "seq": 3}},
     "group  #3 in 7 from 2 [g1] (image) https://x/y.png"),
    ({"type": "group_read", "data": {"groupId": 7, "userId": 2, "seq": 3}},
     "group_read user 2 read group 7 up to #3"),
    ({"type": "group_unread", "data": {"groups": [
        {"groupId": 7, "name": "team", "lastSeq": 5, "readSeq": 2}]}},
     'groups 1: 7 "team" 3 unread'),
    ({"type": "group_unread", "data": {"groups": [
        {"groupId": 7, "name": "team", "lastSeq": 5, "readSeq": 2, "mentions": 1}]}},
     'groups 1: 7 "team" 3 unread (1 @me)'),
    ({"type": "group_changed", "data": {"groupId": 7, "change": "role", "byUserId": 1,
                                        "userId": 2, "role": "admin"}},
     "group 7 changed by user 1: user 2 is now admin"),
    ({"type": "group_changed", "data": {"groupId": 7, "change": "kick", "byUserId": 1,
                                        "userId": 2}},
     "group 7 changed by user 1: user 2 removed"),
    ({"type": "notice", "data": {"event": "deploy.done", "data": {"v": 2}, "timestamp": 1}},
     'notice deploy.done: {"v":2}'),
    ({"type": "friend_added", "data": {"userId": 5, "username": "bob", "online": True}},
     "friend added: user 5 (bob, online)"),
    ({"type": "friend_removed", "data": {"userId": 5}}, "friend removed: user 5"),
    ({"type": "sticker", "data": {"id": 9}}, 'sticker {"id":9}'),
]


@pytest.mark.parametrize("wire,line", EVERY_FRAME, ids=[w["type"] for w, _ in EVERY_FRAME])
def test_every_server_frame_has_a_readable_line(wire, line):
    assert describe(parse_frame(wire)) == line


def test_every_type_of_the_contract_is_covered_above():
    covered = {w["type"] for w, _ in EVERY_FRAME}
    assert covered >= {"connected", "pong", "chat", "ack", "read", "online", "offline", "error",
                       "token_expiring", "sync_messages", "sync_complete", "typing", "groupchat",
                       "group_read", "group_unread", "notice", "friend_added", "friend_removed"}


def test_long_lists_are_cut_short():
    line = describe(parse_frame({"type": "read", "data": {
        "peerId": 2, "msgIds": [f"m{i}" for i in range(25)], "timestamp": 1}}))
    assert line.endswith("m9, +15 more")


def test_chat_lines_for_one_conversation():
    names = {2: "bob"}
    mine = parse_frame({"type": "chat", "data": {"msgId": "a", "fromUserId": 1, "toUserId": 2,
                                                 "content": "yo", "seq": 1}})
    his = parse_frame({"type": "chat", "data": {"msgId": "b", "fromUserId": 2, "toUserId": 1,
                                                "content": "hey", "seq": 2}})
    assert chat_line(mine, 2, names).endswith("#1 me: yo")
    assert chat_line(his, 2, names).endswith("#2 bob: hey")
    other = parse_frame({"type": "chat", "data": {"msgId": "c", "fromUserId": 3, "toUserId": 1,
                                                  "content": "psst", "seq": 1}})
    assert chat_line(other, 2, names) == describe(other)
    assert chat_line(parse_frame({"type": "online", "data": {"userId": 2}}), 2, names) == \
        "* bob is online"
    assert chat_line(parse_frame({"type": "typing", "data": {"fromUserId": 2}}), 2, names) == \
        "* bob is typing"
    assert chat_line(parse_frame({"type": "read", "data": {"peerId": 2, "msgIds": ["a"]}}),
                     2, names) == "  (bob read 1)"
    assert chat_line(parse_frame({"type": "ack", "data": {"msgId": "a", "status": "delivered",
                                                          "seq": 1}}), 2, names) == \
        "  (delivered #1)"
    assert chat_line(parse_frame({"type": "pong", "data": None}), 2, names) is None


KINDS = [w["type"] for w, _ in EVERY_FRAME]
ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=4),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                            st.sampled_from(["msgIds", "messages", "conversations", "groups",
                                             "seq", "lastSeq", "readSeq", "name", "data",
                                             "contentType", "expiresAt", "groupId"]),
                            inner, max_size=4),
                        max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(KINDS), data=ANY_JSON)
def test_no_data_of_any_type_makes_a_line_fail(kind, data):
    frame = parse_frame(json.loads(json.dumps({"type": kind, "data": data})))
    assert isinstance(describe(frame), str)
    assert chat_line(frame, 2, {}) is None or isinstance(chat_line(frame, 2, {}), str)
    assert isinstance(describe(Frame(kind, data)), str)
