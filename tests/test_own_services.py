"""PROTOCOL.md section 9.1: the gateway in front of a team's own services, which
implement the section 6 endpoints and nothing more (the stand-ins of
tests/support/standins.py; every other path answers 404 or 405).

Two layouts: ``standalone`` (``wsserver.py --standalone``, the Message and Friend
services replaced by stand-ins, the shipped Auth service in the gateway's process)
and ``split`` (the gateway process alone, all three services stand-ins). Then a
cluster of two gateways on Redis in front of the three stand-ins; and a probe: a
stand-in replaced by the shipped service (with the batch endpoints) is used
through them again.

Group chat is not part of section 6: with a Friend service without the group
endpoints a user simply has no groups (docs/integration.md).
"""
from __future__ import annotations

import time

import pytest

from harness import Client, new_msg_id, wait_until
from own_services_harness import running_standin_cluster, running_standin_system, swap_in_shipped

RPC_TIMEOUT_MS = 2000          # MessageRpc.Timeout etc. of these systems
SLACK = 10.0                   # s on top of protocol bounds, for a loaded machine


@pytest.fixture(scope="module", params=["standalone", "split"])
def system(request, tmp_path_factory):
    standalone = request.param == "standalone"
    kinds = ("message", "friend") if standalone else ("message", "friend", "auth")
    with running_standin_system(tmp_path_factory.mktemp(f"own-{request.param}"),
                                standins=kinds, standalone=standalone) as s:
        yield s


@pytest.fixture
def healthy(system):
    """The module's system with every stand-in serving normally, before and after."""
    for svc in system.standins.values():
        svc.heal()
    yield system
    for svc in system.standins.values():
        svc.heal()


def friends(system, a, b) -> None:
    system.befriend(a, b)


def read_until(client: Client, kind: str, timeout: float = 5.0) -> dict:
    """Skip other frames (presence) up to the next ``kind``; its data."""
    return client.skip_to(kind, timeout)


def sent(client: Client, mid: str, timeout: float = 5.0) -> dict:
    """Skip other frames (`delivered` acks of earlier chats, presence) up to ``mid``'s
    `sent` ack; its data."""
    deadline = time.monotonic() + timeout
    while True:
        ack = read_until(client, "ack", max(deadline - time.monotonic(), 0.001))
        if (ack["msgId"], ack["status"]) == (mid, "sent"):
            return ack


def absent(status: int) -> bool:
    return status in (404, 405)


# ---------------------------------------------------------------------------
# what a chat needs

def test_chat_with_both_acks(healthy):
    system = healthy
    alice, bob = system.users("alice", "bob")
    a, b = system.connect(alice), system.connect(bob)
    mid = new_msg_id()
    a.chat(bob.id, "hello through section 6", msg_id=mid)
    sent = a.expect_ack(mid, "sent")
    assert sent["seq"] == 1 and not sent.get("duplicate")
    chat = b.expect("chat")
    assert (chat["msgId"], chat["fromUserId"], chat["content"]) == (mid, alice.id,
                                                                   "hello through section 6")
    delivered = read_until(a, "ack")
    assert (delivered["msgId"], delivered["status"]) == (mid, "delivered")
    seen = system.standins["message"].requests()
    assert ("POST", "/v1/messages", 200) in seen
    assert ("POST", "/v1/messages/delivered", 200) in seen
    # the batch endpoints were asked once each at most (then every 60 s), never a chat's error
    for path in ("/v1/messages/batch", "/v1/messages/delivered/batch"):
        tries = [s for m, p, s in seen if p == path]
        assert len(tries) <= 1 and all(absent(s) for s in tries), (path, tries)


def test_offline_backlog_is_pushed_at_connect(healthy):
    system = healthy
    alice, bob = system.users("alice", "bob")
    a = system.connect(alice)
    ids = [new_msg_id() for _ in range(3)]
    for i, mid in enumerate(ids):
        a.chat(bob.id, f"while you were away #{i}", msg_id=mid)
        assert a.expect_ack(mid, "sent")["seq"] == i + 1
    a.assert_no_frame(0.5)
    b = system.connect(bob)
    assert [m["msgId"] for m in b.backlog] == ids
    assert b.connected["unreadPushed"] == 3
    acks = [read_until(a, "ack") for _ in ids]
    assert sorted((x["msgId"], x["status"]) for x in acks) == sorted((m, "delivered") for m in ids)
    b.close()
    again = system.connect(bob)              # still unread: pushed again, no second `delivered`
    assert [m["msgId"] for m in again.backlog] == ids
    a.assert_no_frame(0.5, skip=("pong", "online", "offline"))


def test_read_receipts(healthy):
    system = healthy
    alice, bob = system.users("alice", "bob")
    a, b = system.connect(alice), system.connect(bob)
    ids = [new_msg_id(), new_msg_id()]
    for mid in ids:
        a.chat(bob.id, "read me", msg_id=mid)
    b.collect("chat", 2)
    got = sorted((x["msgId"], x["status"]) for x in (read_until(a, "ack") for _ in range(4)))
    assert got == sorted((m, s) for m in ids for s in ("sent", "delivered"))
    b.read(alice.id, [ids[0]])
    receipt = read_until(a, "read")
    assert (receipt["peerId"], receipt["msgIds"]) == (bob.id, [ids[0]])
    b.read(alice.id)                          # every unread one from alice
    assert read_until(a, "read")["msgIds"] == [ids[1]]
    b.close()
    assert system.connect(bob).backlog == []


def test_presence_through_per_user_friend_lists(healthy):
    system = healthy
    alice, bob = system.users("alice", "bob")
    friends(system, alice, bob)
    a = system.connect(alice)
    assert a.connected["onlineFriends"] == []
    b = system.connect(bob)
    assert b.connected["onlineFriends"] == [alice.id]
    assert read_until(a, "online")["userId"] == bob.id
    listed = system.api("GET", "/api/friends", alice).json()["friends"]
    assert [(f["userId"], f["username"], f["online"]) for f in listed] == \
        [(bob.id, bob.username, True)]
    b.close()
    assert read_until(a, "offline")["userId"] == bob.id
    seen = system.standins["friend"].requests()
    assert ("GET", f"/v1/friends/{bob.id}", 200) in seen
    assert len([1 for _, p, _ in seen if p == "/v1/friends/lists"]) <= 1


def test_friendship_required_chat_works(tmp_path):
    """Chat.RequireFriendship checks the friend list through the section 6 call too."""
    with running_standin_system(tmp_path, standins=("message", "friend"),
                                ws={"Chat": {"RequireFriendship": True}}) as system:
        alice, bob, carol = system.users("alice", "bob", "carol")
        friends(system, alice, bob)
        a = system.connect(alice)
        mid = new_msg_id()
        a.chat(bob.id, "friends only", msg_id=mid)
        a.expect_ack(mid, "sent")
        other = new_msg_id()
        a.chat(carol.id, "not a friend", msg_id=other)
        a.expect_error("not_friends", other)


def test_the_fallback_is_logged_once(healthy):
    system = healthy
    alice, bob = system.users("alice", "bob")
    a = system.connect(alice)
    system.connect(bob)
    for _ in range(5):
        mid = new_msg_id()
        a.chat(bob.id, "again", msg_id=mid)
        sent(a, mid)
    log = system.log_text()
    for endpoint in ("POST /v1/messages/batch", "POST /v1/messages/delivered/batch",
                     "POST /v1/friends/lists"):
        lines = [ln for ln in log.splitlines() if f"has no {endpoint} " in ln]
        assert len(lines) == 1, (endpoint, lines)
        assert "using the section 6 calls instead" in lines[0]
    assert "Traceback" not in log


# ---------------------------------------------------------------------------
# a service that fails or hangs: unavailable, then recovery

@pytest.mark.parametrize("fault", ["fail", "hang"])
def test_unavailable_when_the_message_service_fails_then_recovery(healthy, fault):
    system = healthy
    alice, bob = system.users("alice", "bob")
    a, b = system.connect(alice), system.connect(bob)
    svc = system.standins["message"]
    getattr(svc, fault)()
    mid = new_msg_id()
    started = time.monotonic()
    a.chat(bob.id, "into the void", msg_id=mid)
    a.expect_error("unavailable", mid, timeout=3 * RPC_TIMEOUT_MS / 1000 + SLACK)
    if fault == "hang":
        assert time.monotonic() - started >= RPC_TIMEOUT_MS / 1000 * 0.9
    b.assert_no_frame(0.5)
    svc.heal()
    # the client retries with the same msgId once the service is back (the breaker may
    # still refuse for its cool-off: unavailable again, then a retry)
    deadline = time.monotonic() + SLACK
    while True:
        a.chat(bob.id, "into the void", msg_id=mid)
        frame = a.recv_frame(3 * RPC_TIMEOUT_MS / 1000 + SLACK)
        if frame["type"] == "ack":
            break
        assert frame["type"] == "error" and frame["data"]["code"] == "unavailable", frame
        assert time.monotonic() < deadline, "no recovery"
        time.sleep(0.5)
    assert (frame["data"]["msgId"], frame["data"]["status"]) == (mid, "sent")
    assert b.expect("chat")["msgId"] == mid
    assert read_until(a, "ack")["status"] == "delivered"


def test_unavailable_when_the_friend_service_fails_with_friendship_required(tmp_path):
    with running_standin_system(tmp_path, standins=("message", "friend"),
                                ws={"Chat": {"RequireFriendship": True}}) as system:
        alice, bob = system.users("alice", "bob")
        friends(system, alice, bob)
        a = system.connect(alice)
        system.standins["friend"].fail()
        mid = new_msg_id()
        a.chat(bob.id, "can we?", msg_id=mid)
        a.expect_error("unavailable", mid, timeout=SLACK)
        system.standins["friend"].heal()
        deadline = time.monotonic() + SLACK
        while True:
            a.chat(bob.id, "can we?", msg_id=mid)
            frame = a.recv_frame(SLACK)
            if frame["type"] == "ack" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert frame["type"] == "ack" and frame["data"]["status"] == "sent", frame


# ---------------------------------------------------------------------------
# the probe: the batch endpoints are used again once the service has them

def test_the_batch_endpoints_are_used_again_when_they_appear(tmp_path):
    probe = 1.0
    with running_standin_system(tmp_path, standins=("message",),
                                ws={"OptionalEndpoints": {"ProbeInterval": probe}}) as system:
        alice, bob = system.users("alice", "bob")
        a, b = system.connect(alice), system.connect(bob)
        mid = new_msg_id()
        a.chat(bob.id, "before", msg_id=mid)
        a.expect_ack(mid, "sent")
        b.expect("chat")
        read_until(a, "ack")
        assert "has no POST /v1/messages/batch" in system.log_text()

        swap_in_shipped(system, "message")      # the team adds the batch endpoints
        time.sleep(probe + 0.2)
        for i in range(3):
            mid = new_msg_id()
            a.chat(bob.id, f"after #{i}", msg_id=mid)
            a.expect_ack(mid, "sent")
            assert b.expect("chat")["msgId"] == mid
            assert read_until(a, "ack")["status"] == "delivered"
        for endpoint in ("POST /v1/messages/batch", "POST /v1/messages/delivered/batch"):
            wait_until(lambda: f"answers {endpoint} again: using it" in system.log_text(),
                       timeout=SLACK, message=f"{endpoint} not used again")


# ---------------------------------------------------------------------------
# a cluster of two gateways in front of the stand-ins

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_standin_cluster(tmp_path_factory.mktemp("own-cluster"), nodes=2) as c:
        yield c


def test_cluster_chat_with_both_acks_and_backlog(cluster):
    alice, bob, carol = cluster.users("alice", "bob", "carol")
    cluster.befriend(alice, bob)
    a = cluster[1].connect(alice)
    b = cluster[2].connect(bob)
    assert b.connected["onlineFriends"] == [alice.id]
    assert read_until(a, "online")["userId"] == bob.id
    mid = new_msg_id()
    a.chat(bob.id, "across nodes", msg_id=mid)
    a.expect_ack(mid, "sent", skip=("pong", "online"))
    assert b.expect("chat")["msgId"] == mid
    delivered = read_until(a, "ack")
    assert (delivered["msgId"], delivered["status"]) == (mid, "delivered")

    later = new_msg_id()                     # carol is offline: her backlog, on node 2
    a.chat(carol.id, "for later", msg_id=later)
    a.expect_ack(later, "sent")
    c = cluster[2].connect(carol)
    assert [m["msgId"] for m in c.backlog] == [later]
    assert read_until(a, "ack")["msgId"] == later


def test_groups_are_beyond_section_6(healthy):
    """A Friend service without the group endpoints: a user is in no group; creating
    one answers the service's 404, a `groupchat` gets an error, never a lost chat."""
    system = healthy
    alice, bob = system.users("alice", "bob")
    a = system.connect(alice)
    a.assert_no_frame(0.5)                       # no group_unread
    r = system.api("POST", "/api/groups", alice, json={"name": "g", "memberIds": [bob.id]})
    assert (r.status_code, r.json()["code"]) == (404, "not_found"), r.text
    assert system.api("GET", "/api/groups", alice).json()["groups"] == []
    mid = new_msg_id()
    a.send("groupchat", {"groupId": 1, "msgId": mid, "content": "anyone?"})
    err = a.expect("error")
    assert (err["msgId"], err["code"]) == (mid, "forbidden"), err      # not a member


def test_sync_pages_come_from_history(healthy):
    """`sync` (docs/protocol.md) without /v1/messages/conversation: the pages are read
    from the section 6 history, in ascending seq, with hasMore, gap ranges exact."""
    system = healthy
    alice, bob = system.users("alice", "bob")
    system.seed_many(bob, alice, 7, prefix="b")
    ca = system.connect(alice, connected_timeout=20)
    ca.send("sync", {"requestId": "r1", "limit": 3,
                     "conversations": [{"peerId": bob.id, "afterSeq": 0}]})
    pages = [read_until(ca, "sync_messages", 10) for _ in range(3)]
    assert [([m["seq"] for m in p["messages"]], p["hasMore"]) for p in pages] == \
        [([1, 2, 3], True), ([4, 5, 6], True), ([7], False)]
    assert [m["content"] for m in pages[0]["messages"]] == ["b #0", "b #1", "b #2"]
    assert all(m["status"] in ("delivered", "read") for p in pages for m in p["messages"])
    done = read_until(ca, "sync_complete", 10)
    assert done["conversations"] == [{"peerId": bob.id, "lastSeq": 7, "hasMore": False}]
    ca.send("sync", {"requestId": "r2", "limit": 2,       # a gap: the client holds 1-2, 6-7
                     "conversations": [{"peerId": bob.id, "afterSeq": 2, "beforeSeq": 6}]})
    pages = [read_until(ca, "sync_messages", 10) for _ in range(2)]
    assert [([m["seq"] for m in p["messages"]], p["hasMore"]) for p in pages] == \
        [([3, 4], True), ([5], False)]
    assert read_until(ca, "sync_complete", 10)["conversations"][0]["lastSeq"] == 5
