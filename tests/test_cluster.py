"""PROTOCOL.md section 8: cluster mode, against real processes.

One cluster per module: the Message, Friend and Auth services as separate
processes on a fresh PostgreSQL database, a private redis-server on a free
port (so that tests may kill and restart it), and three gateway nodes
(``wsserver.py -f node-N.yaml``) with HeartbeatInterval 1 and NodeTTL 3.
Tests that stop a node or Redis leave the rest to the ``cluster`` fixture,
which brings everything back before the next test. A few tests start extra
nodes of their own (Redis down at start, another KeyPrefix, ReusePort).

Without redis-server or PostgreSQL the module is skipped, unless
SKYEIM_REQUIRE_SERVICES=1 (as in CI), which makes that a failure.
"""
from __future__ import annotations

import os
import secrets
import signal
import threading
import time

import pytest
import requests

from cluster_harness import ClusterSystem, Node, running_cluster
from harness import Client, NoFrame, User, close_open_clients, free_port, wait_until

HEARTBEAT = 1          # Cluster.HeartbeatInterval of every node here (s)
NODE_TTL = 3           # Cluster.NodeTTL (s)
REQUIRE_SERVICES = os.environ.get("SKYEIM_REQUIRE_SERVICES") == "1"
SLACK = 1.5            # s on top of protocol bounds, for a loaded test machine
KICK_WITHIN = 2.0      # PROTOCOL.md section 8: the older connection closes within 2 s


def _unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"SKYEIM_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(f"{reason}; the cluster tests need redis-server and PostgreSQL")


@pytest.fixture(scope="module")
def _cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("cluster"), "cluster", nodes=3,
                         heartbeat_interval=HEARTBEAT, node_ttl=NODE_TTL) as system:
        yield system


@pytest.fixture
def cluster(_cluster: ClusterSystem) -> ClusterSystem:
    """The module's cluster with Redis and all three nodes up and ready."""
    _cluster.ensure_running()
    return _cluster


# ---------------------------------------------------------------------------
# helpers

def read_until(client: Client, predicate, timeout: float, what: str) -> tuple[dict, list[dict]]:
    """Read frames until one matches ``predicate``: (that frame, the frames before it)."""
    deadline = time.monotonic() + timeout
    others: list[dict] = []
    while True:
        remaining = deadline - time.monotonic()
        try:
            frame = client.recv_frame(max(remaining, 0.001))
        except NoFrame:
            raise AssertionError(f"{client}: no {what} within {timeout:g}s "
                                 f"(frames meanwhile: {others[-8:]!r})") from None
        if predicate(frame):
            return frame, others
        others.append(frame)


def full_history(node: Node, user: User, peer: User) -> list[dict]:
    """The whole conversation through ``GET /api/messages`` on ``node``, newest first."""
    out: list[dict] = []
    params: dict = {"peerId": peer.id, "limit": 200}
    for _ in range(100):
        r = node.api("GET", "/api/messages", user, params=params)
        assert r.status_code == 200, f"{node} /api/messages: {r.status_code} {r.text}"
        body = r.json()
        out.extend(body["messages"])
        if not body["hasMore"] or not body["messages"]:
            return out
        params["beforeSeq"] = body["messages"][-1]["seq"]
    raise AssertionError("history paging did not end")


def drain(client: Client, quiet: float = 0.5, limit: float = 10.0) -> list[dict]:
    """Every frame until none has come for ``quiet`` seconds (at most ``limit`` in all)."""
    deadline = time.monotonic() + limit
    out: list[dict] = []
    while time.monotonic() < deadline:
        got = client.frames_for(min(quiet, max(deadline - time.monotonic(), 0.001)))
        if not got:
            break
        out.extend(got)
    return [f for f in out if f["type"] != "pong"]


def is_frame(type_: str, **fields):
    def match(frame: dict) -> bool:
        data = frame.get("data") or {}
        return frame["type"] == type_ and all(data.get(k) == v for k, v in fields.items())
    return match


def local_users_total(cluster: ClusterSystem) -> int:
    return int(sum(node.metric("skyeim_users_online") for node in cluster.nodes))


def wait_quiet(cluster: ClusterSystem) -> None:
    """Wait (bounded) until no user is connected anywhere: earlier tests' clients are gone."""
    wait_until(lambda: local_users_total(cluster) == 0, timeout=10, interval=0.1,
               message="users of earlier tests are still online")


def wait_status(nodes, status: int, timeout: float, path: str = "/readyz") -> None:
    wait_until(lambda: all(n.status(path) == status for n in nodes), timeout=timeout,
               interval=0.1, message=f"{path} of {nodes} not all {status} within {timeout:g}s: "
                                     f"{[n.status(path) for n in nodes]}")


def fresh_status(url: str) -> int | str:
    """GET on a new TCP connection (behind a shared port, any node may answer)."""
    try:
        return requests.get(url, timeout=2, headers={"Connection": "close"}).status_code
    except requests.RequestException as e:
        return type(e).__name__


def chat_both_acks(sender: Client, recipient: Client, to: User, content: str,
                   timeout: float = 5.0) -> tuple[dict, dict, dict]:
    """One live chat: the sender's `sent`, the recipient's `chat`, the sender's `delivered`."""
    mid = sender.chat(to, content)
    sent = sender.expect_ack(mid, "sent", timeout)
    chat = recipient.expect("chat", timeout)
    assert chat["msgId"] == mid and chat["content"] == content, chat
    assert chat["fromUserId"] == sender.user_id and chat["toUserId"] == to.id, chat
    assert chat["seq"] == sent["seq"], (chat, sent)
    delivered = sender.expect_ack(mid, "delivered", timeout)
    assert delivered["seq"] == sent["seq"], delivered
    return sent, chat, delivered


# ---------------------------------------------------------------------------
# chat and acks across nodes

@pytest.mark.timeout(60)
def test_cross_node_chat_gets_sent_chat_and_delivered(cluster):
    alice, bob = cluster.users("xc_a", "xc_b")
    ca = cluster[1].connect(alice)
    cb = cluster[2].connect(bob)
    sent, chat, delivered = chat_both_acks(ca, cb, bob, "hello from node 1")
    assert sent["seq"] == 1 and delivered["timestamp"] >= sent["timestamp"]
    sent2, _, _ = chat_both_acks(cb, ca, alice, "and back from node 2")
    assert sent2["seq"] == 2
    ca.assert_no_frame(0.3)
    cb.assert_no_frame(0.1)


@pytest.mark.timeout(60)
def test_offline_recipient_connecting_on_a_third_node_gets_backlog_and_sender_delivered(cluster):
    alice, bob = cluster.users("xo_a", "xo_b")
    ca = cluster[1].connect(alice)
    mids = [ca.chat(bob, f"while you were away {i}") for i in range(3)]
    for mid in mids:
        ca.expect_ack(mid, "sent")
    ca.assert_no_frame(0.3)                       # not delivered: bob is nowhere

    cb = cluster[3].connect(bob)
    assert [m["msgId"] for m in cb.backlog] == mids
    assert cb.connected["unreadPushed"] == 3
    acks = ca.collect("ack", 3, timeout=5)
    assert all(a["status"] == "delivered" for a in acks), acks
    assert sorted(a["msgId"] for a in acks) == sorted(mids)

    # a later connect (on yet another node) pushes them again, unread, but no second `delivered`
    cb.close()
    cb2 = cluster[2].connect(bob)
    assert [m["msgId"] for m in cb2.backlog] == mids
    ca.assert_no_frame(0.7)


@pytest.mark.timeout(60)
def test_read_receipts_cross_nodes(cluster):
    alice, bob = cluster.users("xr_a", "xr_b")
    ca = cluster[1].connect(alice)
    cb = cluster[2].connect(bob)
    m1 = chat_both_acks(ca, cb, bob, "one")[0]["msgId"]
    m2 = chat_both_acks(ca, cb, bob, "two")[0]["msgId"]
    cb.read(alice, [m1])
    receipt = ca.expect("read")
    assert receipt["peerId"] == bob.id and receipt["msgIds"] == [m1]
    assert isinstance(receipt["timestamp"], int)
    cb.read(alice)                                # everything unread from alice
    assert ca.expect("read")["msgIds"] == [m2]
    cb.assert_no_frame(0.3)                       # the reader gets nothing back
    # read messages are not pushed again, on any node
    cb.close()
    assert cluster[3].connect(bob).backlog == []


# ---------------------------------------------------------------------------
# presence across nodes

@pytest.mark.timeout(60)
def test_presence_online_and_offline_across_nodes(cluster):
    alice, bob = cluster.users("xp_a", "xp_b")
    cluster.befriend(alice, bob)
    ca = cluster[1].connect(alice)
    cb = cluster[2].connect(bob)
    assert cb.connected["onlineFriends"] == [alice.id]
    assert ca.expect("online")["userId"] == bob.id
    cb.close()
    assert ca.expect("offline")["userId"] == bob.id
    ca.assert_no_frame(0.5)
    cb = cluster[3].connect(bob)
    assert ca.expect("online")["userId"] == bob.id
    cb.assert_no_frame(0.3)                       # alice was online already: nothing for bob


@pytest.mark.timeout(60)
def test_online_count_is_cluster_wide(cluster):
    wait_quiet(cluster)
    alice, bob, carol, dave, erin = cluster.users("xn_a", "xn_b", "xn_c", "xn_d", "xn_e")
    cluster.befriend(alice, carol)
    ca = cluster[1].connect(alice)
    assert ca.connected["onlineCount"] == 1
    cb = cluster[2].connect(bob)
    assert cb.connected["onlineCount"] == 2
    cc = cluster[3].connect(carol)
    assert cc.connected["onlineCount"] == 3
    assert ca.expect("online")["userId"] == carol.id
    cd = cluster[1].connect(dave)
    assert cd.connected["onlineCount"] == 4
    cc.close()
    assert ca.expect("offline")["userId"] == carol.id      # carol's node has forgotten her
    ce = cluster[2].connect(erin)
    assert ce.connected["onlineCount"] == 4        # alice, bob, dave, erin
    cb.close()
    ce.close()
    wait_until(lambda: local_users_total(cluster) == 2, timeout=5)
    cc = cluster[3].connect(carol)
    assert ca.expect("online")["userId"] == carol.id
    assert cc.connected["onlineCount"] == 3        # alice, dave, carol
    del cd


@pytest.mark.timeout(60)
def test_online_friends_and_api_friends_flag_see_every_node(cluster):
    alice, bob, carol, dave = cluster.users("xf_a", "xf_b", "xf_c", "xf_d")
    for friend in (bob, carol, dave):
        cluster.befriend(alice, friend)
    cluster[2].connect(bob)
    cluster[3].connect(carol)
    # dave stays offline
    for node in cluster.nodes:
        assert node.friends_online(alice) == {bob.id: True, carol.id: True, dave.id: False}, node
    ca = cluster[1].connect(alice)
    assert sorted(ca.connected["onlineFriends"]) == sorted([bob.id, carol.id])
    for node in cluster.nodes:
        assert node.friends_online(bob) == {alice.id: True}, node


# ---------------------------------------------------------------------------
# MultiLogin kick across nodes

@pytest.mark.timeout(60)
def test_multilogin_kick_across_nodes(cluster):
    alice, bob = cluster.users("xk_a", "xk_b")
    cluster.befriend(alice, bob)
    cb = cluster[3].connect(bob)
    ca1 = cluster[1].connect(alice)
    assert cb.expect("online")["userId"] == alice.id

    ca2 = cluster[2].connect(alice)
    live_at = time.monotonic()
    assert ca2.connected["onlineFriends"] == [bob.id]
    assert ca1.expect_close(timeout=KICK_WITHIN + SLACK) == 4001
    assert ca1.closed_at - live_at <= KICK_WITHIN, \
        f"the older connection closed {ca1.closed_at - live_at:.2f}s after the new `connected`"
    cb.assert_no_frame(1.0)                       # neither offline nor online for a replacement

    # the new connection is the one that gets alice's frames, and her real exit is announced
    chat_both_acks(cb, ca2, alice, "to the new login")
    ca2.close()
    assert cb.expect("offline")["userId"] == alice.id
    cb.assert_no_frame(0.5)


# ---------------------------------------------------------------------------
# nodes that die or stop

@pytest.mark.timeout(90)
def test_killed_node_is_forgotten_and_its_user_gets_the_backlog_elsewhere(cluster):
    alice, bob = cluster.users("xd_a", "xd_b")
    cluster.befriend(alice, bob)
    ca = cluster[1].connect(alice)
    cb = cluster[3].connect(bob)
    assert ca.expect("online")["userId"] == bob.id

    cluster[3].kill()                             # SIGKILL: no goodbye
    killed_at = time.monotonic()
    m1 = ca.chat(bob, "sent while node 3 is dead but not yet forgotten")
    ca.expect_ack(m1, "sent")
    bound = NODE_TTL + HEARTBEAT + SLACK
    offline, before = read_until(ca, is_frame("offline", userId=bob.id), bound + 2, "offline")
    elapsed = time.monotonic() - killed_at
    assert not [f for f in before if f["type"] != "pong"], before   # in particular no `delivered`
    assert elapsed <= bound, f"offline came {elapsed:.1f}s after the kill (bound {bound}s)"
    m2 = ca.chat(bob, "sent after bob went offline")
    ca.expect_ack(m2, "sent")

    cb2 = cluster[2].connect(bob)
    assert [m["msgId"] for m in cb2.backlog] == [m1, m2]
    assert ca.expect("online")["userId"] == bob.id
    acks = ca.collect("ack", 2, timeout=5)
    assert [(a["msgId"], a["status"]) for a in acks] == [(m1, "delivered"), (m2, "delivered")]
    chat_both_acks(ca, cb2, bob, "live again")
    del cb


@pytest.mark.timeout(60)
def test_sigterm_node_says_goodbye_at_once(cluster):
    alice, bob = cluster.users("xg_a", "xg_b")
    cluster.befriend(alice, bob)
    ca = cluster[1].connect(alice)
    cb = cluster[3].connect(bob)
    assert ca.expect("online")["userId"] == bob.id

    # bob's client answers the close frame at once (as a live client does), so that the
    # node's polite wait for a silent client (WebSocket.CloseTimeout) is not measured
    codes: list = []
    reader = threading.Thread(target=lambda: codes.append(cb.expect_close(timeout=5)), daemon=True)
    reader.start()
    stopped_at = time.monotonic()
    cluster[3].proc.send_signal(signal.SIGTERM)
    try:
        assert ca.expect("offline", timeout=NODE_TTL)["userId"] == bob.id
        elapsed = time.monotonic() - stopped_at
        assert elapsed < NODE_TTL / 3, f"offline came {elapsed:.2f}s after SIGTERM: no goodbye?"
        reader.join(6)
        assert codes == [1001]
    finally:
        exit_code = cluster[3].terminate()
    assert exit_code == 0
    r = cluster.redis_server.client()
    assert not r.exists(f"{cluster.key_prefix}node:node-3")
    assert "node-3" not in r.smembers(f"{cluster.key_prefix}nodes")
    # bob is offline everywhere, so a chat to him waits for his next connect
    mid = ca.chat(bob, "after the goodbye")
    ca.expect_ack(mid, "sent")
    ca.assert_no_frame(0.5)
    cb2 = cluster[2].connect(bob)
    assert [m["msgId"] for m in cb2.backlog] == [mid]


@pytest.mark.timeout(60)
def test_node_killed_and_restarted_with_the_same_node_id_drops_its_stale_users(cluster):
    """A node that comes back (e.g. under supervisord) before the others noticed it
    died must not keep its former users online forever."""
    alice, bob = cluster.users("xs_a", "xs_b")
    cluster.befriend(alice, bob)
    ca = cluster[1].connect(alice)
    cluster[3].connect(bob)
    assert ca.expect("online")["userId"] == bob.id
    cluster[3].kill()
    cluster[3].start(wait=None)                   # same NodeId, at once
    assert ca.expect("offline", timeout=NODE_TTL + HEARTBEAT + 10)["userId"] == bob.id
    cluster[3].wait_up()
    for node in cluster.nodes:
        assert node.friends_online(alice) == {bob.id: False}, node
    cb = cluster[3].connect(bob)
    assert ca.expect("online")["userId"] == bob.id
    chat_both_acks(ca, cb, bob, "on the restarted node")


@pytest.mark.timeout(90)
def test_node_that_stalled_past_node_ttl_comes_back_by_itself(cluster):
    """A node frozen longer than NodeTTL is given up (its users show offline); when
    it resumes it re-registers its users, friends see them online again and chats
    reach them live -- with no restart."""
    alice, bob = cluster.users("stall_a", "stall_b")
    cluster.befriend(alice, bob)
    ca = cluster[1].connect(alice)
    cb = cluster[2].connect(bob)
    assert ca.expect("online")["userId"] == bob.id
    node = cluster[2]
    node.proc.send_signal(signal.SIGSTOP)
    try:
        assert ca.expect("offline", timeout=NODE_TTL + HEARTBEAT + 10)["userId"] == bob.id
    finally:
        node.proc.send_signal(signal.SIGCONT)
    assert ca.expect("online", timeout=HEARTBEAT + 10)["userId"] == bob.id
    for n in cluster.nodes:
        assert n.friends_online(alice) == {bob.id: True}, n
    chat_both_acks(ca, cb, bob, "after the stall")


# ---------------------------------------------------------------------------
# Redis failures

class ChatLoop(threading.Thread):
    """Sends chats from one client, one at a time, each waiting for its `sent` ack."""

    def __init__(self, client: Client, to: User, interval: float = 0.03, ack_timeout: float = 8.0):
        super().__init__(daemon=True)
        self.client, self.to, self.interval, self.ack_timeout = client, to, interval, ack_timeout
        self.acked: list[str] = []
        self.delivered: set[str] = set()
        self.problems: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set() and i < 2000:
            mid = self.client.chat(self.to, f"loop #{i}", msg_id=f"loop-{i:04d}-{secrets.token_hex(4)}")
            try:
                frame, others = read_until(self.client, is_frame("ack", msgId=mid, status="sent"),
                                           self.ack_timeout, f"`sent` for {mid}")
            except AssertionError as e:
                self.problems.append(str(e))
                return
            for f in others:
                if f["type"] == "ack" and f["data"]["status"] == "delivered":
                    self.delivered.add(f["data"]["msgId"])
                elif f["type"] != "pong":
                    self.problems.append(f"unexpected frame {f!r}")
            self.acked.append(mid)
            i += 1
            time.sleep(self.interval)

    def wait_acked(self, count: int, timeout: float = 15.0) -> None:
        wait_until(lambda: len(self.acked) >= count or self.problems or not self.is_alive(),
                   timeout=timeout, message=f"only {len(self.acked)} chats acked, wanted {count}")
        assert not self.problems, self.problems[:3]
        assert len(self.acked) >= count, f"the loop stopped at {len(self.acked)}"


@pytest.mark.timeout(120)
def test_redis_restart_mid_traffic_loses_nothing_and_heals(cluster):
    wait_quiet(cluster)
    alice, bob, carol, dave, erin = cluster.users("xq_a", "xq_b", "xq_c", "xq_d", "xq_e")
    cluster.befriend(alice, erin)
    ca = cluster[1].connect(alice)
    cb = cluster[2].connect(bob)
    cc = cluster[1].connect(carol)
    cd = cluster[1].connect(dave)
    loop = ChatLoop(ca, bob)
    loop.start()
    try:
        loop.wait_acked(15)
        cluster.redis_server.kill()
        # /readyz says so on every node
        wait_status(cluster.nodes, 503, timeout=5)
        acked_at_outage = len(loop.acked)
        # local delivery on one node keeps working
        chat_both_acks(cc, cd, dave, "local while Redis is down")
        chat_both_acks(cd, cc, carol, "and back")
        loop.wait_acked(acked_at_outage + 15)     # chats keep being stored and acked `sent`
        assert all(n.status() == 503 for n in cluster.nodes)
        cluster.redis_server.start()              # empty, on the same port
        wait_status(cluster.nodes, 200, timeout=15)
        loop.wait_acked(len(loop.acked) + 15)
    finally:
        loop.stop.set()
        loop.join(15)
    assert not loop.is_alive()
    assert not loop.problems, loop.problems[:3]
    acked = loop.acked
    assert len(acked) >= 45

    # nothing acked `sent` is lost: the history has every one, in order, without gaps
    history = full_history(cluster[3], alice, bob)
    by_id = {m["msgId"]: m for m in history}
    missing = [m for m in acked if m not in by_id]
    assert not missing, f"{len(missing)} of {len(acked)} acked chats lost: {missing[:5]}"
    seqs = [by_id[m]["seq"] for m in acked]
    assert seqs == list(range(1, len(acked) + 1)), seqs

    # bob got some live; all of them, unread, come as backlog at his next connect (no duplicates)
    live = [f["data"]["msgId"] for f in cb.frames_for(1.0) if f["type"] == "chat"]
    assert len(live) == len(set(live)) and set(live) <= set(acked)
    cb.close()
    cb = cluster[3].connect(bob, connected_timeout=20)
    assert [m["msgId"] for m in cb.backlog] == acked

    # ... and that push records every one as delivered (the `delivered` acks go to alice,
    # except those that a node tried to route while Redis was down)
    wait_until(lambda: all(m["status"] == "delivered" for m in full_history(cluster[2], alice, bob)),
               timeout=10, interval=0.2, message="not every chat is recorded as delivered")
    extra = drain(ca)
    assert all(f["type"] == "ack" and f["data"]["status"] == "delivered" for f in extra), extra[:5]

    # healed, with no node restarted: live cross-node chat, presence and onlineCount
    chat_both_acks(ca, cb, bob, "after Redis came back")
    ce = cluster[2].connect(erin)
    assert ce.connected["onlineFriends"] == [alice.id]
    assert ce.connected["onlineCount"] == 5       # alice, carol, dave, bob, erin
    assert ca.expect("online")["userId"] == erin.id
    probe = cluster[3].connect(cluster.minted_user())
    assert probe.connected["onlineCount"] == 6
    ce.close()
    assert ca.expect("offline")["userId"] == erin.id


@pytest.mark.timeout(90)
def test_redis_frozen_then_resumed_heals_and_forgets_who_left_meanwhile(cluster):
    """Redis hangs (SIGSTOP: connections stay open, nothing answers) rather than dies."""
    wait_quiet(cluster)
    alice, bob, erin = cluster.users("xh_a", "xh_b", "xh_e")
    cluster.befriend(alice, bob)
    ca = cluster[1].connect(alice)
    cb = cluster[2].connect(bob)
    assert ca.expect("online")["userId"] == bob.id
    cluster.redis_server.freeze()
    try:
        wait_status(cluster.nodes, 503, timeout=HEARTBEAT + 2 * 2 + SLACK + 2)
        cb.close()                                # bob leaves while node 2 cannot tell Redis
        wait_until(lambda: cluster[2].metric("skyeim_users_online") == 0, timeout=10)
    finally:
        cluster.redis_server.thaw()
    wait_status(cluster.nodes, 200, timeout=15)
    # bob's registration from before the outage is dropped: he is offline on every node
    for node in cluster.nodes:
        assert node.friends_online(alice) == {bob.id: False}, node
    ce = cluster[3].connect(erin)
    assert ce.connected["onlineCount"] == 2       # alice and erin
    # (alice's `offline` for bob is best effort: node 2 publishes it when it is back, and
    # node 1 may not have resubscribed yet; she must get nothing else meanwhile)
    tolerate = ("pong", "offline")                # (bob is alice's only friend)
    mid = ca.chat(erin, "after the freeze")
    sent = ca.expect_ack(mid, "sent", skip=tolerate)
    assert ce.expect("chat")["msgId"] == mid
    assert ca.expect_ack(mid, "delivered", skip=tolerate)["seq"] == sent["seq"]
    cb = cluster[3].connect(bob)
    assert cb.connected["onlineFriends"] == [alice.id]
    assert ca.expect("online", skip=tolerate)["userId"] == bob.id


@pytest.mark.timeout(90)
def test_node_started_while_redis_is_down_serves_locally_then_joins(cluster):
    wait_quiet(cluster)
    alice, bob, carol, dave = cluster.users("xz_a", "xz_b", "xz_c", "xz_d")
    cluster.befriend(alice, dave)
    cluster.redis_server.kill()
    wait_status(cluster.nodes, 503, timeout=5)
    node4 = cluster.add_node("4", members=False)
    try:
        node4.start(wait="healthy")
        assert node4.status("/readyz") == 503
        ca = node4.connect(alice)
        cb = node4.connect(bob)
        assert cb.connected["onlineCount"] == 2
        chat_both_acks(ca, cb, bob, "on node 4, Redis down")

        cluster.redis_server.start()
        wait_status(cluster.nodes + [node4], 200, timeout=15)
        # node 4 has joined: its users are reachable from the others, and see them
        cc = cluster[1].connect(carol)
        chat_both_acks(cc, ca, alice, "node 1 to node 4")
        chat_both_acks(ca, cc, carol, "node 4 to node 1")
        cd = cluster[2].connect(dave)
        assert cd.connected["onlineFriends"] == [alice.id]
        assert ca.expect("online")["userId"] == dave.id
        assert cd.connected["onlineCount"] == 4
        ca.close()
        assert cd.expect("offline")["userId"] == alice.id
    finally:
        close_open_clients()
        node4.terminate()


@pytest.mark.timeout(60)
def test_clusters_with_different_key_prefixes_do_not_see_each_other(cluster):
    alice, bob = cluster.users("xx_a", "xx_b")
    cluster.befriend(alice, bob)
    other = cluster.add_node("b1", members=False,
                             KeyPrefix=f"skyeim-other-{secrets.token_hex(3)}:")
    try:
        other.start()
        ca = cluster[1].connect(alice)
        cb = other.connect(bob)
        assert cb.connected["onlineFriends"] == []
        assert cb.connected["onlineCount"] == 1
        ca.assert_no_frame(0.5)                   # no `online` across clusters
        # the same user on both clusters: no MultiLogin kick across them
        ca_other = other.connect(alice)
        assert ca_other.connected["onlineFriends"] == [bob.id]
        assert cb.expect("online")["userId"] == alice.id
        ca.assert_open()
        assert other.friends_online(bob) == {alice.id: True}
        cb.close()
        assert ca_other.expect("offline")["userId"] == bob.id
        ca.assert_no_frame(0.5)
    finally:
        close_open_clients()
        other.terminate()


# ---------------------------------------------------------------------------
# SO_REUSEPORT

@pytest.mark.timeout(90)
def test_reuse_port_nodes_share_one_port(cluster):
    port = free_port()
    prefix = f"skyeim-reuse-{secrets.token_hex(3)}:"
    nodes: list[Node] = [cluster.add_node(f"r{i}", port=port, members=False, KeyPrefix=prefix,
                                          ReusePort=True) for i in (1, 2)]
    try:
        for node in nodes:
            node.start(wait=None)
        for node in nodes:
            wait_until(lambda: "listening on" in node.log_text() or not node.running,
                       timeout=30, interval=0.05, message=f"{node} did not start")
            assert node.running, f"{node} exited:\n{node.log_text()[-2000:]}"
        # both behind the port are ready (each request is a new TCP connection)
        wait_until(lambda: all(fresh_status(nodes[0].url + "/readyz") == 200 for _ in range(10)),
                   timeout=15, interval=0.1, message="the ReusePort nodes are not both ready")

        users = [cluster.minted_user("rp") for _ in range(20)]
        clients = {u.id: nodes[0].connect(u) for u in users}
        where = {node.node_id: set(node.connected_users()) for node in nodes}
        assert where["r1"] and where["r2"], f"the kernel gave every connection to one node: {where}"
        assert where["r1"] | where["r2"] == set(clients) and not where["r1"] & where["r2"], where

        u1 = next(u for u in users if u.id in where["r1"])
        u2 = next(u for u in users if u.id in where["r2"])
        chat_both_acks(clients[u1.id], clients[u2.id], u2, "r1 to r2")
        chat_both_acks(clients[u2.id], clients[u1.id], u1, "r2 to r1")
        same = next(u for u in users if u.id in where["r1"] and u.id != u1.id)
        chat_both_acks(clients[u1.id], clients[same.id], same, "within r1")
        last = nodes[0].connect(cluster.minted_user("rp"))
        assert last.connected["onlineCount"] == 21
    finally:
        close_open_clients()
        for node in nodes:
            node.terminate()
