"""The SDK's sync (skyeim.client, docs/protocol.md "Sync") against a live system:
after a reconnect the client catches up on the conversations it knows, its own
messages sent from another device included, each message yielded once and in
seq order; a gap in seq is filled by a range request."""
from __future__ import annotations

import time

import pytest

from harness import wait_until
from skyeim.client import Backoff, ChatMessage, Client, SyncComplete
from skyeim.client.sync import Conversations
from sdk_harness import FAST, Proxy


def chats_until_synced(client: Client, timeout: float = 10.0) -> list[ChatMessage]:
    """The chat frames from the iterator up to the next SyncComplete."""
    out, deadline = [], time.monotonic() + timeout
    while True:
        f = client.next_frame(max(deadline - time.monotonic(), 0.001))
        if isinstance(f, SyncComplete):
            return out
        if isinstance(f, ChatMessage):
            out.append(f)


def chats_for(client: Client, duration: float) -> list[ChatMessage]:
    out, deadline = [], time.monotonic() + duration
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            f = client.next_frame(remaining)
        except TimeoutError:
            break
        if isinstance(f, ChatMessage):
            out.append(f)
    return out


def ack_sent(raw, msg_id: str) -> dict:
    """The `ack sent` of ``msg_id`` on a harness connection (other acks pass by)."""
    for _ in range(100):                          # bounded
        ack = raw.expect("ack", skip=("pong", "chat"))
        if ack["msgId"] == msg_id and ack["status"] == "sent":
            return ack
    raise AssertionError(f"no ack sent for {msg_id}")


# -- units -----------------------------------------------------------------------

def test_conversations_track_the_gapless_mark_and_recognise_repeats():
    c = Conversations()
    assert c.message(1, 2, 1, "a", 5) is True             # new conversation: history before
    assert c.marks == {2: 5}
    assert c.message(1, 2, 1, "a", 5) is False             # the same message again
    assert c.message(1, 2, 1, "c", 7) is True              # 6 is missing
    assert c.marks == {2: 5}
    [gap] = c.gaps()
    assert gap["data"]["conversations"] == [{"peerId": 2, "afterSeq": 5, "beforeSeq": 7}]
    assert c.gaps() == []                                   # one request in flight at a time
    c.own(1, 2, "b", 6)                                     # our own chat was seq 6
    assert c.marks == {2: 7}
    assert c.complete(gap["data"]["requestId"], [{"peerId": 2, "lastSeq": 6, "hasMore": False}]) == []
    [again] = c.catch_up()
    assert again["data"]["conversations"] == [{"peerId": 2, "afterSeq": 7}]
    follow = c.complete(again["data"]["requestId"], [{"peerId": 2, "lastSeq": 9, "hasMore": True}])
    assert follow[0]["data"]["conversations"] == [{"peerId": 2, "afterSeq": 9}]


def test_a_gap_the_server_cannot_fill_is_asked_for_a_bounded_number_of_times():
    c = Conversations()
    c.track(2, 1)
    c.message(1, 2, 1, "x", 4)
    asked, frames = 0, c.gaps()
    for _ in range(10):                     # each answer brings the next request, if any
        if not frames:
            break
        asked += 1
        frames = c.complete(frames[0]["data"]["requestId"],
                            [{"peerId": 2, "lastSeq": 1, "hasMore": False}])
    assert asked == 3 and c.marks == {2: 1}


# -- against a live system ---------------------------------------------------------

@pytest.mark.timeout(120)
def test_after_a_reconnect_the_client_yields_what_it_missed_once_in_order(system_factory, clients):
    # the kicked connection's close is swallowed by the proxy: the gateway waits
    # CloseTimeout before dropping it, long enough for the second device's work
    s = system_factory(ws={"WebSocket": {"CloseTimeout": 30}})
    alice, bob = s.users("cy_a", "cy_b")
    proxy = Proxy(s.port)
    try:
        cb = clients(s.url, bob.token)
        ca = clients(proxy.ws_url, alice.token)
        first = cb.send_chat(alice.id, "before the drop", wait="delivered")
        assert [m.msg_id for m in chats_for(ca, 1.0)] == [first.msg_id]
        assert ca.conversations == {bob.id: 1}
        proxy.blackhole(up=True, down=True)        # device 1 hears nothing from here on
        phone = s.connect(alice)                   # device 2 (kicks device 1, unheard)
        own = []
        for i in range(2):
            mid = phone.chat(bob, f"from the phone {i}")
            ack_sent(phone, mid)
            own.append(mid)
        answer = cb.send_chat(alice.id, "bob answers", wait="delivered")
        assert phone.expect("chat", skip=("pong", "ack"))["msgId"] == answer.msg_id
        phone.read(bob, [answer.msg_id])           # read on the phone: never pushed again
        phone.close()
        proxy.cut()                                # device 1 reconnects and syncs
        got = chats_until_synced(ca, timeout=20)
        assert ca.reconnects == 1
        assert [(m.msg_id, m.seq) for m in got] == [(own[0], 2), (own[1], 3), (answer.msg_id, 4)]
        assert [m.from_user_id for m in got] == [alice.id, alice.id, bob.id]
        assert got[-1].status == "read"
        assert ca.conversations == {bob.id: 4}
        # the next reconnect syncs again and yields nothing twice
        ca.drop_connection()
        assert chats_until_synced(ca, timeout=20) == []
        assert chats_for(ca, 0.5) == []
    finally:
        proxy.close()


def test_a_gap_in_seq_is_filled_by_a_range_request(system, clients):
    alice, bob = system.users("cg_a", "cg_b")
    ca = clients(system.url, alice.token)
    cb = clients(system.url, bob.token)
    cb.send_chat(alice.id, "one", wait="delivered")
    assert [m.seq for m in chats_for(ca, 1.0)] == [1]
    # stored behind the gateway's back: alice never gets seq 2 live
    lost = system.seed_message(bob, alice, "lost on the way")
    three = cb.send_chat(alice.id, "three", wait="sent")
    got = chats_until_synced(ca)                   # the live seq 3, then the range's seq 2
    assert [(m.seq, m.msg_id) for m in got] == [(3, three.msg_id), (2, lost["msgId"])]
    assert ca.conversations == {bob.id: 3}
    assert chats_for(ca, 0.5) == []


def test_a_tracked_conversation_is_synced_at_the_first_connect(system, clients):
    alice, bob = system.users("ct_a", "ct_b")
    for i in range(3):
        system.seed_message(alice, bob, f"old {i}")
    c = Client(system.url, alice.token, backoff=Backoff(**FAST))
    try:
        c.track(bob.id, 1)                         # the app stored seq 1 last time
        c.connect()
        got = chats_until_synced(c)
        assert [(m.seq, m.content) for m in got] == [(2, "old 1"), (3, "old 2")]
        wait_until(lambda: c.conversations == {bob.id: 3})
    finally:
        c.close(timeout=3)


def test_sync_can_be_turned_off(system, clients):
    alice, bob = system.users("cn_a", "cn_b")
    system.seed_message(bob, alice, "unread")
    ca = clients(system.url, alice.token, sync=False)
    ca.track(bob.id, 0)
    ca.drop_connection()
    frames = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and ca.reconnects == 0:
        try:
            frames.append(ca.next_frame(0.2))
        except TimeoutError:
            pass
    frames += [f for f in iter(lambda: _next_or_none(ca), None)]
    assert not any(isinstance(f, SyncComplete) for f in frames)
    # without sync, the backlog pushed at each connect comes again, as before
    assert [f.content for f in frames if isinstance(f, ChatMessage)] == ["unread", "unread"]


def _next_or_none(client: Client):
    try:
        return client.next_frame(0.7)
    except TimeoutError:
        return None
