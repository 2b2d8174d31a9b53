"""The one table of client frame types, and the dispatcher that reads it."""
from __future__ import annotations

import json

import pytest

from skyeim.gateway.frames.codec import FrameError
from skyeim.gateway.frames.dispatch import Dispatcher
from skyeim.gateway.frames.registry import Echo, FrameRegistry, FrameType
from skyeim.protocol import ErrorCode, TokenBucket

CLIENT_TYPES = {"ping", "chat", "read", "auth", "sync", "typing", "groupchat", "group_read",
                "recall", "edit", "delete", "conversations"}
SERVER_ONLY = {"connected", "pong", "ack", "online", "offline", "error", "token_expiring",
               "sync_messages", "sync_complete", "group_unread", "message_recalled",
               "message_edited", "messages_deleted", "conversation_updated"}


def test_every_client_frame_type_is_registered_once(registry):
    assert set(registry.types) == CLIENT_TYPES


@pytest.mark.parametrize("text, kind", [
    ('{"type": "ping"}', "ping"),
    ('{"type": "chat", "data": {"toUserId": 2, "content": "x"}}', "chat"),
    ('{"type": "read", "data": {"peerId": 2}}', "read"),
    ('{"type": "auth", "data": {"token": "t"}}', "auth"),
    ('{"type": "sync", "data": {"conversations": [{"peerId": 2}]}}', "sync"),
    ('{"type": "typing", "data": {"toUserId": 2}}', "typing"),
    ('{"type": "groupchat", "data": {"groupId": 3, "content": "x"}}', "groupchat"),
    ('{"type": "group_read", "data": {"groupId": 3, "seq": 1}}', "group_read"),
])
def test_a_lookup_per_type_parses_it(registry, text, kind):
    frame_type, frame = registry.parse(text, 1)
    assert frame_type.name == kind == frame.kind


@pytest.mark.parametrize("kind", sorted(SERVER_ONLY))
def test_server_only_types_are_unknown_to_clients(registry, kind):
    with pytest.raises(FrameError) as e:
        registry.parse(json.dumps({"type": kind, "data": {}}), 1)
    assert e.value.code == ErrorCode.UNKNOWN_TYPE and "server only" in e.value.message


def test_an_unknown_type_is_named_cut_short(registry):
    with pytest.raises(FrameError) as e:
        registry.parse(json.dumps({"type": "x" * 500}), 1)
    assert e.value.code == ErrorCode.UNKNOWN_TYPE and len(e.value.message) < 100


@pytest.mark.parametrize("text, ids", [
    ('{"type": "chat", "data": {"msgId": "m1", "toUserId": 2, "content": "x"}}', ("m1", None)),
    ('{"type": "groupchat", "data": {"msgId": "g1", "groupId": 2, "content": "x"}}', ("g1", None)),
    ('{"type": "sync", "data": {"requestId": "r1", "conversations": [{"peerId": 2}]}}',
     (None, "r1")),
    ('{"type": "read", "data": {"peerId": 2, "msgIds": ["m1"]}}', (None, None)),
    ('{"type": "typing", "data": {"toUserId": 2}}', (None, None)),
])
def test_the_ids_an_error_echoes_per_type(registry, text, ids):
    frame_type, frame = registry.parse(text, 1)
    assert frame_type.echo_ids(frame) == ids


def test_a_type_is_registered_once_and_only_before_dispatch():
    reg = FrameRegistry()
    ping = FrameType("ping", lambda data, uid: data, handle=lambda s, f: None)
    reg.add(ping)
    with pytest.raises(ValueError):
        reg.add(ping)
    Dispatcher(reg, _Counter())
    with pytest.raises(RuntimeError):
        reg.add(FrameType("late", lambda data, uid: data, handle=lambda s, f: None))


def test_a_type_has_one_handler_or_one_batch_handler():
    with pytest.raises(ValueError):
        FrameType("x", lambda data, uid: data)
    with pytest.raises(ValueError):
        FrameType("x", lambda data, uid: data, handle=print, handle_batch=print)


# -- the dispatcher ----------------------------------------------------------------------

class _Counter:
    """A labelled metric: counts by label."""

    def __init__(self):
        self.counts: dict[str, int] = {}

    def labels(self, name):
        counter = self

        class Child:
            def inc(self):
                counter.counts[name] = counter.counts.get(name, 0) + 1
        return Child()


class _Client:
    """What the dispatcher needs of a connection: it collects the answers."""

    user_id, conn_id, closing, stop_reading = 1, 1, False, False

    def __init__(self, burst: int = 100):
        self.rate = TokenBucket(0.0001, burst)
        self.replies: list[str] = []

    def reply(self, item) -> bool:
        self.replies.append(item)
        return True


def _dispatcher():
    """Two frame types: `note` (handled one by one) and `bulk` (handled in batches)."""
    calls: list = []
    reg = FrameRegistry()

    def parse_note(data, uid):
        if not isinstance(data, dict):
            raise FrameError(ErrorCode.BAD_REQUEST, "note needs data", request_id="r0")
        return ("note", data.get("n"))

    def handle_note(session, frame):
        if frame[1] == "boom":
            raise RuntimeError("a bug")
        if frame[1] == "no":
            raise FrameError(ErrorCode.FORBIDDEN, "no")
        calls.append(frame)

    reg.add(FrameType("note", parse_note, handle=handle_note))
    reg.add(FrameType("bulk", lambda data, uid: ("bulk", data), echoes=Echo.REQUEST_ID,
                      handle_batch=lambda session, frames: calls.append(list(frames))))
    reg.add_server_types("pong")
    counter = _Counter()
    return Dispatcher(reg, counter), calls, counter


def _codes(replies):
    return [json.loads(r)["data"]["code"] for r in replies]


def test_consecutive_batched_frames_go_in_one_call_and_keep_their_order():
    d, calls, counter = _dispatcher()
    c = _Client()
    d.handle_messages(c, ['{"type": "bulk", "data": 1}', '{"type": "bulk", "data": 2}',
                          '{"type": "note", "data": {"n": "a"}}', '{"type": "bulk", "data": 3}'])
    assert calls == [[("bulk", 1), ("bulk", 2)], ("note", "a"), [("bulk", 3)]]
    assert counter.counts == {"bulk": 3, "note": 1}


def test_refused_frames_are_answered_in_order_and_counted():
    d, calls, counter = _dispatcher()
    c = _Client()
    d.handle_messages(c, ['{"type": "bulk", "data": 1}', "nope", b"\x00",
                          '{"type": "pong"}', '{"type": "note", "data": {"n": "no"}}'])
    assert calls == [[("bulk", 1)]]
    assert _codes(c.replies) == ["bad_json", "unsupported_frame", "unknown_type", "forbidden"]
    assert counter.counts == {"bulk": 1, "invalid": 2, "binary": 1, "note": 1}


def test_a_handler_bug_is_an_internal_error_and_the_connection_goes_on():
    d, calls, _ = _dispatcher()
    c = _Client()
    d.handle_messages(c, ['{"type": "note", "data": {"n": "boom"}}',
                          '{"type": "note", "data": {}}'])
    assert _codes(c.replies) == ["internal"] and calls == [("note", None)]


def test_over_the_rate_a_frame_is_refused_with_what_it_would_echo():
    d, calls, counter = _dispatcher()
    c = _Client(burst=1)
    d.handle_messages(c, ['{"type": "note", "data": {}}', '{"type": "note", "data": 5}',
                          '{"type": "note", "data": {}}'])
    assert calls == [("note", None)]
    errors = [json.loads(r)["data"] for r in c.replies]
    assert [e["code"] for e in errors] == ["rate_limited", "rate_limited"]
    assert errors[0].get("requestId") == "r0" and "requestId" not in errors[1]
    assert counter.counts["rate_limited"] == 2


def test_a_closing_connection_acts_on_nothing_more():
    d, calls, _ = _dispatcher()
    c = _Client()
    c.closing = True
    d.handle_messages(c, ['{"type": "note", "data": {}}', '{"type": "bulk", "data": 1}'])
    assert calls == [] and c.replies == []
