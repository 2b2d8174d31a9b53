"""PROTOCOL.md section 3, steps 4-5 and "Unread push": messages for an offline
user wait unread, are pushed at every connect (oldest first) until read, and
the sender learns of the first delivery only."""
from __future__ import annotations

import threading
import time

import pytest

from harness import CHAT_FIELDS


def test_offline_recipient_gets_sent_ack_only(system):
    alice, bob = system.users("off_a", "off_b")
    ca = system.connect(alice)
    mid = ca.chat(bob, "are you there?")
    ca.expect_ack(mid, "sent")
    ca.assert_no_frame(0.7)
    assert system.history(alice, bob)["messages"][0]["status"] == "sent"


def test_backlog_is_pushed_oldest_first_and_sender_gets_delivered_then(system):
    alice, bob = system.users("bl_a", "bl_b")
    ca = system.connect(alice)
    ids = []
    for i in range(3):
        mid = ca.chat(bob, f"offline {i}")
        ca.expect_ack(mid, "sent")
        ids.append(mid)
    ca.assert_no_frame(0.3)

    cb = system.connect(bob)
    assert [m["msgId"] for m in cb.backlog] == ids
    assert [m["content"] for m in cb.backlog] == [f"offline {i}" for i in range(3)]
    assert [m["seq"] for m in cb.backlog] == [1, 2, 3]
    for m in cb.backlog:
        assert set(m) >= CHAT_FIELDS
        assert m["fromUserId"] == alice.id and m["toUserId"] == bob.id
    assert cb.connected["unreadPushed"] == 3
    acks = ca.collect("ack", 3)
    assert sorted(a["msgId"] for a in acks) == sorted(ids)    # each exactly once
    for ack in acks:
        assert ack["status"] == "delivered"
        assert ack["timestamp"] >= cb.backlog[ids.index(ack["msgId"])]["createdAt"]
        assert ack["seq"] == cb.backlog[ids.index(ack["msgId"])]["seq"]
    ca.assert_no_frame(0.3)
    statuses = {m["msgId"]: m["status"] for m in system.history(alice, bob)["messages"]}
    assert statuses == {mid: "delivered" for mid in ids}


def test_backlog_order_is_storage_order_across_conversations(system):
    alice, bob, carol = system.users("so_a", "so_b", "so_c")
    ca, cc = system.connect(alice), system.connect(carol)
    order = []
    for sender, client in [(carol, cc), (alice, ca), (carol, cc), (alice, ca)]:
        mid = client.chat(bob, f"from {sender.username}")
        client.expect_ack(mid, "sent")
        order.append(mid)
    cb = system.connect(bob)
    assert [m["msgId"] for m in cb.backlog] == order
    assert cb.connected["unreadPushed"] == 4


def test_second_connect_pushes_unread_again_without_second_delivered(system):
    alice, bob = system.users("re_a", "re_b")
    ca = system.connect(alice)
    m1 = ca.chat(bob, "one")
    ca.expect_ack(m1, "sent")
    m2 = ca.chat(bob, "two")
    ca.expect_ack(m2, "sent")

    cb = system.connect(bob)
    assert [m["msgId"] for m in cb.backlog] == [m1, m2]
    acks = ca.collect("ack", 2)
    assert sorted((a["msgId"], a["status"]) for a in acks) == sorted([(m1, "delivered"), (m2, "delivered")])
    cb.close()

    cb2 = system.connect(bob)
    assert [m["msgId"] for m in cb2.backlog] == [m1, m2]
    assert cb2.connected["unreadPushed"] == 2
    assert cb2.backlog == cb.backlog       # same messages, same fields
    ca.assert_no_frame(0.7)


def test_live_message_is_pushed_again_at_next_connect_while_unread(system):
    alice, bob = system.users("lu_a", "lu_b")
    ca, cb = system.connect(alice), system.connect(bob)
    mid = ca.chat(bob, "live but unread")
    ca.expect_ack(mid, "sent")
    ca.expect_ack(mid, "delivered")
    assert cb.expect("chat")["msgId"] == mid
    cb.close()
    cb2 = system.connect(bob)
    assert [m["msgId"] for m in cb2.backlog] == [mid]
    ca.assert_no_frame(0.5)


def test_read_messages_are_never_pushed_again(system):
    alice, bob = system.users("rn_a", "rn_b")
    ca = system.connect(alice)
    ids = []
    for i in range(3):
        ids.append(ca.chat(bob, f"m{i}"))
        ca.expect_ack(ids[-1], "sent")
    cb = system.connect(bob)
    assert [m["msgId"] for m in cb.backlog] == ids
    cb.read(alice, [ids[0]])
    assert ca.expect("read", skip=("pong", "ack"))["msgIds"] == [ids[0]]
    cb.close()

    cb2 = system.connect(bob)
    assert [m["msgId"] for m in cb2.backlog] == ids[1:]
    assert cb2.connected["unreadPushed"] == 2
    cb2.read(alice)
    read = ca.expect("read", skip=("pong", "ack"))
    assert sorted(read["msgIds"]) == sorted(ids[1:])
    cb2.close()

    cb3 = system.connect(bob)
    assert cb3.backlog == []
    assert cb3.connected["unreadPushed"] == 0


def test_messages_to_others_are_not_in_my_backlog(system):
    alice, bob, carol = system.users("nm_a", "nm_b", "nm_c")
    ca = system.connect(alice)
    m1 = ca.chat(carol, "for carol")
    ca.expect_ack(m1, "sent")
    m2 = ca.chat(bob, "for bob")
    ca.expect_ack(m2, "sent")
    cb = system.connect(bob)
    assert [m["msgId"] for m in cb.backlog] == [m2]
    # messages bob sent himself are not pushed back to him either
    mb = cb.chat(carol, "bob to carol")
    cb.expect_ack(mb, "sent")
    cb.close()
    assert [m["msgId"] for m in system.connect(bob).backlog] == [m2]


@pytest.mark.timeout(240)
def test_backlog_of_2000_is_pushed_in_full_without_duplicates(system):
    alice, bob = system.users("big_a", "big_b")
    carol, dave = system.minted_user("big_c"), system.minted_user("big_d")
    cc, cd = system.connect(carol), system.connect(dave)
    ids = system.seed_many(alice, bob, 2000, prefix="big")
    result: list = []
    t = threading.Thread(target=lambda: result.append(system.connect(bob, connected_timeout=120)))
    t.start()
    # meanwhile other users chat without noticeable delay
    for i in range(5):
        started = time.monotonic()
        mid = cc.chat(dave, f"meanwhile {i}")
        cc.expect_ack(mid, "sent", timeout=2)
        assert cd.expect("chat", timeout=2)["msgId"] == mid
        cc.expect_ack(mid, "delivered", timeout=2)
        assert time.monotonic() - started < 2.0
    t.join(150)
    assert result, "bob did not get connected"
    cb = result[0]
    got = [m["msgId"] for m in cb.backlog]
    assert len(got) == 2000
    assert len(set(got)) == 2000, "a backlog chat was sent twice"
    assert got == ids, "backlog not in storage order"
    assert [m["seq"] for m in cb.backlog] == list(range(1, 2001))
    assert cb.connected["unreadPushed"] == 2000
    cb.assert_no_frame(0.5)
    cb.assert_open()
    statuses = {m["status"] for m in system.history(alice, bob, limit=200)["messages"]}
    assert statuses == {"delivered"}


@pytest.mark.timeout(240)
def test_sender_online_gets_delivered_for_each_of_a_large_backlog(system):
    alice, bob = system.users("bigd_a", "bigd_b")
    ids = system.seed_many(alice, bob, 450, prefix="bigd")
    ca = system.connect(alice)
    cb = system.connect(bob, connected_timeout=60)
    assert [m["msgId"] for m in cb.backlog] == ids
    acks = ca.collect("ack", 450, timeout=60)
    assert sorted(a["msgId"] for a in acks) == sorted(ids)    # each exactly once
    assert {a["status"] for a in acks} == {"delivered"}
    ca.assert_no_frame(0.5)


@pytest.mark.timeout(60)
def test_backlog_larger_than_the_send_queue_still_ends_with_connected(system_factory):
    """The backlog may fill the send queue right before `connected`: connected
    (and anything held) waits for room like the backlog, it does not overflow (4002)."""
    s = system_factory(ws={"WebSocket": {"SendQueueSize": 10}})
    alice, bob = s.users("bigq_a", "bigq_b")
    ids = s.seed_many(alice, bob, 20, prefix="bigq")
    cb = s.connect(bob)
    assert [m["msgId"] for m in cb.backlog] == ids
    assert cb.connected["unreadPushed"] == 20
    cb.assert_open()
