"""Sync (docs/protocol.md, "Sync"): a client names, per conversation, the last
seq it holds and gets every later message in seq order, in `sync_messages`
pages, then `sync_complete`; a gap's range is asked for with `beforeSeq`.
Against a live system, standalone and in cluster mode."""
from __future__ import annotations


import pytest

from harness import CHAT_FIELDS, Client

MAX_MESSAGES = 1000       # messages in all in the answer to one sync frame


def sync(client: Client, conversations: list[dict], request_id: str | None = "r1",
         **extra) -> None:
    data = {"conversations": conversations, **extra}
    if request_id is not None:
        data["requestId"] = request_id
    client.send("sync", data)


def read_sync(client: Client, timeout: float = 10.0) -> tuple[list[dict], dict]:
    """The `sync_messages` pages of one answer, then its `sync_complete` (data of each)."""
    pages = []
    for _ in range(10_000):                 # bounded: an answer has at most 1000 pages
        frame = client.recv_frame(timeout)
        if frame["type"] == "sync_complete":
            done = frame["data"]
            # serverTime: the next sync's changedSince (docs/protocol.md "Recall, edit, delete")
            assert isinstance(done.pop("serverTime"), int), done
            return pages, done
        assert frame["type"] == "sync_messages", frame
        pages.append(frame["data"])
    raise AssertionError("no sync_complete")


def seqs(pages: list[dict], peer_id: int | None = None) -> list[int]:
    return [m["seq"] for p in pages if peer_id in (None, p["peerId"]) for m in p["messages"]]


def send_acked(client: Client, to, content: str) -> dict:
    """Send a chat and return its `ack sent` (passing over other acks meanwhile)."""
    mid = client.chat(to, content)
    for _ in range(100):                    # bounded
        ack = client.expect("ack", skip=("pong", "chat"))
        if ack["msgId"] == mid and ack["status"] == "sent":
            return ack
    raise AssertionError(f"no ack sent for {mid}")


# -- catching up ---------------------------------------------------------------

def test_sync_returns_what_came_after_the_last_seq_in_order_then_complete(system):
    alice, bob = system.users("sy_a", "sy_b")
    ids = [system.seed_message(alice, bob, f"m{i}")["msgId"] for i in range(5)]
    cb = system.connect(bob)                        # (the backlog push also brings them)
    sync(cb, [{"peerId": alice.id, "afterSeq": 2}])
    pages, done = read_sync(cb)
    assert [p["peerId"] for p in pages] == [alice.id]
    assert pages[0]["requestId"] == "r1" and pages[0]["hasMore"] is False
    msgs = pages[0]["messages"]
    assert [m["seq"] for m in msgs] == [3, 4, 5]
    assert [m["msgId"] for m in msgs] == ids[2:]
    assert [m["content"] for m in msgs] == ["m2", "m3", "m4"]
    for m in msgs:
        assert set(m) >= CHAT_FIELDS | {"status"}
        assert m["fromUserId"] == alice.id and m["toUserId"] == bob.id
    assert done == {"requestId": "r1",
                    "conversations": [{"peerId": alice.id, "lastSeq": 5, "hasMore": False}]}
    cb.assert_no_frame(0.3, skip=("pong", "ack"))


def test_sync_includes_own_messages_sent_from_another_connection(system):
    alice, bob = system.users("so_a", "so_b")
    first = system.connect(alice)
    a1 = send_acked(first, bob, "from the phone")
    system.seed_message(bob, alice, "bob answers")
    a3 = send_acked(first, bob, "phone again")
    first.close()
    second = system.connect(alice)                  # the laptop, later
    sync(second, [{"peerId": bob.id, "afterSeq": 0}], request_id="laptop-1")
    pages, done = read_sync(second)
    msgs = [m for p in pages for m in p["messages"]]
    assert [(m["fromUserId"], m["content"], m["seq"]) for m in msgs] == [
        (alice.id, "from the phone", a1["seq"]), (bob.id, "bob answers", 2),
        (alice.id, "phone again", a3["seq"])]
    assert [m["status"] for m in msgs][0] == "sent"     # bob never connected
    assert done["conversations"] == [{"peerId": bob.id, "lastSeq": 3, "hasMore": False}]


def test_an_empty_conversation_has_no_page_and_keeps_its_seq(system):
    alice, bob, carol = system.users("se_a", "se_b", "se_c")
    system.seed_message(carol, alice, "hi")
    ca = system.connect(alice)
    sync(ca, [{"peerId": bob.id, "afterSeq": 0}, {"peerId": carol.id, "afterSeq": 1}],
         request_id=None)
    pages, done = read_sync(ca)
    assert pages == []
    assert done == {"requestId": None, "conversations": [
        {"peerId": bob.id, "lastSeq": 0, "hasMore": False},
        {"peerId": carol.id, "lastSeq": 1, "hasMore": False}]}


def test_pages_follow_the_limit_and_conversations_come_in_request_order(system):
    alice, bob, carol = system.users("sp_a", "sp_b", "sp_c")
    system.seed_many(bob, alice, 7, prefix="b")
    system.seed_many(carol, alice, 2, prefix="c")
    ca = system.connect(alice)
    sync(ca, [{"peerId": carol.id, "afterSeq": 0}, {"peerId": bob.id, "afterSeq": 0}], limit=3)
    pages, done = read_sync(ca)
    assert [(p["peerId"], [m["seq"] for m in p["messages"]], p["hasMore"]) for p in pages] == [
        (carol.id, [1, 2], False),
        (bob.id, [1, 2, 3], True), (bob.id, [4, 5, 6], True), (bob.id, [7], False)]
    assert done["conversations"] == [{"peerId": carol.id, "lastSeq": 2, "hasMore": False},
                                     {"peerId": bob.id, "lastSeq": 7, "hasMore": False}]


def test_a_gap_range_returns_exactly_the_missing_seqs(system):
    alice, bob = system.users("sg_a", "sg_b")
    system.seed_many(alice, bob, 8, prefix="g")
    cb = system.connect(bob)
    # the client holds 1-2 and 6-8: it asks for what lies between
    sync(cb, [{"peerId": alice.id, "afterSeq": 2, "beforeSeq": 6}], limit=2)
    pages, done = read_sync(cb)
    assert [([m["seq"] for m in p["messages"]], p["hasMore"]) for p in pages] == [
        ([3, 4], True), ([5], False)]
    assert [m["content"] for p in pages for m in p["messages"]] == ["g #2", "g #3", "g #4"]
    assert done["conversations"] == [{"peerId": alice.id, "lastSeq": 5, "hasMore": False}]


def test_the_answer_is_bounded_and_says_where_to_continue(system):
    alice, bob = system.users("sb_a", "sb_b")
    system.seed_many(alice, bob, MAX_MESSAGES + 5, prefix="big", threads=8)
    carol = system.register_user("sb_c")
    system.seed_message(carol, bob, "unseen")
    cb = system.connect(bob, connected_timeout=60)
    sync(cb, [{"peerId": alice.id, "afterSeq": 0}, {"peerId": carol.id, "afterSeq": 0}],
         limit=200)
    pages, done = read_sync(cb, timeout=30)
    assert seqs(pages) == list(range(1, MAX_MESSAGES + 1))
    assert all(len(p["messages"]) == 200 for p in pages)
    # alice's conversation was cut short, carol's not reached: both to be asked again
    assert done["conversations"] == [{"peerId": alice.id, "lastSeq": MAX_MESSAGES, "hasMore": True},
                                     {"peerId": carol.id, "lastSeq": 0, "hasMore": True}]
    sync(cb, [{"peerId": alice.id, "afterSeq": MAX_MESSAGES}, {"peerId": carol.id, "afterSeq": 0}],
         request_id="r2", limit=200)
    pages, done = read_sync(cb, timeout=30)
    assert seqs(pages, alice.id) == list(range(MAX_MESSAGES + 1, MAX_MESSAGES + 6))
    assert [m["content"] for m in pages[-1]["messages"]] == ["unseen"]
    assert [c["hasMore"] for c in done["conversations"]] == [False, False]


# -- delivery ------------------------------------------------------------------

def test_synced_messages_count_as_delivered_and_the_sender_is_acked_once(system):
    alice, bob = system.users("sd_a", "sd_b")
    ca, cb = system.connect(alice), system.connect(bob)
    # stored behind the gateway's back (as when a live chat was lost on the way):
    # bob is online but never got it, so it is still `sent`
    stored = system.seed_message(alice, bob, "lost on the way")
    assert system.history(alice, bob)["messages"][0]["status"] == "sent"
    sync(cb, [{"peerId": alice.id, "afterSeq": 0}])
    pages, _ = read_sync(cb)
    assert [(m["msgId"], m["status"]) for m in pages[0]["messages"]] == [(stored["msgId"], "sent")]
    ack = ca.expect_ack(stored["msgId"], "delivered")
    assert ack["seq"] == stored["seq"] and ack["timestamp"] >= stored["createdAt"]
    assert system.history(alice, bob)["messages"][0]["status"] == "delivered"
    sync(cb, [{"peerId": alice.id, "afterSeq": 0}], request_id="again")
    pages, _ = read_sync(cb)
    assert [m["status"] for m in pages[0]["messages"]] == ["delivered"]
    ca.assert_no_frame(0.5)                          # one `delivered`, not one per sync
    # alice's own sync does not mark her own message: only the recipient's counts
    sync(ca, [{"peerId": bob.id, "afterSeq": 0}])
    read_sync(ca)
    cb.assert_no_frame(0.5)


def test_a_sync_sent_before_connected_is_answered_after_it(system):
    alice, bob = system.users("sc_a", "sc_b")
    system.seed_many(alice, bob, 3, prefix="early")
    cb = system.connect(bob, wait_connected=False)
    sync(cb, [{"peerId": alice.id, "afterSeq": 1}])
    cb.wait_connected()                              # only backlog chats precede it
    assert [m["seq"] for m in cb.backlog] == [1, 2, 3]
    pages, done = read_sync(cb)
    assert seqs(pages) == [2, 3] and done["conversations"][0]["lastSeq"] == 3


# -- bad input -----------------------------------------------------------------

_BAD = {
    "no data": None,
    "data not an object": [1],
    "no conversations": {},
    "empty conversations": {"conversations": []},
    "conversations not a list": {"conversations": {"peerId": 1}},
    "101 conversations": {"conversations": [{"peerId": i, "afterSeq": 0} for i in range(2, 103)]},
    "conversation not an object": {"conversations": [5]},
    "peerId missing": {"conversations": [{"afterSeq": 0}]},
    "peerId a string": {"conversations": [{"peerId": "2", "afterSeq": 0}]},
    "peerId 0": {"conversations": [{"peerId": 0, "afterSeq": 0}]},
    "peerId oneself": {"conversations": [{"peerId": "SELF", "afterSeq": 0}]},
    "peerId twice": {"conversations": [{"peerId": 2, "afterSeq": 0}, {"peerId": 2, "afterSeq": 3}]},
    "afterSeq negative": {"conversations": [{"peerId": 2, "afterSeq": -1}]},
    "afterSeq a float": {"conversations": [{"peerId": 2, "afterSeq": 1.5}]},
    "afterSeq a string": {"conversations": [{"peerId": 2, "afterSeq": "3"}]},
    "afterSeq true": {"conversations": [{"peerId": 2, "afterSeq": True}]},
    "afterSeq 2^63": {"conversations": [{"peerId": 2, "afterSeq": 2**63}]},
    "beforeSeq not above afterSeq": {"conversations": [{"peerId": 2, "afterSeq": 4, "beforeSeq": 4}]},
    "beforeSeq a string": {"conversations": [{"peerId": 2, "afterSeq": 0, "beforeSeq": "9"}]},
    "limit 0": {"conversations": [{"peerId": 2}], "limit": 0},
    "limit a float": {"conversations": [{"peerId": 2}], "limit": 2.0},
    "limit a string": {"conversations": [{"peerId": 2}], "limit": "10"},
}


@pytest.mark.parametrize("data", _BAD.values(), ids=_BAD.keys())
def test_invalid_sync_frames_are_bad_request_with_the_request_id(system, data):
    user = system.minted_user("sx")
    c = system.connect(user)
    if isinstance(data, dict):
        data = {**data, "requestId": "req-7"}
        for conv in data.get("conversations") or []:
            if isinstance(conv, dict) and conv.get("peerId") == "SELF":
                conv["peerId"] = user.id
    c.send("sync", data)
    err = c.expect_error("bad_request", None)
    if isinstance(data, dict):
        assert err["requestId"] == "req-7", err
    c.assert_open()


@pytest.mark.parametrize("request_id", ["", "a b", "x" * 65, 7], ids=repr)
def test_an_invalid_request_id_is_bad_request_without_an_echo(system, request_id):
    c = system.connect(system.minted_user("sr"))
    c.send("sync", {"requestId": request_id, "conversations": [{"peerId": 2, "afterSeq": 0}]})
    err = c.expect_error("bad_request", None)
    assert "requestId" not in err
    c.assert_open()


@pytest.mark.parametrize("kind", ["sync_messages", "sync_complete"])
def test_the_answers_are_server_only_types(system, kind):
    c = system.connect(system.minted_user("su"))
    c.send(kind, {"requestId": "x", "conversations": []})
    c.expect_error("unknown_type", None)


def test_a_limit_over_200_is_capped(system):
    alice, bob = system.users("sl_a", "sl_b")
    system.seed_many(alice, bob, 205, prefix="cap", threads=4)
    cb = system.connect(bob)
    sync(cb, [{"peerId": alice.id, "afterSeq": 0}], limit=10_000)
    pages, done = read_sync(cb)
    assert [len(p["messages"]) for p in pages] == [200, 5]
    assert seqs(pages) == list(range(1, 206)) and done["conversations"][0]["lastSeq"] == 205


def test_an_unknown_peer_is_an_empty_conversation(system):
    c = system.connect(system.minted_user("sn"))
    sync(c, [{"peerId": 2**63 - 1, "afterSeq": 0}])
    pages, done = read_sync(c)
    assert pages == [] and done["conversations"] == [
        {"peerId": 2**63 - 1, "lastSeq": 0, "hasMore": False}]


# -- rate limit ----------------------------------------------------------------

def test_sync_frames_count_against_the_rate_limit(system_factory):
    # a slow refill, so that a loaded machine cannot earn a fourth token meanwhile
    s = system_factory(ws={"WebSocket": {"RateLimit": {"Rate": 0.05, "Burst": 3}}})
    alice, bob = s.minted_user("rl_a"), s.minted_user("rl_b")
    s.seed_message(alice, bob, "one")
    cb = s.connect(bob)
    for i in range(5):
        sync(cb, [{"peerId": alice.id, "afterSeq": 0}], request_id=f"n{i}")
    answered, refused = [], []
    for _ in range(30):                          # bounded: 3 answers of 2 frames + 2 errors
        frame = cb.recv_frame()
        if frame["type"] == "sync_complete":
            answered.append(frame["data"]["requestId"])
        elif frame["type"] == "error":
            assert frame["data"]["code"] == "rate_limited" and frame["data"]["msgId"] is None
            refused.append(frame["data"]["requestId"])
        else:
            assert frame["type"] == "sync_messages", frame
        if len(answered) + len(refused) == 5:
            break
    assert answered == ["n0", "n1", "n2"] and refused == ["n3", "n4"]


# -- backend failure -----------------------------------------------------------

def test_sync_while_the_message_service_is_down_is_unavailable(system_factory):
    s = system_factory(standalone=False)
    alice, bob = s.minted_user("su_a"), s.minted_user("su_b")
    cb = s.connect(bob)
    s.stop_process("message")
    sync(cb, [{"peerId": alice.id, "afterSeq": 0}], request_id="down")
    err = cb.expect_error("unavailable", None, timeout=20)
    assert err["requestId"] == "down"
    cb.assert_open()


# -- cluster mode --------------------------------------------------------------

def test_sync_catches_up_across_cluster_nodes(tmp_path):
    from cluster_harness import running_cluster
    with running_cluster(tmp_path, "sync_cluster") as cluster:
        alice, bob = cluster.users("cs_a", "cs_b")
        ca = cluster[1].connect(alice)
        cb = cluster[2].connect(bob)
        first = send_acked(ca, bob, "live across nodes")
        assert cb.expect("chat")["msgId"] == first["msgId"]
        cb.close()
        later = [send_acked(ca, bob, f"while away {i}") for i in range(3)]
        reply = send_acked(cluster[2].connect(alice), bob, "from alice's second device")
        # bob comes back on the other node, holding seq 1
        cb = cluster[1].connect(bob)
        sync(cb, [{"peerId": alice.id, "afterSeq": first["seq"]}], limit=2)
        pages, done = read_sync(cb)
        assert seqs(pages) == [2, 3, 4, 5]
        assert [m["msgId"] for p in pages for m in p["messages"]] == \
            [a["msgId"] for a in later] + [reply["msgId"]]
        assert done["conversations"] == [{"peerId": alice.id, "lastSeq": 5, "hasMore": False}]