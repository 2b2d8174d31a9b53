"""The messages gateway nodes send each other over Redis (routing/messages.py)."""
from __future__ import annotations

import json

import pytest

from skyeim.gateway.routing.messages import (GroupChanged, GroupFrame, Kick, MalformedMessage,
                                             UserFrame, decode)
from skyeim.gateway.transport.session import Outgoing


@pytest.mark.parametrize("message", [
    UserFrame(5, '{"type":"online"}'),
    UserFrame(5, '{"type":"ack"}', wait=2.0),
    UserFrame(5, '{"type":"chat"}', (9, "m1"), 42),
    Kick(5, 3, "node-a"),
    Kick(5, 3, "node-a", "ios"),
    GroupFrame(7, '{"type":"groupchat"}', node="node-a"),
    GroupFrame(7, '{"type":"typing"}', not_user=5, node="node-a"),
    GroupFrame(7, '{"type":"group_changed"}', node="node-a", also=(3, 9)),
    GroupChanged(7, "node-a"),
])
def test_round_trip(message):
    assert decode(message.encode()) == message


def test_the_wire_keeps_its_short_keys():
    # what a node of the previous version reads and writes
    assert json.loads(UserFrame(5, "x", (9, "m1"), 42, 2.0).encode()) == \
        {"u": 5, "x": "x", "k": [9, "m1"], "s": 42, "w": 2.0}
    assert json.loads(Kick(5, 3, "n", "web").encode()) == {"kick": 5, "g": 3, "n": "n", "p": "web"}
    assert json.loads(GroupFrame(7, "x", 5, "n").encode()) == \
        {"grp": 7, "x": "x", "not": 5, "n": "n"}
    assert json.loads(GroupChanged(7, "n").encode()) == {"grp": 7, "changed": True, "n": "n"}
    assert json.loads(GroupFrame(7, "x", None, "n", (3,)).encode()) == \
        {"grp": 7, "x": "x", "also": [3], "n": "n"}


def test_a_chat_for_a_user_becomes_an_outgoing_chat_again():
    frame = UserFrame.of(5, Outgoing("text", (9, "m1"), 42, t0=1.0), wait=2.0)
    item = decode(frame.encode()).item()
    assert isinstance(item, Outgoing)
    assert (item.text, item.key, item.seq, item.t0) == ("text", (9, "m1"), 42, None)
    assert decode(UserFrame.of(5, "plain").encode()).item() == "plain"


@pytest.mark.parametrize("data", [
    "not json", "[1]", "{}", '{"u": "5", "x": "t"}', '{"u": 5}', '{"u": 5, "x": 1}',
    '{"u": 5, "x": "t", "k": [9]}', '{"u": 5, "x": "t", "k": [9, "m"]}',
    '{"u": 5, "x": "t", "w": "soon"}', '{"u": 5, "x": "t", "w": -1}',
    '{"kick": "five", "g": 1, "n": "a"}', '{"kick": 5, "g": 1}',
    '{"grp": 7, "n": "a"}', '{"grp": "7", "x": "t", "n": "a"}', '{"grp": 7, "x": "t", "n": 3}',
    '{"grp": 7, "x": "t", "not": "5", "n": "a"}',
])
def test_malformed_messages_are_refused(data):
    with pytest.raises(MalformedMessage):
        decode(data)
