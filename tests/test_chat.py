"""PROTOCOL.md sections 2 and 3: chat frames, acks `sent` and `delivered`,
ChatMessage fields, server-made msgIds, seq per conversation, ordering."""
from __future__ import annotations

import json

import pytest

import rawws
from harness import CHAT_FIELDS, UUID4, assert_ms_timestamp, new_msg_id, now_ms


@pytest.fixture
def pair(system):
    alice, bob = system.users("chat_a", "chat_b")
    return alice, bob, system.connect(alice), system.connect(bob)


def assert_not_duplicate(ack: dict) -> None:
    assert ack.get("duplicate") in (None, False), ack


def test_chat_is_acked_sent_then_delivered_and_received(pair):
    alice, bob, ca, cb = pair
    before = now_ms()
    mid = ca.chat(bob, "hi bob", content_type=1)
    sent = ca.expect_ack(mid, "sent")
    delivered = ca.expect_ack(mid, "delivered")
    chat = cb.expect("chat")

    assert set(chat) >= CHAT_FIELDS, chat
    assert chat == {**chat, "msgId": mid, "fromUserId": alice.id, "toUserId": bob.id,
                    "content": "hi bob", "contentType": 1}
    assert_ms_timestamp(chat["createdAt"], before, slack_ms=5000)
    assert chat["seq"] == 1

    assert {"msgId", "status", "timestamp", "seq"} <= set(sent), sent
    assert sent["timestamp"] == chat["createdAt"]
    assert sent["seq"] == chat["seq"]
    assert_not_duplicate(sent)
    assert delivered["seq"] == chat["seq"]
    assert_ms_timestamp(delivered["timestamp"], before, slack_ms=5000)
    assert delivered["timestamp"] >= sent["timestamp"]
    assert_not_duplicate(delivered)
    ca.assert_no_frame(0.3)
    cb.assert_no_frame(0.3)


@pytest.mark.parametrize("lie", ["other-user", "string", "zero", "null"])
def test_from_user_id_is_always_the_senders_verified_id(system, pair, lie):
    alice, bob, ca, cb = pair
    carol = system.register_user("liar_target")
    claimed = {"other-user": carol.id, "string": str(carol.id), "zero": 0, "null": None}[lie]
    mid = ca.chat(bob, "trust me", fromUserId=claimed)
    ca.expect_ack(mid, "sent")
    chat = cb.expect("chat")
    assert chat["msgId"] == mid
    assert chat["fromUserId"] == alice.id


def test_client_supplied_created_at_and_seq_are_ignored(pair):
    alice, bob, ca, cb = pair
    mid = ca.chat(bob, "from the past", createdAt=1, seq=999)
    sent = ca.expect_ack(mid, "sent")
    chat = cb.expect("chat")
    assert chat["seq"] == 1 == sent["seq"]
    assert_ms_timestamp(chat["createdAt"])


@pytest.mark.parametrize("how", ["absent", "null"])
def test_server_makes_a_uuid4_msg_id(pair, how):
    alice, bob, ca, cb = pair
    data = {"toUserId": bob.id, "content": "no id"}
    if how == "null":
        data["msgId"] = None
    ca.send("chat", data)
    sent = ca.expect_ack(None, "sent")
    assert isinstance(sent["msgId"], str) and UUID4.match(sent["msgId"]), sent
    delivered = ca.expect_ack(sent["msgId"], "delivered")
    chat = cb.expect("chat")
    assert chat["msgId"] == sent["msgId"] == delivered["msgId"]


def test_each_message_without_msg_id_gets_its_own(pair):
    alice, bob, ca, cb = pair
    ca.send("chat", {"toUserId": bob.id, "content": "one"})
    ca.send("chat", {"toUserId": bob.id, "content": "two"})
    chats = cb.collect("chat", 2)
    assert chats[0]["msgId"] != chats[1]["msgId"]
    assert [c["content"] for c in chats] == ["one", "two"]


def test_seq_is_1_2_3_per_conversation(system):
    a, b, c = system.users("seq_a", "seq_b", "seq_c")
    ca, cb, cc = system.connect(a), system.connect(b), system.connect(c)

    def send(client, sender, recipient_client, to):
        mid = client.chat(to, f"{sender.username} -> {to.username}")
        sent = client.expect_ack(mid, "sent")
        client.expect_ack(mid, "delivered")
        chat = recipient_client.expect("chat")
        assert chat["msgId"] == mid and chat["seq"] == sent["seq"]
        return sent["seq"]

    assert send(ca, a, cb, b) == 1
    assert send(cb, b, ca, a) == 2       # same conversation, other direction
    assert send(ca, a, cc, c) == 1       # another conversation starts at 1
    assert send(ca, a, cb, b) == 3
    assert send(cc, c, ca, a) == 2
    assert send(cb, b, ca, a) == 4


@pytest.mark.parametrize("content_type", [1, 2, 3, 4])
def test_content_types_1_to_4_are_delivered_as_sent(pair, content_type):
    alice, bob, ca, cb = pair
    content = "plain text" if content_type == 1 else f"https://cdn.example.com/obj/{content_type}"
    mid = ca.chat(bob, content, content_type=content_type)
    ca.expect_ack(mid, "sent")
    chat = cb.expect("chat")
    assert (chat["msgId"], chat["content"], chat["contentType"]) == (mid, content, content_type)


@pytest.mark.parametrize("how", ["absent", "null"])
def test_content_type_defaults_to_text(pair, how):
    alice, bob, ca, cb = pair
    if how == "absent":
        mid = ca.chat(bob, "default type")
    else:
        mid = ca.chat(bob, "default type", content_type=None)
    ca.expect_ack(mid, "sent")
    assert cb.expect("chat")["contentType"] == 1


@pytest.mark.parametrize("content", [
    "héllo wörld", "你好，世界", "emoji 😀👍🏽", "line1\nline2\ttab", 'quotes " and \\ backslash',
    "\u0000 nul inside", "x",
])
def test_content_round_trips_exactly(pair, content):
    alice, bob, ca, cb = pair
    mid = ca.chat(bob, content)
    ca.expect_ack(mid, "sent")
    chat = cb.expect("chat")
    assert chat["content"] == content


def test_content_of_max_length_is_accepted(system, pair):
    alice, bob, ca, cb = pair
    content = "z" * system.ws_config["Chat"]["MaxContentLength"]
    mid = ca.chat(bob, content)
    ca.expect_ack(mid, "sent")
    assert cb.expect("chat")["content"] == content


@pytest.mark.timeout(60)
def test_many_frames_from_one_sender_arrive_in_order(pair):
    alice, bob, ca, cb = pair
    ids = [new_msg_id() for _ in range(80)]
    for i, mid in enumerate(ids):
        ca.chat(bob, f"message {i}", msg_id=mid)
    chats = cb.collect("chat", len(ids), timeout=30)
    assert [c["msgId"] for c in chats] == ids
    assert [c["seq"] for c in chats] == list(range(1, len(ids) + 1))
    assert [c["content"] for c in chats] == [f"message {i}" for i in range(len(ids))]
    acks = ca.collect("ack", 2 * len(ids), timeout=30)
    sent = [a["msgId"] for a in acks if a["status"] == "sent"]
    delivered = [a["msgId"] for a in acks if a["status"] == "delivered"]
    assert sent == ids
    assert delivered == ids
    for mid in ids:   # sent before delivered, for every message
        order = [a["status"] for a in acks if a["msgId"] == mid]
        assert order == ["sent", "delivered"], (mid, order)


def test_both_directions_at_once(pair):
    alice, bob, ca, cb = pair
    ma = ca.chat(bob, "from alice")
    mb = cb.chat(alice, "from bob")
    assert cb.expect("chat", skip=("pong", "ack"))["msgId"] == ma
    assert ca.expect("chat", skip=("pong", "ack"))["msgId"] == mb


def test_delivered_message_shows_in_history(system, pair):
    alice, bob, ca, cb = pair
    mid = ca.chat(bob, "for the record")
    sent = ca.expect_ack(mid, "sent")
    ca.expect_ack(mid, "delivered")
    cb.expect("chat")
    hist = system.history(alice, bob)
    assert len(hist["messages"]) == 1
    m = hist["messages"][0]
    assert (m["msgId"], m["content"], m["seq"], m["createdAt"], m["status"]) == \
        (mid, "for the record", sent["seq"], sent["timestamp"], "delivered")


def test_chat_to_the_largest_user_id(system):
    alice = system.minted_user("big_a")
    biggest = 2**63 - 1
    ca = system.connect(alice)
    mid = ca.chat(biggest, "to the end of the id space")
    sent = ca.expect_ack(mid, "sent")
    assert sent["seq"] == 1
    cz = system.connect(None, token=system.token_for(biggest))
    assert [(m["msgId"], m["toUserId"], m["fromUserId"]) for m in cz.backlog] == \
        [(mid, biggest, alice.id)]
    ca.expect_ack(mid, "delivered")


def test_same_msg_id_sent_three_times_back_to_back(pair):
    alice, bob, ca, cb = pair
    mid = new_msg_id()
    for content in ("first", "second", "third"):
        ca.chat(bob, content, msg_id=mid)
    acks = ca.frames_for(2.0)
    sent = [f["data"] for f in acks if f["type"] == "ack" and f["data"]["status"] == "sent"]
    delivered = [f["data"] for f in acks if f["type"] == "ack" and f["data"]["status"] == "delivered"]
    assert all(f["type"] == "ack" and f["data"]["msgId"] == mid for f in acks), acks
    assert len(sent) == 3, acks
    assert sent[0].get("duplicate") in (None, False)
    assert [a["duplicate"] for a in sent[1:]] == [True, True]
    assert len({a["seq"] for a in sent}) == 1 and len({a["timestamp"] for a in sent}) == 1
    assert 1 <= len(delivered) <= 3
    chats = cb.frames_for(1.0)
    assert [(c["type"], c["data"]["content"]) for c in chats] == [("chat", "first")]


@pytest.mark.timeout(60)
def test_a_burst_in_one_write_is_answered_in_order(system):
    """Frames that arrive together are read in one pass of the read loop (their
    chats stored in one batch): every answer still comes in the frames' order,
    and the recipient gets the chats in order with seqs 1, 2, 3, ..."""
    alice, bob = system.users("burst_a", "burst_b")
    cb = system.connect(bob)
    ws = rawws.connect(system, alice)
    m = [new_msg_id() for _ in range(5)]

    def chat(mid, text):
        return rawws.frame_bytes(rawws.OP_TEXT, json.dumps(
            {"type": "chat", "data": {"msgId": mid, "toUserId": bob.id, "content": text}}))

    ws.send_raw(chat(m[0], "one") + chat(m[1], "two") + rawws.frame_bytes(rawws.OP_TEXT, rawws.PING_JSON)
                + rawws.frame_bytes(rawws.OP_TEXT, "not json") + chat(m[2], "three")
                + chat(m[0], "one again") + chat(m[3], "") + chat(m[4], "five"))
    answers = []
    while len(answers) < 8:       # the `delivered` acks come when bob has the chats
        frame = ws.recv_json()
        if not (frame["type"] == "ack" and frame["data"]["status"] == "delivered"):
            answers.append(frame)
    summary = [(f["type"], f["data"].get("msgId") if f["data"] else None,
                f["data"].get("status") or f["data"].get("code") if f["data"] else None)
               for f in answers]
    assert summary == [("ack", m[0], "sent"), ("ack", m[1], "sent"), ("pong", None, None),
                       ("error", None, "bad_json"), ("ack", m[2], "sent"), ("ack", m[0], "sent"),
                       ("error", m[3], "bad_request"), ("ack", m[4], "sent")], summary
    assert [a["data"]["seq"] for a in answers if a["type"] == "ack"] == [1, 2, 3, 1, 4]
    assert answers[5]["data"].get("duplicate") is True
    chats = cb.collect("chat", 4, timeout=10)
    assert [(c["msgId"], c["seq"], c["content"]) for c in chats] == [
        (m[0], 1, "one"), (m[1], 2, "two"), (m[2], 3, "three"), (m[4], 4, "five")]
    cb.assert_no_frame(0.3)
    rawws.close_raw_sockets()
