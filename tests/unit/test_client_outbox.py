"""The SDK's outbox (skyeim/client/outbox.py) as a state machine: a chat from
enqueue through ``ack sent`` and ``ack delivered`` (or a refusal), duplicates,
the order of resends after a reconnect, retries after a retryable refusal,
and its bound. No sockets: connections are just their numbers (``gen``)."""
from __future__ import annotations

import random

import pytest

from skyeim.client.frames import parse_frame
from skyeim.client.outbox import Outbox, SendResult


def ack(msg_id: str, status: str, seq: int = 1, ts: int = 100, duplicate: bool = False):
    return parse_frame({"type": "ack", "data": {"msgId": msg_id, "status": status, "seq": seq,
                                                "timestamp": ts, "duplicate": duplicate}})


def error(msg_id: str | None, code: str):
    return parse_frame({"type": "error", "data": {"msgId": msg_id, "code": code, "message": "m"}})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_all(box: Outbox, gen: int) -> list[str]:
    """What a connection's writer takes from the outbox now, in order."""
    out = []
    for _ in range(100):
        p, _ = box.next_to_write(gen)
        if p is None:
            return out
        box.written(p, gen)
        out.append(p.msg_id)
    raise AssertionError("the outbox never ran dry")


def test_a_chat_is_queued_then_sent_then_delivered():
    box = Outbox()
    p = box.add("m1", '{"type":"chat"}', to=2)
    assert p.result() == SendResult("m1", "queued") and box.ids() == ["m1"] and "m1" in box
    assert write_all(box, gen=1) == ["m1"]
    assert box.on_ack(ack("m1", "sent", seq=7, ts=111)) is p
    assert p.result() == SendResult("m1", "sent", 7, 111) and p.reached("sent")
    assert not p.reached("delivered")
    assert box.ids() == [] and box.find("m1") is p           # done, still known
    box.on_ack(ack("m1", "delivered", seq=7, ts=222))
    assert p.result() == SendResult("m1", "delivered", 7, 111, 222)


def test_a_delivered_ack_before_the_sent_one_also_ends_the_wait():
    box = Outbox()
    p = box.add("m1", "x")
    box.on_ack(ack("m1", "delivered", seq=3, ts=50))
    assert box.ids() == [] and p.reached("sent") and p.result().status == "delivered"
    assert p.result().seq == 3


def test_a_resend_acked_as_a_duplicate_says_so():
    box = Outbox()
    p = box.add("m1", "x")
    box.on_ack(ack("m1", "sent", seq=4, duplicate=True))
    assert p.result().duplicate is True and p.result().seq == 4


def test_acks_and_errors_of_unknown_chats_are_not_ours():
    box = Outbox()
    assert box.on_ack(ack("nope", "sent")) is None
    assert box.on_error(error("nope", "bad_request")) is None
    assert box.on_error(error(None, "bad_json")) is None


def test_each_chat_is_written_once_per_connection_and_all_again_after_a_reconnect():
    box = Outbox()
    for i in range(4):
        box.add(f"m{i}", "x")
    assert write_all(box, gen=1) == ["m0", "m1", "m2", "m3"]
    assert write_all(box, gen=1) == []                        # nothing twice on one socket
    box.on_ack(ack("m1", "sent"))
    box.add("m4", "x")
    assert write_all(box, gen=1) == ["m4"]
    # the socket dropped: the new one gets every chat still unacked, oldest first
    assert write_all(box, gen=2) == ["m0", "m2", "m3", "m4"]


def test_a_refusal_ends_the_chat_with_its_error():
    box = Outbox()
    p = box.add("m1", "x")
    write_all(box, 1)
    assert box.on_error(error("m1", "not_friends")) is p
    assert p.error.code == "not_friends" and box.ids() == [] and box.find("m1") is p


def test_a_retryable_refusal_is_written_again_after_a_growing_pause_then_given_up():
    clock = Clock()
    box = Outbox(max_retries=2, rng=random.Random(1), clock=clock)
    p = box.add("m1", "x")
    assert write_all(box, 1) == ["m1"]
    assert box.on_error(error("m1", "rate_limited")) is p and p.error is None
    assert box.ids() == ["m1"] and p.retries == 1
    first, wait = box.next_to_write(1)
    assert first is None and 0.5 <= wait <= 1.0               # 0.5 * 2**1, jittered by half
    clock.now += wait
    assert write_all(box, 1) == ["m1"]                        # again on the same socket
    box.on_error(error("m1", "unavailable"))
    assert p.retries == 2 and 1.0 <= box.next_to_write(1)[1] <= 2.0
    clock.now += 2.0
    write_all(box, 1)
    box.on_error(error("m1", "rate_limited"))                 # the third: given up
    assert p.error.code == "rate_limited" and box.ids() == []


def test_a_chat_waiting_out_its_pause_does_not_hold_up_the_others():
    clock = Clock()
    box = Outbox(rng=random.Random(2), clock=clock)
    box.add("slow", "x")
    box.add("fast", "y")
    write_all(box, 1)
    box.on_error(error("slow", "rate_limited"))
    box.add("next", "z")
    assert write_all(box, 1) == ["next"]


def test_the_outbox_is_bounded_and_remembers_as_many_done_chats():
    box = Outbox(limit=2)
    box.add("a", "x")
    box.add("b", "x")
    assert box.full
    with pytest.raises(OverflowError):
        box.add("c", "x")
    with pytest.raises(ValueError):
        box.add("a", "again")                                 # already pending
    for mid in ("a", "b"):
        box.on_ack(ack(mid, "sent"))
    assert not box.full and len(box) == 0
    for mid in ("c", "d"):
        box.add(mid, "x")
        box.on_ack(ack(mid, "sent"))
    assert box.find("a") is None and box.find("b") is None    # the oldest done ones forgotten
    assert box.find("c") is not None and box.find("d") is not None


def test_a_done_chat_may_be_sent_again_with_its_msg_id():
    box = Outbox()
    box.add("m1", "x")
    box.on_ack(ack("m1", "sent"))
    again = box.add("m1", "x")
    assert box.find("m1") is again and again.result().status == "queued"
