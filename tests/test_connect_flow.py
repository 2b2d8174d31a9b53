"""PROTOCOL.md section 1, after the upgrade: online to friends, then the
backlog, then `connected`; frames produced meanwhile are held until after it."""
from __future__ import annotations

import threading
import time

import pytest

from harness import ConnectionClosed, NoFrame, assert_ms_timestamp, now_ms, running_system

CONNECTED_FIELDS = {"userId", "onlineCount", "onlineFriends", "unreadPushed", "serverTime"}


def test_connected_has_all_fields(system):
    alice = system.register_user("cf")
    before = now_ms()
    client = system.connect(alice)
    data = client.connected
    assert CONNECTED_FIELDS <= set(data), data
    assert data["userId"] == alice.id
    assert type(data["onlineCount"]) is int and data["onlineCount"] >= 1
    assert data["onlineFriends"] == []
    assert data["unreadPushed"] == 0
    assert client.backlog == []
    assert_ms_timestamp(data["serverTime"], before, slack_ms=5000)


def test_online_friends_lists_exactly_the_friends_online_now(system):
    alice, bob, carol, dave = system.users("of_a", "of_b", "of_c", "of_d")
    system.befriend(alice, bob)
    system.befriend(alice, carol)
    system.connect(bob)
    system.connect(dave)          # online, but not a friend
    # carol is a friend, but offline
    client = system.connect(alice)
    assert sorted(client.connected["onlineFriends"]) == [bob.id]


def test_online_friends_are_user_ids(system):
    alice, bob, carol = system.users("ofi_a", "ofi_b", "ofi_c")
    system.befriend(alice, bob)
    system.befriend(carol, alice)   # friendship added from the other side
    system.connect(bob)
    system.connect(carol)
    ids = system.connect(alice).connected["onlineFriends"]
    assert sorted(ids) == sorted([bob.id, carol.id])
    assert all(type(i) is int for i in ids)


@pytest.mark.timeout(60)
def test_online_count_counts_users_on_the_gateway(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("count")) as s:
        a, b, c = s.users("cnt_a", "cnt_b", "cnt_c")
        s.befriend(a, b)
        ca = s.connect(a)
        assert ca.connected["onlineCount"] == 1
        cb = s.connect(b)
        assert cb.connected["onlineCount"] == 2
        ca.expect("online")
        # a second connection of a user replaces the first: still two users
        ca2 = s.connect(a)
        assert ca2.connected["onlineCount"] == 2
        assert ca.expect_close() == 4001
        cb.close()
        assert ca2.expect("offline")["userId"] == b.id
        cc = s.connect(c)
        assert cc.connected["onlineCount"] == 2


def test_order_is_online_then_backlog_then_connected(system):
    alice, bob = system.users("ord_a", "ord_b")
    system.befriend(alice, bob)
    cb = system.connect(bob)
    m1 = cb.chat(alice, "first while you were away")
    cb.expect_ack(m1, "sent")
    m2 = cb.chat(alice, "second while you were away")
    cb.expect_ack(m2, "sent")
    cb.assert_no_frame(0.3)

    ca = system.connect(alice)
    assert [m["msgId"] for m in ca.backlog] == [m1, m2]
    assert ca.connected["unreadPushed"] == 2
    assert ca.connected["onlineFriends"] == [bob.id]
    # bob: alice came online (step 2) before her backlog was pushed (step 3)
    online = cb.expect("online")
    assert online["userId"] == alice.id
    cb.expect_ack(m1, "delivered")
    cb.expect_ack(m2, "delivered")
    ca.assert_no_frame(0.3)


def test_ack_for_a_chat_sent_before_connected_follows_connected(system):
    alice, bob, carol = system.users("hold_a", "hold_b", "hold_c")
    system.seed_many(bob, alice, 300, prefix="backlog")
    cc = system.connect(carol)
    ca = system.connect(alice, wait_connected=False)
    mid = ca.chat(carol, "sent before connected arrived")
    data = ca.wait_connected(timeout=30)
    assert data["unreadPushed"] == 300
    assert len(ca.backlog) == 300
    assert all(m["fromUserId"] == bob.id for m in ca.backlog)
    ca.expect_ack(mid, "sent")
    ca.expect_ack(mid, "delivered")
    chat = cc.expect("chat")
    assert chat["msgId"] == mid


@pytest.mark.timeout(90)
def test_live_events_during_backlog_push_are_held_and_chats_sent_once(system):
    alice, bob, carol = system.users("live_a", "live_b", "live_c")
    system.befriend(alice, bob)
    system.befriend(alice, carol)
    seeded = system.seed_many(bob, alice, 500, prefix="bl")
    cb = system.connect(bob)

    ca = system.connect(alice, wait_connected=False)
    live = cb.chat(alice, "live, during the backlog")
    carol_client: list = []
    t = threading.Thread(target=lambda: carol_client.append(system.connect(carol)))
    t.start()
    data = ca.wait_connected(timeout=60)   # asserts only chats came before it
    t.join(15)
    assert carol_client, "carol did not connect"

    backlog_ids = [m["msgId"] for m in ca.backlog]
    assert data["unreadPushed"] == len(backlog_ids)
    assert len(set(backlog_ids)) == len(backlog_ids), "a backlog chat was sent twice"
    assert backlog_ids[:500] == seeded
    assert set(backlog_ids) <= set(seeded) | {live}

    need_live = live not in backlog_ids
    need_online = carol.id not in data["onlineFriends"]
    after = []
    while need_live or need_online:
        frame = ca.recv_frame(timeout=5)
        after.append(frame)
        if frame["type"] == "chat":
            assert frame["data"]["msgId"] == live, f"unexpected chat after connected: {frame}"
            assert need_live, "the live chat was sent twice"
            need_live = False
        elif frame["type"] == "online":
            assert frame["data"]["userId"] == carol.id, frame
            need_online = False
        else:
            pytest.fail(f"unexpected frame after connected: {frame}")
    # nothing is sent twice afterwards
    for frame in ca.frames_for(0.5):
        assert frame["type"] != "chat", f"chat after connected sent again: {frame}"


def test_backlog_chats_carry_all_fields(system):
    alice, bob = system.users("blf_a", "blf_b")
    stored = system.seed_message(bob, alice, "hello from the store", content_type=2)
    ca = system.connect(alice)
    assert len(ca.backlog) == 1
    chat = ca.backlog[0]
    for key in ("msgId", "fromUserId", "toUserId", "content", "contentType", "createdAt", "seq"):
        assert chat[key] == stored[key], (key, chat, stored)
    assert chat["fromUserId"] == bob.id and chat["toUserId"] == alice.id
    assert_ms_timestamp(chat["createdAt"])


def test_connected_then_live_chat_is_not_backlog(system):
    alice, bob = system.users("cl_a", "cl_b")
    ca = system.connect(alice)
    cb = system.connect(bob)
    mid = cb.chat(alice, "live")
    assert ca.expect("chat")["msgId"] == mid
    assert ca.connected["unreadPushed"] == 0
    cb.expect_ack(mid, "sent")
    cb.expect_ack(mid, "delivered")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("round_", range(3))
def test_messages_arriving_while_connecting_are_sent_once_in_order(system, round_):
    """A message that is both in the backlog and arrives live is sent once, and
    frames from one sender keep their order across backlog and live."""
    alice, bob = system.minted_user("race_a"), system.minted_user("race_b")
    ca = system.connect(alice)
    ids = [f"race-{round_}-{i:03d}" for i in range(90)]
    started = threading.Event()

    def send_all():
        for i, mid in enumerate(ids):
            ca.chat(bob, f"n{i}", msg_id=mid)
            if i == 30:
                started.set()
            time.sleep(0.004)

    t = threading.Thread(target=send_all)
    t.start()
    assert started.wait(10)
    cb = system.connect(bob, connected_timeout=30)
    t.join(20)
    got = [m["msgId"] for m in cb.backlog]
    assert cb.connected["unreadPushed"] == len(got)
    while len(got) < len(ids):
        got.append(cb.expect("chat")["msgId"])
    assert got == ids, "messages from one sender duplicated, lost or reordered"
    cb.assert_no_frame(0.3)


@pytest.mark.timeout(60)
def test_concurrent_logins_of_one_user_leave_exactly_one(system):
    alice = system.minted_user("conc")
    for _ in range(3):
        clients: list = []
        lock = threading.Lock()

        def open_one():
            c = system.connect(alice, wait_connected=False)
            with lock:
                clients.append(c)

        threads = [threading.Thread(target=open_one) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(clients) == 3
        survivors, kicked = [], []
        for c in clients:
            try:
                frame = c.recv_frame(timeout=3)
                while frame["type"] != "connected":
                    frame = c.recv_frame(timeout=3)
            except ConnectionClosed as e:
                kicked.append(e.code)
                continue
            code = None
            try:
                code = c.expect_close(timeout=1.5)
            except NoFrame:
                survivors.append(c)
            else:
                kicked.append(code)
        assert len(survivors) == 1, f"{len(survivors)} connections of one user survived"
        assert kicked == [4001, 4001], kicked
        survivors[0].assert_open()
        survivors[0].close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("round_", range(5))
def test_friends_connecting_at_once_each_learn_the_other_is_online(system, round_):
    alice, bob = system.users("both_a", "both_b")
    system.befriend(alice, bob)
    out: dict = {}

    def open_one(user):
        out[user.id] = system.connect(user)

    threads = [threading.Thread(target=open_one, args=(u,)) for u in (alice, bob)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for me, friend in ((alice, bob), (bob, alice)):
        client = out[me.id]
        if friend.id in client.connected["onlineFriends"]:
            continue
        frame = client.expect("online", timeout=3)
        assert frame["userId"] == friend.id


def test_presence_frames_alternate_and_end_in_the_true_state(system):
    alice, bob = system.users("alt_a", "alt_b")
    system.befriend(alice, bob)
    cb = system.connect(bob)
    for _ in range(5):
        system.connect(alice).close()
    last = system.connect(alice)
    last.assert_open()
    frames = [f for f in cb.frames_for(1.5) if f["type"] in ("online", "offline")]
    kinds = [f["type"] for f in frames]
    assert all(f["data"]["userId"] == alice.id for f in frames)
    assert kinds, "bob never saw alice online"
    assert all(a != b for a, b in zip(kinds, kinds[1:])), f"presence does not alternate: {kinds}"
    assert kinds[0] == "online" and kinds[-1] == "online", kinds
    last.close()
    assert cb.expect("offline")["userId"] == alice.id
