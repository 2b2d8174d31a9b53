"""The SDK's dispatcher (skyeim/client/dispatcher.py): callbacks by frame type,
by class and for every frame, the bounded queue behind the iterator, and the
end of the iterator. Frames are parsed from the server's JSON; no sockets."""
from __future__ import annotations

import threading

import pytest

from skyeim.client import ChatMessage, ClientClosed, NotConnected, Presence, Replaced
from skyeim.client.dispatcher import Dispatcher
from skyeim.client.frames import parse_frame

CHAT = parse_frame({"type": "chat", "data": {"msgId": "m", "fromUserId": 2, "toUserId": 1,
                                             "content": "hi", "seq": 1}})
ONLINE = parse_frame({"type": "online", "data": {"userId": 2, "timestamp": 1}})
OFFLINE = parse_frame({"type": "offline", "data": {"userId": 2, "timestamp": 2}})


def test_callbacks_by_type_by_class_and_for_everything():
    d = Dispatcher()
    by_type, by_class, everything = [], [], []
    d.on("chat", by_type.append)
    d.on(Presence, by_class.append)
    d.on("*", everything.append)
    for f in (CHAT, ONLINE, OFFLINE):
        d.dispatch(f)
    assert by_type == [CHAT]
    assert by_class == [ONLINE, OFFLINE]
    assert everything == [CHAT, ONLINE, OFFLINE]


def test_a_callback_can_be_removed_alone_or_with_every_other_of_its_key():
    d = Dispatcher()
    a, b = [], []
    d.on("online", a.append)
    d.on("online", b.append)
    d.off("online", a.append)
    d.dispatch(ONLINE)
    assert (a, b) == ([], [ONLINE])
    d.off("online")
    d.dispatch(ONLINE)
    assert b == [ONLINE]
    d.off("never-registered")                     # harmless


def test_a_failing_callback_does_not_stop_the_others_or_the_queue():
    d = Dispatcher()
    seen = []
    d.on("chat", lambda f: 1 / 0)
    d.on("chat", seen.append)
    d.start()
    d.dispatch(CHAT)
    assert seen == [CHAT] and d.next(0) is CHAT


def test_a_callback_may_register_another_while_it_runs():
    d = Dispatcher()
    later = []
    d.on("online", lambda f: d.on("offline", later.append))
    d.dispatch(ONLINE)
    d.dispatch(OFFLINE)
    assert later == [OFFLINE]


def test_the_queue_keeps_the_newest_frames_and_counts_the_dropped():
    d = Dispatcher(max_queue=2)
    d.start()
    for f in (CHAT, ONLINE, OFFLINE):
        d.dispatch(f)
    assert d.dropped == 1
    assert [d.next(0), d.next(0)] == [ONLINE, OFFLINE]
    with pytest.raises(TimeoutError):
        d.next(0.01)


def test_without_a_queue_only_callbacks_see_frames():
    d = Dispatcher(max_queue=0)
    seen = []
    d.on("*", seen.append)
    d.start()
    d.dispatch(CHAT)
    assert seen == [CHAT] and d.dropped == 0
    with pytest.raises(TimeoutError):
        d.next(0.01)


def test_next_before_start_is_not_connected():
    with pytest.raises(NotConnected):
        Dispatcher().next(0)


def test_after_the_end_the_queue_drains_then_the_error_is_raised():
    d = Dispatcher()
    d.start()
    d.dispatch(CHAT)
    d.end(Replaced(4001, "", "replaced"))
    d.end(ClientClosed())                         # the first end stands
    assert d.next(0) is CHAT
    with pytest.raises(Replaced):
        d.next(1)


def test_the_end_wakes_a_waiting_reader():
    d = Dispatcher()
    d.start()
    got: list = []

    def reader():
        try:
            d.next(10)
        except ClientClosed as e:
            got.append(e)

    t = threading.Thread(target=reader)
    t.start()
    d.end(ClientClosed())
    t.join(5)
    assert not t.is_alive() and isinstance(got[0], ClientClosed)


def test_a_waiting_reader_gets_the_frame_dispatched_meanwhile():
    d = Dispatcher()
    d.start()
    timer = threading.Timer(0.05, d.dispatch, args=(CHAT,))
    timer.start()
    assert isinstance(d.next(5), ChatMessage)
    timer.join()
