"""PROTOCOL.md section 3, "Read receipts"."""
from __future__ import annotations

import pytest

from harness import assert_ms_timestamp, now_ms


@pytest.fixture
def convo(system):
    """alice sent bob three messages, which bob received live."""
    alice, bob = system.users("rr_a", "rr_b")
    ca, cb = system.connect(alice), system.connect(bob)
    ids = []
    for i in range(3):
        mid = ca.chat(bob, f"msg {i}")
        ca.expect_ack(mid, "sent")
        ca.expect_ack(mid, "delivered")
        ids.append(mid)
    assert [c["msgId"] for c in cb.collect("chat", 3)] == ids
    return alice, bob, ca, cb, ids


def test_read_with_msg_ids_notifies_the_peer(convo):
    alice, bob, ca, cb, ids = convo
    before = now_ms()
    cb.read(alice, ids[:2])
    read = ca.expect("read")
    assert read["peerId"] == bob.id
    assert sorted(read["msgIds"]) == sorted(ids[:2])
    assert_ms_timestamp(read["timestamp"], before, slack_ms=5000)
    cb.assert_no_frame(0.5)          # the reader gets nothing back


def test_read_without_msg_ids_marks_every_unread_from_the_peer(convo):
    alice, bob, ca, cb, ids = convo
    cb.read(alice, [ids[0]])
    assert ca.expect("read")["msgIds"] == [ids[0]]
    cb.read(alice)
    read = ca.expect("read")
    assert read["peerId"] == bob.id
    assert sorted(read["msgIds"]) == sorted(ids[1:])     # only the newly marked
    cb.assert_no_frame(0.3)


@pytest.mark.parametrize("msg_ids", [[], None], ids=["empty-list", "null"])
def test_read_with_empty_or_null_msg_ids_marks_all(convo, msg_ids):
    alice, bob, ca, cb, ids = convo
    cb.read(alice, msg_ids)
    assert sorted(ca.expect("read")["msgIds"]) == sorted(ids)


def test_reading_again_marks_nothing_and_sends_nothing(convo):
    alice, bob, ca, cb, ids = convo
    cb.read(alice)
    ca.expect("read")
    cb.read(alice)
    cb.read(alice, ids)
    ca.assert_no_frame(0.7)
    cb.assert_no_frame(0.1)


def test_only_messages_from_peer_to_reader_are_marked(system):
    alice, bob, carol = system.users("rp_a", "rp_b", "rp_c")
    ca, cb, cc = system.connect(alice), system.connect(bob), system.connect(carol)
    ma = ca.chat(bob, "from alice")
    ca.expect_ack(ma, "sent")
    mc = cc.chat(bob, "from carol")
    cc.expect_ack(mc, "sent")
    assert {c["msgId"] for c in cb.collect("chat", 2)} == {ma, mc}
    mb = cb.chat(alice, "from bob to alice")
    cb.expect_ack(mb, "sent")
    cb.expect_ack(mb, "delivered")

    cb.read(alice, [ma, mc, mb, "no-such-message"])
    read = ca.expect("read", skip=("pong", "ack", "chat"))
    assert read == {**read, "peerId": bob.id, "msgIds": [ma]}
    cc.assert_no_frame(0.5, skip=("pong", "ack"))
    cb.assert_no_frame(0.1)

    # carol's message is still unread, bob's own message was not marked read
    cb.close()
    cb2 = system.connect(bob)
    assert [m["msgId"] for m in cb2.backlog] == [mc]
    statuses = {m["msgId"]: m["status"] for m in system.history(alice, bob)["messages"]}
    assert statuses == {ma: "read", mb: "delivered"}


def test_read_while_peer_offline_marks_without_a_frame(system):
    alice, bob = system.users("ro_a", "ro_b")
    ca = system.connect(alice)
    mid = ca.chat(bob, "later")
    ca.expect_ack(mid, "sent")
    ca.close()
    cb = system.connect(bob)
    assert [m["msgId"] for m in cb.backlog] == [mid]
    cb.read(alice)
    cb.assert_no_frame(0.3)
    hist = system.history(bob, alice)["messages"]
    assert [(m["msgId"], m["status"]) for m in hist] == [(mid, "read")]
    # the peer connecting later does not get a stale read frame, and bob's backlog is empty
    ca2 = system.connect(alice)
    ca2.assert_no_frame(0.3)
    cb.close()
    assert system.connect(bob).backlog == []


def test_read_of_never_delivered_message_marks_it_read(system):
    alice, bob = system.users("rnd_a", "rnd_b")
    ca, cb = system.connect(alice), system.connect(bob)
    stored = system.seed_message(alice, bob, "stored, never pushed")
    cb.read(alice, [stored["msgId"]])
    read = ca.expect("read")
    assert read["msgIds"] == [stored["msgId"]] and read["peerId"] == bob.id
    cb.close()
    assert system.connect(bob).backlog == []


def test_read_frame_reaches_every_step_in_order(convo):
    alice, bob, ca, cb, ids = convo
    for mid in ids:
        cb.read(alice, [mid])
    got = [ca.expect("read")["msgIds"] for _ in ids]
    assert got == [[mid] for mid in ids]
