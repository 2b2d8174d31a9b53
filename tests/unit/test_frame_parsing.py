"""Client frames, type by type: each validation rule and what an error echoes
(PROTOCOL.md sections 2 and 4, docs/protocol.md for the extensions)."""
from __future__ import annotations

import pytest

from skyeim.gateway.features.auth import Auth, parse_auth
from skyeim.gateway.features.chat import parse_chat
from skyeim.gateway.features.edits import make_edit_parser, parse_recall
from skyeim.gateway.features.groups import parse_group_read, parse_groupchat
from skyeim.gateway.features.receipts import MAX_READ_IDS, parse_read
from skyeim.gateway.features.sync import MAX_CONVERSATIONS, MAX_PAGE, parse_sync
from skyeim.gateway.features.typing_relay import parse_typing
from skyeim.gateway.frames.codec import FrameError, decode
from skyeim.protocol import ErrorCode

ME, PEER = 7, 8
MAX = 10            # Chat.MaxContentLength in these tests


def refused(parse, *args) -> FrameError:
    with pytest.raises(FrameError) as e:
        parse(*args)
    return e.value


# -- the JSON rules (every frame) ---------------------------------------------------------

@pytest.mark.parametrize("text, code", [
    ("not json", ErrorCode.BAD_JSON),
    ('{"type": "ping"', ErrorCode.BAD_JSON),
    ('{"type": NaN}', ErrorCode.BAD_JSON),
    ("[1, 2]", ErrorCode.BAD_REQUEST),
    ('{"data": {}}', ErrorCode.BAD_REQUEST),
    ('{"type": 5}', ErrorCode.BAD_REQUEST),
    pytest.param("[" * 100_000 + "]" * 100_000, ErrorCode.BAD_REQUEST, id="nested-too-deeply"),
])
def test_json_that_is_not_a_frame_is_refused(text, code):
    e = refused(decode, text)
    assert (e.code, e.msg_id, e.request_id) == (code, None, None)


def test_an_integer_too_long_for_any_id_is_still_json():
    assert decode('{"type": "chat", "data": {"toUserId": ' + "9" * 50 + "}}")["type"] == "chat"


# -- chat -------------------------------------------------------------------------------

def chat(data=None, **fields):
    return parse_chat({"toUserId": PEER, "content": "hi", **(data or {}), **fields}, ME, MAX)


def test_chat_defaults_text_and_makes_a_msg_id_it_never_echoes():
    c = chat()
    assert (c.to_user_id, c.content, c.content_type, c.given_msg_id) == (PEER, "hi", 1, None)
    assert c.msg_id and c.msg_id != chat().msg_id


def test_chat_keeps_the_clients_msg_id_and_content_type():
    c = chat(msgId="m-1_A", contentType=4)
    assert (c.msg_id, c.given_msg_id, c.content_type) == ("m-1_A", "m-1_A", 4)


@pytest.mark.parametrize("data, echoed", [
    ({"toUserId": "8"}, "m1"),
    ({"toUserId": True}, "m1"),
    ({"toUserId": 0}, "m1"),
    ({"toUserId": 2**63}, "m1"),
    ({"toUserId": ME}, "m1"),                       # a chat to oneself
    ({"content": ""}, "m1"),
    ({"content": 5}, "m1"),
    ({"content": "x" * (MAX + 1)}, "m1"),
    ({"content": "\ud800"}, "m1"),                  # an unpaired surrogate
    ({"contentType": 5}, "m1"),
    ({"contentType": True}, "m1"),
    ({"contentType": 1.0}, "m1"),
    ({"msgId": "has space"}, None),                 # an invalid msgId is never echoed
    ({"msgId": "x" * 65}, None),
    ({"msgId": 12}, None),
])
def test_chat_field_rules(data, echoed):
    e = refused(chat, {"msgId": "m1", **data})
    assert (e.code, e.msg_id) == (ErrorCode.BAD_REQUEST, echoed)


def test_chat_content_of_exactly_the_limit_is_accepted():
    assert chat(content="x" * MAX).content == "x" * MAX


def test_chat_needs_a_data_object():
    assert refused(parse_chat, [1], ME, MAX).code == ErrorCode.BAD_REQUEST


# -- read -------------------------------------------------------------------------------

def test_read_dedupes_msg_ids_in_order_and_defaults_to_every_unread():
    assert parse_read({"peerId": PEER, "msgIds": ["a", "b", "a"]}, ME).msg_ids == ("a", "b")
    assert parse_read({"peerId": PEER}, ME).msg_ids == ()


@pytest.mark.parametrize("data", [
    None,
    {"peerId": ME},
    {"peerId": "8"},
    {"peerId": PEER, "msgIds": "a"},
    {"peerId": PEER, "msgIds": ["bad id"]},
    {"peerId": PEER, "msgIds": ["a"] * (MAX_READ_IDS + 1)},
])
def test_read_rules_and_it_echoes_nothing(data):
    e = refused(parse_read, data, ME)
    assert (e.code, e.msg_id, e.request_id) == (ErrorCode.BAD_REQUEST, None, None)


# -- auth -------------------------------------------------------------------------------

def test_auth_carries_its_token():
    assert parse_auth({"token": "abc"}, ME) == Auth("abc")


@pytest.mark.parametrize("data", [None, {}, {"token": 5}])
def test_auth_without_a_string_token_is_a_bad_request(data):
    assert refused(parse_auth, data, ME).code == ErrorCode.BAD_REQUEST


# -- typing -----------------------------------------------------------------------------

def test_typing_to_a_peer_or_a_group():
    t = parse_typing({"toUserId": PEER}, ME)
    assert (t.to_user_id, t.group_id, t.state) == (PEER, None, "typing")
    t = parse_typing({"groupId": 3, "state": "paused"}, ME)
    assert (t.to_user_id, t.group_id, t.state) == (None, 3, "paused")


@pytest.mark.parametrize("data", [
    None, {}, {"toUserId": ME}, {"toUserId": PEER, "groupId": 3}, {"groupId": 0},
    {"toUserId": PEER, "state": "writing"},
])
def test_typing_rules(data):
    assert refused(parse_typing, data, ME).code == ErrorCode.BAD_REQUEST


# -- sync -------------------------------------------------------------------------------

def test_sync_ranges_and_paging():
    s = parse_sync({"requestId": "r1", "limit": 1000, "conversations": [
        {"peerId": PEER, "afterSeq": 3, "beforeSeq": 9}, {"groupId": 4}]}, ME)
    assert s.request_id == "r1" and s.limit == MAX_PAGE
    assert [(r.peer_id, r.group_id, r.after_seq, r.before_seq) for r in s.ranges] == [
        (PEER, 0, 3, 9), (0, 4, 0, None)]


@pytest.mark.parametrize("data", [
    {"conversations": []},
    {"conversations": [{"peerId": PEER}] * (MAX_CONVERSATIONS + 1)},
    {"conversations": [5]},
    {"conversations": [{"peerId": ME}]},
    {"conversations": [{"peerId": PEER}, {"peerId": PEER}]},
    {"conversations": [{"groupId": "4"}]},
    {"conversations": [{"peerId": PEER, "afterSeq": -1}]},
    {"conversations": [{"peerId": PEER, "afterSeq": 5, "beforeSeq": 5}]},
    {"conversations": [{"peerId": PEER}], "limit": 0},
])
def test_sync_rules_echo_the_request_id(data):
    e = refused(parse_sync, {"requestId": "r9", **data}, ME)
    assert (e.code, e.msg_id, e.request_id) == (ErrorCode.BAD_REQUEST, None, "r9")


def test_sync_with_an_invalid_request_id_echoes_none():
    e = refused(parse_sync, {"requestId": "no spaces", "conversations": [{"peerId": PEER}]}, ME)
    assert (e.code, e.request_id) == (ErrorCode.BAD_REQUEST, None)


# -- groupchat and group_read -----------------------------------------------------------

def test_groupchat_has_the_chat_rules_for_content():
    g = parse_groupchat({"groupId": 3, "content": "hi", "msgId": "g1"}, ME, MAX)
    assert (g.group_id, g.msg_id, g.given_msg_id, g.content_type) == (3, "g1", "g1", 1)
    for data in ({"content": ""}, {"content": "x" * (MAX + 1)}, {"contentType": 9},
                 {"groupId": "3"}):
        e = refused(parse_groupchat, {"groupId": 3, "content": "hi", "msgId": "g1", **data},
                    ME, MAX)
        assert (e.code, e.msg_id) == (ErrorCode.BAD_REQUEST, "g1")


def test_groupchat_mentions_are_user_ids_deduplicated_and_bounded():
    g = parse_groupchat({"groupId": 3, "content": "hi", "msgId": "g1", "mentions": [5, 4, 5]},
                        ME, MAX, 3)
    assert g.mentions == (5, 4)
    assert parse_groupchat({"groupId": 3, "content": "hi"}, ME, MAX).mentions == ()
    for bad in ("5", [0], ["5"], [True], [1.0], [1, 2, 3, 4], {"a": 1}):
        e = refused(parse_groupchat, {"groupId": 3, "content": "hi", "msgId": "g1",
                                      "mentions": bad}, ME, MAX, 3)
        assert (e.code, e.msg_id) == (ErrorCode.BAD_REQUEST, "g1")


def test_group_read_needs_a_group_and_a_seq():
    assert parse_group_read({"groupId": 3, "seq": 9}, ME).seq == 9
    for data in ({"groupId": 3}, {"groupId": 3, "seq": 0}, {"seq": 9}, None):
        assert refused(parse_group_read, data, ME).code == ErrorCode.BAD_REQUEST


def test_recall_and_edit_name_a_group_message_with_an_optional_group_id():
    assert parse_recall({"msgId": "m1"}, 1).group_id == 0
    assert parse_recall({"msgId": "m1", "groupId": None}, 1).group_id == 0
    assert parse_recall({"msgId": "m1", "groupId": 7}, 1).group_id == 7
    edit = make_edit_parser(10)({"msgId": "m1", "content": "new", "groupId": 7}, 1)
    assert (edit.group_id, edit.content) == (7, "new")
    for bad in (0, -1, "7", 1.5, True, 2**63):
        with pytest.raises(FrameError) as e:
            parse_recall({"msgId": "m1", "groupId": bad}, 1)
        assert (e.value.code, e.value.msg_id) == (ErrorCode.BAD_REQUEST, "m1")
