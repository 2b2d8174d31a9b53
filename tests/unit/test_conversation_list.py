"""The conversation list's pure parts: the cursor (skyeim/message/conversations.py)
and the `conversations` frame's parser (skyeim/gateway/features/conversations.py)."""
from __future__ import annotations

import pytest

from skyeim.gateway.features.conversations import parse_conversations
from skyeim.gateway.frames.codec import FrameError
from skyeim.message.conversations import decode_cursor, encode_cursor
from skyeim.web import ApiError

MAX = 2**63 - 1


@pytest.mark.parametrize("key", [(0, 0, 0, 1), (1, 1_765_000_000_000, 1, 42), (1, MAX, 0, MAX)])
def test_a_cursor_round_trips(key):
    assert decode_cursor(encode_cursor(key)) == key


def test_no_cursor_is_the_first_page():
    assert decode_cursor(None) is None and decode_cursor("") is None


@pytest.mark.parametrize("raw", ["x", "1.2.3", "2.0.0.1", "0.0.2.1", "0.-1.0.1", "0.1.0.1.",
                                 f"0.{MAX + 1}.0.1", f"0.1.0.{MAX + 1}", "0.1.0.1 ", 5, ["0"],
                                 "٠.1.0.1", "0.1.0." + "9" * 20])
def test_anything_else_is_refused(raw):
    with pytest.raises(ApiError) as e:
        decode_cursor(raw)
    assert e.value.status == 400


def test_the_frame_defaults_and_bounds():
    f = parse_conversations(None, 1)
    assert (f.request_id, f.limit, f.before) == (None, 50, None)
    f = parse_conversations({"limit": 200, "before": "0.1.0.2", "requestId": "r"}, 1)
    assert (f.request_id, f.limit, f.before) == ("r", 200, "0.1.0.2")
    for data in ({"limit": 0}, {"limit": 201}, {"limit": "5"}, {"limit": True},
                 {"before": 5}, {"before": "x" * 81}, {"requestId": "bad id!"}, [1]):
        with pytest.raises(FrameError):
            parse_conversations(data, 1)
    with pytest.raises(FrameError) as e:
        parse_conversations({"limit": 0, "requestId": "q"}, 1)
    assert e.value.request_id == "q"
