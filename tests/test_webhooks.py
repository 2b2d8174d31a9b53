"""PROTOCOL.md 9.3: webhooks, against real processes and a real HTTP receiver
(tests/support/webhook_receiver.py) that checks every X-SkyeIM-Signature.

Standalone: the five events with their body shape and signature, the Events
filter, retries after 500 with the same id, a full queue dropping (counted), and
chat going on at full speed while the receiver hangs. Cluster (two gateways on
Redis): user.online / user.offline once per cluster transition whichever node
holds the connections (also when both nodes connect the user at the same
moment), message.offline and friend.* once.
"""
from __future__ import annotations

import threading
import time

import pytest

from harness import User
from load_harness import scrape
from webhook_receiver import Receiver

SECRET = "webhook-test-secret"
SKIP = ("pong", "online", "offline")
SETTLE = 1.5           # s to wait for a repeat that must not come (generous: a loaded machine)
EVENT_KEYS = {"id", "event", "timestamp", "data"}


def webhooks(url: str, **extra) -> dict:
    return {"Webhooks": {"Url": url, "Secret": SECRET, **extra}}


@pytest.fixture
def receiver():
    with Receiver(SECRET) as r:
        yield r


def test_events_are_signed_and_shaped_as_protocol_says(system_factory, receiver):
    system = system_factory(ws=webhooks(receiver.url))
    alice, bob = system.users("wh_a", "wh_b")

    ca = system.connect(alice)
    online = receiver.wait_event("user.online", userId=alice.id)[0]

    mid = ca.chat(bob, "are you there?")             # bob is offline: push material
    ca.expect_ack(mid, "sent", skip=SKIP)
    offline_msg = receiver.wait_event("message.offline")[0]
    message = offline_msg["data"]["message"]
    assert message == {**message, "msgId": mid, "fromUserId": alice.id, "toUserId": bob.id,
                       "content": "are you there?", "contentType": 1}
    assert {"createdAt", "seq"} <= set(message)

    cb = system.connect(bob)
    receiver.wait_event("user.online", userId=bob.id)
    ca.expect_ack(mid, "delivered", skip=SKIP)       # pushed at bob's connect
    assert [m["msgId"] for m in cb.backlog] == [mid]
    live = ca.chat(bob, "now you are")               # bob is online: no message.offline
    ca.expect_ack(live, "sent", skip=SKIP)
    ca.expect_ack(live, "delivered", skip=SKIP)
    cb.expect("chat", skip=SKIP)

    assert system.api("POST", "/api/friends", alice, json_body={"friendId": bob.id}).status_code == 200
    added = receiver.wait_event("friend.added")[0]
    assert added["data"] == {"userId": alice.id, "friendId": bob.id}
    assert system.api("DELETE", f"/api/friends/{alice.id}", bob).status_code == 200
    removed = receiver.wait_event("friend.removed")[0]
    assert removed["data"] == {"userId": bob.id, "friendId": alice.id}

    ca.close()
    gone = receiver.wait_event("user.offline", userId=alice.id)[0]

    time.sleep(SETTLE)
    events = receiver.events()
    for e in (online, offline_msg, added, removed, gone):
        assert set(e) == EVENT_KEYS, e
        assert isinstance(e["timestamp"], int) and e["timestamp"] > 1_600_000_000_000, e
    assert len({e["id"] for e in events}) == len(events)
    assert [m["data"]["message"]["msgId"] for m in receiver.events("message.offline")] == [mid]
    assert all(r.signed_ok for r in receiver.received), "every POST carries a valid signature"
    assert all(r.headers.get("X-SkyeIM-Event") == r.body["event"] for r in receiver.received)
    assert len(receiver.events("user.online", userId=alice.id)) == 1
    assert len(receiver.events("user.offline", userId=alice.id)) == 1
    # signed with another secret, a receiver refuses it
    from skyeim.protocol.signatures import HEADER, verify_signature
    r0 = receiver.received[0]
    assert not verify_signature(r0.raw, r0.headers[HEADER], "another-secret")


def test_the_server_api_friendships_and_messages_make_events_too(system_factory, receiver):
    from server_api_harness import WS_OVERRIDE, call
    system = system_factory(ws={**webhooks(receiver.url), **WS_OVERRIDE})
    alice, bob = system.users("wh_s1", "wh_s2")
    r = call(system.url, "POST", "/friends", json_body={"userId": alice.id, "friendId": bob.id})
    assert r.status_code == 200, r.text
    assert receiver.wait_event("friend.added")[0]["data"] == {"userId": alice.id,
                                                              "friendId": bob.id}
    r = call(system.url, "DELETE", f"/friends/{bob.id}/{alice.id}")
    assert r.status_code == 200, r.text
    assert receiver.wait_event("friend.removed")[0]["data"] == {"userId": bob.id,
                                                                "friendId": alice.id}
    r = call(system.url, "POST", "/messages", json_body={"fromUserId": alice.id,
                                                          "toUserId": bob.id, "content": "ping"})
    assert r.status_code == 200, r.text
    pushed = receiver.wait_event("message.offline")[0]["data"]["message"]
    assert (pushed["msgId"], pushed["content"]) == (r.json()["msgId"], "ping")
    time.sleep(SETTLE)
    assert len(receiver.events()) == 3


def test_a_multilogin_replacement_is_neither_offline_nor_online(system_factory, receiver):
    system = system_factory(ws=webhooks(receiver.url))
    alice = system.users("wh_kick")[0]
    first = system.connect(alice)
    receiver.wait_event("user.online", userId=alice.id)
    system.connect(alice)                          # MultiLogin kick: the first closes 4001
    assert first.expect_close() == 4001
    time.sleep(SETTLE)
    assert len(receiver.events("user.online", userId=alice.id)) == 1
    assert receiver.events("user.offline", userId=alice.id) == []


def test_events_lists_which_are_sent(system_factory, receiver):
    system = system_factory(ws=webhooks(receiver.url, Events=["message.offline"]))
    alice, bob = system.users("wh_f1", "wh_f2")
    ca = system.connect(alice)
    mid = ca.chat(bob, "only this")
    receiver.wait_event("message.offline")
    ca.close()
    time.sleep(SETTLE)
    assert [b["event"] for b in receiver.bodies()] == ["message.offline"]
    assert receiver.bodies()[0]["data"]["message"]["msgId"] == mid


def test_a_failing_receiver_gets_the_event_again_with_the_same_id(system_factory, receiver):
    system = system_factory(ws=webhooks(receiver.url, MaxAttempts=4))
    alice, bob = system.users("wh_r1", "wh_r2")
    receiver.fail_next(2, 500)
    ca = system.connect(alice)
    mid = ca.chat(bob, "retry me")
    ca.expect_ack(mid, "sent", skip=SKIP)
    # user.online fails twice, then goes through; message.offline waits its turn
    receiver.wait_event("message.offline", timeout=20)
    tries = [b for b in receiver.bodies() if b["event"] == "user.online"]
    assert len(tries) == 3, tries
    assert len({b["id"] for b in tries}) == 1
    assert [b["event"] for b in receiver.bodies()][-1] == "message.offline"   # in order
    values = scrape(system.metrics_url)
    assert values["skyeim_webhook_retries_total"] >= 2
    assert values['skyeim_webhook_sent_total{event="user.online"}'] == 1


def test_a_hanging_receiver_never_delays_chat_and_a_full_queue_drops(system_factory, receiver):
    system = system_factory(ws=webhooks(receiver.url, QueueSize=3, Timeout=20000))
    alice, bob = system.users("wh_h1", "wh_h2")
    receiver.hang()
    ca = system.connect(alice)
    receiver.wait_for(lambda: receiver.received, what="the first POST (now hanging)")
    t0 = time.monotonic()
    ids = [ca.chat(bob, f"offline {i}") for i in range(20)]     # 20 message.offline events
    for mid in ids:
        ca.expect_ack(mid, "sent", skip=SKIP)
    took = time.monotonic() - t0
    assert took < 5.0, f"20 chats took {took:.1f}s with the receiver hanging"
    values = scrape(system.metrics_url)
    # user.online in flight (it stays in the queue until done) and two message.offline
    # fill the queue of 3: the other 18 were dropped and counted
    assert values["skyeim_webhook_dropped_total"] == 18, values
    assert values["skyeim_webhook_queue_depth"] == 3
    assert "webhooks: queue full" in system.log_text()
    receiver.release()
    receiver.wait_event("message.offline", count=2)
    time.sleep(SETTLE)
    assert [e["data"]["message"]["msgId"] for e in receiver.events("message.offline")] == ids[:2]


# ---------------------------------------------------------------------------
# cluster: each event once per cluster

@pytest.fixture(scope="module")
def hooked_cluster(tmp_path_factory):
    from cluster_harness import running_cluster
    receiver = Receiver(SECRET).__enter__()
    ws = {**webhooks(receiver.url), "WebSocket": {"MultiLogin": "allow"}}
    try:
        with running_cluster(tmp_path_factory.mktemp("whcluster"), "whcluster", nodes=2,
                             heartbeat_interval=1, node_ttl=3, ws=ws) as system:
            yield system, receiver
    finally:
        receiver.__exit__(None, None, None)


def _fresh_user(system, name: str) -> User:
    return system.users(name)[0]


def test_cluster_online_and_offline_once_per_cluster(hooked_cluster):
    system, receiver = hooked_cluster
    n1, n2 = system[1], system[2]
    alice = _fresh_user(system, "whc_a")

    c1 = n1.connect(alice)
    receiver.wait_event("user.online", userId=alice.id)
    c2 = n2.connect(alice)                        # a second device on the other node
    c1.close()                                    # one left, on node 2: still online
    time.sleep(SETTLE)
    assert len(receiver.events("user.online", userId=alice.id)) == 1
    assert receiver.events("user.offline", userId=alice.id) == []
    c2.close()
    receiver.wait_event("user.offline", userId=alice.id)
    time.sleep(SETTLE)
    assert len(receiver.events("user.offline", userId=alice.id)) == 1
    assert len(receiver.events("user.online", userId=alice.id)) == 1


def test_cluster_simultaneous_logins_on_both_nodes_are_one_online(hooked_cluster):
    system, receiver = hooked_cluster
    n1, n2 = system[1], system[2]
    for round_ in range(3):
        bob = _fresh_user(system, f"whc_b{round_}")
        clients: list = []
        barrier = threading.Barrier(2)

        def connect(node):
            barrier.wait()
            clients.append(node.connect(bob))

        threads = [threading.Thread(target=connect, args=(n,)) for n in (n1, n2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(clients) == 2
        receiver.wait_event("user.online", userId=bob.id)
        closers = [threading.Thread(target=c.close) for c in clients]
        for t in closers:
            t.start()
        for t in closers:
            t.join(10)
        receiver.wait_event("user.offline", userId=bob.id)
        time.sleep(SETTLE)
        assert len(receiver.events("user.online", userId=bob.id)) == 1, round_
        assert len(receiver.events("user.offline", userId=bob.id)) == 1, round_


def test_cluster_message_offline_and_friend_events_once(hooked_cluster):
    system, receiver = hooked_cluster
    n1, n2 = system[1], system[2]
    alice, bob, carol = (_fresh_user(system, n) for n in ("whc_m1", "whc_m2", "whc_m3"))
    ca = n1.connect(alice)
    n2.connect(bob)
    to_carol = ca.chat(carol, "carol is offline")
    to_bob = ca.chat(bob, "bob is on node 2")
    ca.expect_ack(to_carol, "sent", skip=SKIP)
    ca.expect_ack(to_bob, "sent", skip=SKIP)
    ca.expect_ack(to_bob, "delivered", skip=SKIP)
    assert n2.api("POST", "/api/friends", alice, json={"friendId": carol.id}).status_code == 200
    receiver.wait_event("friend.added", userId=alice.id)
    receiver.wait_event("message.offline")
    time.sleep(SETTLE)
    offline = [e["data"]["message"]["msgId"] for e in receiver.events("message.offline")
               if e["data"]["message"]["fromUserId"] == alice.id]
    assert offline == [to_carol]
    assert len(receiver.events("friend.added", userId=alice.id)) == 1
    assert all(r.signed_ok for r in receiver.received)


def test_cluster_users_of_a_dead_node_go_offline_once(hooked_cluster):
    system, receiver = hooked_cluster
    n1, n2 = system[1], system[2]
    dave = _fresh_user(system, "whc_dead")
    n2.connect(dave)
    receiver.wait_event("user.online", userId=dave.id)
    n2.kill()                                      # no goodbye: node 1 cleans up after NodeTTL
    try:
        receiver.wait_event("user.offline", timeout=20, userId=dave.id)
        time.sleep(SETTLE)
        assert len(receiver.events("user.offline", userId=dave.id)) == 1
        assert len(receiver.events("user.online", userId=dave.id)) == 1
    finally:
        system.ensure_running()
