"""PROTOCOL.md section 3, "Idempotency": (fromUserId, msgId) identifies a
message; a resend stores nothing new and tells the sender the state."""
from __future__ import annotations

from harness import new_msg_id


def test_resend_of_delivered_message_is_duplicate_and_delivered_again(system):
    alice, bob = system.users("idem_a", "idem_b")
    ca, cb = system.connect(alice), system.connect(bob)
    mid = ca.chat(bob, "original")
    first = ca.expect_ack(mid, "sent")
    first_delivered = ca.expect_ack(mid, "delivered")
    assert cb.expect("chat")["content"] == "original"

    ca.chat(bob, "changed on resend", msg_id=mid, content_type=2)
    again = ca.expect_ack(mid, "sent")
    assert again["duplicate"] is True
    assert again["seq"] == first["seq"]
    assert again["timestamp"] == first["timestamp"]   # the original createdAt
    delivered = ca.expect_ack(mid, "delivered")
    assert delivered["seq"] == first["seq"]
    assert delivered["timestamp"] == first_delivered["timestamp"]   # the first delivery time
    cb.assert_no_frame(0.7)           # the recipient does not get it a second time

    hist = system.history(alice, bob)["messages"]
    assert len(hist) == 1
    assert (hist[0]["msgId"], hist[0]["content"], hist[0]["contentType"]) == (mid, "original", 1)


def test_resend_of_undelivered_message_to_offline_recipient(system):
    alice, bob = system.users("idu_a", "idu_b")
    ca = system.connect(alice)
    mid = ca.chat(bob, "original")
    first = ca.expect_ack(mid, "sent")
    ca.chat(bob, "resend", msg_id=mid)
    again = ca.expect_ack(mid, "sent")
    assert again["duplicate"] is True
    assert (again["seq"], again["timestamp"]) == (first["seq"], first["timestamp"])
    ca.assert_no_frame(0.5)           # not delivered: no delivered ack
    next_mid = ca.chat(bob, "next")
    assert ca.expect_ack(next_mid, "sent")["seq"] == first["seq"] + 1   # nothing stored twice

    cb = system.connect(bob)
    assert [(m["msgId"], m["content"]) for m in cb.backlog] == [(mid, "original"), (next_mid, "next")]
    acks = ca.collect("ack", 2)
    assert sorted(a["msgId"] for a in acks) == sorted([mid, next_mid])
    assert {a["status"] for a in acks} == {"delivered"}


def test_resend_of_undelivered_message_to_online_recipient_delivers_it_now(system):
    alice, bob = system.users("idn_a", "idn_b")
    ca, cb = system.connect(alice), system.connect(bob)
    # stored (not delivered) behind the gateway's back, e.g. a send whose acks were lost
    mid = new_msg_id()
    stored = system.seed_message(alice, bob, "stored earlier", msg_id=mid)
    cb.assert_no_frame(0.3)

    ca.chat(bob, "resent content is ignored", msg_id=mid)
    again = ca.expect_ack(mid, "sent")
    assert again["duplicate"] is True
    assert (again["seq"], again["timestamp"]) == (stored["seq"], stored["createdAt"])
    chat = cb.expect("chat")
    assert (chat["msgId"], chat["content"], chat["seq"]) == (mid, "stored earlier", stored["seq"])
    ca.expect_ack(mid, "delivered")
    cb.assert_no_frame(0.3)


def test_same_msg_id_from_two_senders_is_two_messages(system):
    alice, carol, bob = system.users("ids_a", "ids_c", "ids_b")
    ca, cc, cb = system.connect(alice), system.connect(carol), system.connect(bob)
    mid = "shared-client-id-1"
    ca.chat(bob, "from alice", msg_id=mid)
    a_ack = ca.expect_ack(mid, "sent")
    cc.chat(bob, "from carol", msg_id=mid)
    c_ack = cc.expect_ack(mid, "sent")
    assert a_ack.get("duplicate") in (None, False)
    assert c_ack.get("duplicate") in (None, False)
    chats = cb.collect("chat", 2)
    assert sorted((c["fromUserId"], c["content"]) for c in chats) == \
        sorted([(alice.id, "from alice"), (carol.id, "from carol")])


def test_resend_after_reconnect_learns_the_state(system):
    """A client that lost its acks reconnects and resends: duplicate, then delivered."""
    alice, bob = system.users("idr_a", "idr_b")
    ca, cb = system.connect(alice), system.connect(bob)
    mid = ca.chat(bob, "did it arrive?")
    first = ca.expect_ack(mid, "sent")
    ca.expect_ack(mid, "delivered")
    cb.expect("chat")
    ca.abort()                        # the client crashes and forgets what it knew
    ca2 = system.connect(alice)
    ca2.chat(bob, "did it arrive?", msg_id=mid)
    again = ca2.expect_ack(mid, "sent")
    assert again["duplicate"] is True and again["seq"] == first["seq"]
    ca2.expect_ack(mid, "delivered")
    cb.assert_no_frame(0.5)


def test_resend_of_read_message_is_duplicate_and_not_pushed(system):
    alice, bob = system.users("idrd_a", "idrd_b")
    ca, cb = system.connect(alice), system.connect(bob)
    mid = ca.chat(bob, "read me")
    ca.expect_ack(mid, "sent")
    ca.expect_ack(mid, "delivered")
    cb.expect("chat")
    cb.read(alice, [mid])
    ca.expect("read")
    ca.chat(bob, "read me", msg_id=mid)
    assert ca.expect_ack(mid, "sent")["duplicate"] is True
    ca.expect_ack(mid, "delivered")
    cb.assert_no_frame(0.5)
    cb.close()
    assert system.connect(bob).backlog == []
