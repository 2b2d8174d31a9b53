"""Faults in the backends, injected into real processes: the Message service
killed (SIGKILL) or stalled (SIGSTOP), the Friend service down, the Message
service's SQLite database locked by another process or on a full disk.

What must hold (PROTOCOL.md section 3, "Sending"): a send that cannot be
stored is answered `unavailable` with its msgId -- within the RPC timeout,
and at once while the endpoint's circuit breaker is open -- and the
connection stays open; nothing acked `sent` is ever lost; once the fault
clears, sending works again without restarting the gateway (a retry with the
same msgId is acked, `duplicate` when the stalled service stored it after
all). Chat does not need the Friend service; presence degrades and recovers.

Already covered elsewhere, not repeated here: Message service down ->
`unavailable` then recovery and /readyz 503 (test_lifecycle.py::
test_message_service_down_readyz_503_and_unavailable_then_recovers), Friend
service down -> /readyz 503 (test_lifecycle.py::
test_friend_service_down_makes_readyz_503), SQLite directory unusable -> 503
(test_message_service.py::test_sqlite_unavailable_answers_503_then_recovers).
"""
from __future__ import annotations

import signal
import socket
import statistics
import time

import pytest

from harness import Client, System, new_msg_id, wait_until
from load_harness import (ChatPeer, assert_all_stored, fill_disk, process_figures, scrape, series,
                          small_disk, sqlite_write_lock, stored_ids)

RPC_TIMEOUT = 1.0           # s, MessageRpc/FriendRpc Timeout in these tests
BREAKER_FAILURES = 3
SMALL_DISK_BYTES = 4 * 2**20  # the tmpfs the disk-full test fills
MAX_COOLDOWN = 4.0          # s, BreakerMaxCooldownMs
FAST = 0.25                 # s: an answer this quick did not wait for the backend

FAULT_WS = {
    "MessageRpc": {"Timeout": int(RPC_TIMEOUT * 1000), "BreakerFailures": BREAKER_FAILURES,
                   "BreakerCooldownMs": 500, "BreakerMaxCooldownMs": int(MAX_COOLDOWN * 1000)},
    "FriendRpc": {"Timeout": int(RPC_TIMEOUT * 1000), "BreakerFailures": BREAKER_FAILURES,
                  "BreakerCooldownMs": 500, "BreakerMaxCooldownMs": int(MAX_COOLDOWN * 1000)},
    # the stream tests pipeline chats faster than the default per-connection rate
    "WebSocket": {"RateLimit": {"Rate": 1000, "Burst": 1000}},
}


@pytest.fixture
def split(system_factory) -> System:
    """Gateway, Message, Friend and Auth services as four processes."""
    return system_factory(standalone=False, ws=FAULT_WS)


def send_until_sent(client: Client, to, content: str, msg_id: str | None = None,
                    timeout: float = 10.0) -> dict:
    """Send one chat and read up to its ack `sent` (other acks and chats are skipped)."""
    mid = client.chat(to, content, msg_id=msg_id or new_msg_id())
    deadline = time.monotonic() + timeout
    while True:
        frame = client.recv_frame(max(deadline - time.monotonic(), 0.001))
        data = frame.get("data") or {}
        if frame["type"] == "error":
            raise AssertionError(f"{client}: error instead of ack: {data!r}")
        if frame["type"] == "ack" and data.get("msgId") == mid and data.get("status") == "sent":
            return data


def send_expect_unavailable(client: Client, to, content: str) -> tuple[str, float]:
    """Send one chat; it must be answered `unavailable`; (msgId, seconds it took)."""
    mid = new_msg_id()
    t0 = time.monotonic()
    client.chat(to, content, msg_id=mid)
    client.expect_error("unavailable", mid, timeout=RPC_TIMEOUT + 10, skip=("pong", "ack", "chat"))
    return mid, time.monotonic() - t0


def send_answered(client: Client, to, content: str, timeout: float = RPC_TIMEOUT + 10
                  ) -> tuple[str, str]:
    """Send one chat; (msgId, "sent" or "unavailable"), whichever answers it."""
    mid = client.chat(to, content, msg_id=new_msg_id())
    deadline = time.monotonic() + timeout
    while True:                 # bounded by the deadline: recv_frame raises NoFrame
        frame = client.recv_frame(max(deadline - time.monotonic(), 0.001))
        data = frame.get("data") or {}
        if data.get("msgId") != mid:
            continue
        if frame["type"] == "error":
            assert data.get("code") == "unavailable", f"{client}: {data!r}"
            return mid, "unavailable"
        if frame["type"] == "ack" and data.get("status") == "sent":
            return mid, "sent"


def retry_until_sent(client: Client, to, msg_id: str, within: float) -> tuple[dict, float]:
    """Retry one msgId (the client's part of at-least-once) until it is acked
    `sent`; (the ack, seconds until then)."""
    t0 = time.monotonic()
    deadline = t0 + within
    while True:
        client.chat(to, "retried", msg_id=msg_id)
        while True:
            frame = client.recv_frame(timeout=RPC_TIMEOUT + 10)
            data = frame.get("data") or {}
            if data.get("msgId") != msg_id:
                continue
            if frame["type"] == "ack" and data["status"] == "sent":
                return data, time.monotonic() - t0
            if frame["type"] == "error":
                assert data["code"] == "unavailable", data
                break
        assert time.monotonic() < deadline, f"{msg_id} still unavailable after {within:g}s"
        time.sleep(0.2)


def breaker_state(s: System, service: str) -> float:
    states = series(scrape(s.metrics_url), f'skyeim_backend_breaker_state{{endpoint="http://127.0.0.1:'
                                   f'{s.ports[service]}",service="{service}"}}')
    return max(states.values(), default=0.0)


def breaker_opens(s: System, service: str) -> float:
    opens = series(scrape(s.metrics_url), "skyeim_backend_breaker_opens_total")
    return sum(v for k, v in opens.items() if f'service="{service}"' in k)


# ---------------------------------------------------------------------------
# the Message service killed

@pytest.mark.timeout(120)
def test_message_service_killed_sends_fail_fast_and_recover_without_gateway_restart(split):
    s = split
    alice, bob = s.minted_user("kill_a"), s.minted_user("kill_b")
    ca, cb = s.connect(alice), s.connect(bob)
    acked = [send_until_sent(ca, bob, f"before {i}")["msgId"] for i in range(10)]
    gateway_pid = s.procs["gateway"].pid

    s.stop_process("message", signal.SIGKILL)
    failed, latencies = [], []
    for i in range(10):
        mid, took = send_expect_unavailable(ca, bob, f"while dead {i}")
        failed.append(mid)
        latencies.append(took)
    print(f"\nunavailable after SIGKILL: {[round(x, 3) for x in latencies]} s")
    assert max(latencies) < RPC_TIMEOUT + 1.5      # a refused connection is not a timeout
    assert breaker_state(s, "message") in (1, 2)    # open (or trying again)
    assert breaker_opens(s, "message") >= 1
    ca.assert_open()

    s.start_service("message")
    ack, took = retry_until_sent(ca, bob, failed[0], within=MAX_COOLDOWN + 10)
    print(f"sending works again {took:.2f}s after the service answered /healthz")
    assert ack.get("duplicate") in (None, False)    # a dead service stored nothing
    for mid in failed[1:]:
        retry_until_sent(ca, bob, mid, within=10)
    assert s.procs["gateway"].pid == gateway_pid and s.procs["gateway"].poll() is None
    assert breaker_state(s, "message") == 0
    stored = stored_ids(s, alice, bob)
    assert set(acked) | set(failed) <= stored
    # bob, online all along, got each message once it was stored
    received: set[str] = set()
    deadline = time.monotonic() + 10
    while not set(acked) | set(failed) <= received and time.monotonic() < deadline:
        frame = cb.recv_frame(timeout=max(deadline - time.monotonic(), 0.001))
        if frame["type"] == "chat":
            received.add(frame["data"]["msgId"])
    assert set(acked) | set(failed) <= received


# ---------------------------------------------------------------------------
# the Message service stalled

@pytest.mark.timeout(180)
def test_message_service_stalled_answers_within_timeout_then_at_once(split):
    s = split
    alice, bob = s.minted_user("stall_a"), s.minted_user("stall_b")
    ca = s.connect(alice)
    streams = [(s.connect(u := s.minted_user(f"stream{i}")), u) for i in range(20)]
    acked = {alice.id: [send_until_sent(ca, bob, "before")["msgId"]]}
    for c, u in streams:
        acked[u.id] = [send_until_sent(c, bob, "before")["msgId"]]
    base = process_figures(s.metrics_url)

    s.procs["message"].send_signal(signal.SIGSTOP)
    try:
        # one client, one send at a time: the first answers wait for the RPC timeout,
        # then the breaker opens and the answers come at once
        latencies, failed = [], {alice.id: [], **{u.id: [] for _, u in streams}}
        for i in range(BREAKER_FAILURES + 20):
            mid, took = send_expect_unavailable(ca, bob, f"stalled {i}")
            failed[alice.id].append(mid)
            latencies.append(took)
        print(f"\nunavailable while stalled (s): {[round(x, 3) for x in latencies]}")
        assert RPC_TIMEOUT * 0.8 <= latencies[0] <= RPC_TIMEOUT + 1.5, latencies[0]
        after_open = latencies[BREAKER_FAILURES:]
        # a trial call (one per cool-off) waits for the timeout; all others fail at once
        assert statistics.median(after_open) < FAST, after_open
        assert sum(1 for x in after_open if x >= FAST) <= 3, after_open

        # a stream of sends from 20 connections, 10 each, pipelined: with the breaker
        # open they are all answered in about one timeout, not 10 timeouts per connection
        t0 = time.monotonic()
        for c, u in streams:
            for i in range(10):
                failed[u.id].append(c.chat(bob, f"stream {i}"))
        peak = process_figures(s.metrics_url)
        for c, u in streams:
            for mid in failed[u.id]:
                c.expect_error("unavailable", mid, timeout=RPC_TIMEOUT + 10,
                               skip=("pong", "ack", "chat"))
        stream_took = time.monotonic() - t0
        after = process_figures(s.metrics_url)
        print(f"200 stream sends answered unavailable in {stream_took:.2f}s; "
              f"greenlets {base['skyeim_greenlets']:.0f} -> {peak['skyeim_greenlets']:.0f} -> "
              f"{after['skyeim_greenlets']:.0f}; fds {base['process_open_fds']:.0f} -> "
              f"{peak['process_open_fds']:.0f} -> {after['process_open_fds']:.0f}")
        assert stream_took < 10 * RPC_TIMEOUT / 2, stream_took
        for figures in (peak, after):
            assert figures["skyeim_greenlets"] <= base["skyeim_greenlets"] + 20, (base, figures)
            assert figures["process_open_fds"] <= base["process_open_fds"] + 20, (base, figures)
        assert breaker_state(s, "message") in (1, 2)
        ca.assert_open()
    finally:
        s.procs["message"].send_signal(signal.SIGCONT)

    # the service wakes up: sending works again, and every refused msgId can be
    # retried; the stalled service may have stored some of them after all, and
    # then the retry is acked as a duplicate (never stored twice)
    ack, took = retry_until_sent(ca, bob, failed[alice.id][0], within=MAX_COOLDOWN + 10)
    print(f"sending works again {took:.2f}s after SIGCONT")
    clients = {alice.id: ca, **{u.id: c for c, u in streams}}
    for uid, mids in failed.items():
        for mid in mids:
            retry_until_sent(clients[uid], bob, mid, within=10)
    for uid, mids in failed.items():
        stored = stored_ids(s, uid, bob)
        assert set(acked[uid]) | set(mids) <= stored
    assert s.procs["gateway"].poll() is None


# ---------------------------------------------------------------------------
# the Friend service down

@pytest.mark.timeout(120)
def test_friend_service_down_chat_works_presence_skipped_then_back(split):
    s = split
    alice, bob = s.minted_user("fr_a"), s.minted_user("fr_b")
    r = s.service("friend", "POST", "/v1/friends", {"userId": alice.id, "friendId": bob.id})
    assert r.status_code == 200, r.text

    s.stop_process("friend", signal.SIGKILL)
    ca = s.connect(alice)
    assert ca.connected["onlineFriends"] == []
    cb = s.connect(bob)
    assert cb.connected["onlineFriends"] == []        # presence skipped, not an error
    mid = send_until_sent(ca, bob, "chat without the friend service")["msgId"]
    assert cb.expect("chat", skip=("pong", "online"))["msgId"] == mid
    ca.expect_ack(mid, "delivered", skip=("pong", "online"))
    ca.assert_no_frame(0.5)                           # no `online` for bob: skipped

    s.start_service("friend")
    # presence returns by itself (within the breaker's cool-off): bob reconnects until
    # alice is told and bob's own connect sees her; each attempt is a full offline/online
    # cycle (the presence repair may tell alice before bob's connect gets the friend list)
    deadline = time.monotonic() + MAX_COOLDOWN + 15
    while True:
        cb.close()
        cb = s.connect(bob)
        seen = [f for f in ca.frames_for(1.0) if f["type"] == "online"]
        if seen and cb.connected["onlineFriends"]:
            break
        assert time.monotonic() < deadline, "presence did not come back"
    assert seen[-1]["data"]["userId"] == bob.id
    assert cb.connected["onlineFriends"] == [alice.id]
    mid = send_until_sent(cb, alice, "and back")["msgId"]
    assert ca.expect("chat", skip=("pong", "offline", "online"))["msgId"] == mid


# ---------------------------------------------------------------------------
# the database locked, the disk full

@pytest.mark.timeout(180)
def test_database_locked_by_another_process_503_db_locked_then_writes_again(split):
    s = split
    alice, bob = s.minted_user("lock_a"), s.minted_user("lock_b")
    ca = s.connect(alice)
    acked = [send_until_sent(ca, bob, f"before {i}")["msgId"] for i in range(5)]

    with sqlite_write_lock(s.tmp / "message.db"):
        t0 = time.monotonic()
        r = s.service("message", "POST", "/v1/messages", {
            "msgId": new_msg_id(), "fromUserId": alice.id, "toUserId": bob.id, "content": "x"})
        took = time.monotonic() - t0
        print(f"\nMessage service answered {r.status_code} {r.json()} after {took:.2f}s")
        assert r.status_code == 503 and r.json()["code"] == "db_locked", r.text
        assert took < 10                             # its busy timeout (5 s) and some slack
        # every transaction of the service takes the write lock up front (BEGIN
        # IMMEDIATE, see skyeim/db.py), so reads wait for it too, with the same answer
        r = s.service("message", "GET", "/v1/messages/history",
                      params={"userId": alice.id, "peerId": bob.id})
        assert r.status_code == 503 and r.json()["code"] == "db_locked", r.text

        failed, latencies = [], []
        for i in range(BREAKER_FAILURES + 3):
            mid, took = send_expect_unavailable(ca, bob, f"while locked {i}")
            failed.append(mid)
            latencies.append(took)
        print(f"gateway unavailable while locked (s): {[round(x, 3) for x in latencies]}")
        assert latencies[0] <= RPC_TIMEOUT + 1.5
        assert min(latencies[BREAKER_FAILURES:]) < FAST
        ca.assert_open()

    for mid in failed:          # a write that waited out the lock may have been stored
        retry_until_sent(ca, bob, mid, within=MAX_COOLDOWN + 30)
    mid = send_until_sent(ca, bob, "after the lock", timeout=15)["msgId"]
    assert set(acked) | set(failed) | {mid} <= stored_ids(s, alice, bob)


@pytest.mark.timeout(180)
def test_disk_full_503_db_full_then_writes_again_once_space_is_freed(system_factory):
    """A real full file system (a small tmpfs, filled with a file until ENOSPC):
    SQLite says SQLITE_FULL, the service 503 db_full, the gateway `unavailable`."""
    with small_disk(f"{SMALL_DISK_BYTES // 2**20}m") as disk:
        s = system_factory(standalone=False, ws=FAULT_WS,
                           message={"DataSource": f"sqlite:///{disk / 'message.db'}"})
        alice, bob = s.minted_user("full_a"), s.minted_user("full_b")
        ca = s.connect(alice)
        acked = [send_until_sent(ca, bob, f"before {i}")["msgId"] for i in range(20)]
        stored_before = len(acked)

        filler = fill_disk(disk)
        try:
            # SQLite still commits into WAL space its file already has (the checkpointer
            # restarts the WAL; a failed transaction's frames are reused), so writes may
            # succeed until that slack is used up; the slack is at most the disk, which
            # bounds both loops below. What was stored must stay stored (checked below).
            content = "no room " * 2000
            for _ in range(SMALL_DISK_BYTES // len(content) + 10):
                mid = new_msg_id()
                r = s.service("message", "POST", "/v1/messages", {
                    "msgId": mid, "fromUserId": alice.id, "toUserId": bob.id,
                    "content": content})
                if r.status_code != 200:
                    break
                acked.append(mid)
            print(f"\nMessage service on a full disk: {r.status_code} {r.text.strip()[:200]} "
                  f"({len(acked) - stored_before} writes still fitted)")
            assert r.status_code == 503 and r.json()["code"] == "db_full", r.text[:200]
            assert set(acked) <= stored_ids(s, alice, bob)     # reads need no room
            # the same through the gateway: each send is answered `unavailable` or, now
            # and then, `sent`
            failed = []
            padding = "x" * 4000
            for i in range(SMALL_DISK_BYTES // len(padding) + 10 * BREAKER_FAILURES):
                mid, status = send_answered(ca, bob, f"disk full {i} {padding}")
                (failed if status == "unavailable" else acked).append(mid)
                if len(failed) == BREAKER_FAILURES + 2:
                    break
            assert len(failed) == BREAKER_FAILURES + 2, (len(failed), len(acked))
            ca.assert_open()
        finally:
            filler.unlink()

        for mid in failed:
            retry_until_sent(ca, bob, mid, within=MAX_COOLDOWN + 10)
        assert set(acked) | set(failed) <= stored_ids(s, alice, bob)
        s.stop()                    # before the disk goes away


# ---------------------------------------------------------------------------
# clients that stop reading

@pytest.mark.timeout(180)
def test_clients_that_stop_reading_are_closed_4002_and_memory_stays_bounded(system_factory):
    """Ten clients stop reading while big chats pour in: each is closed 4002 once its
    send queue (8 frames) overflows, the gateway's memory grows by about what the
    queues hold (not by what was sent at them), and every chat acked `sent` is stored
    (the 4002 contract of keeping them unread is in test_close_codes.py)."""
    queue, size, n = 8, 60000, 10
    s = system_factory(standalone=False, ws={
        "WebSocket": {"SendQueueSize": queue, "RateLimit": {"Rate": 100000, "Burst": 100000}},
        "Chat": {"MaxContentLength": size}})
    readers = [s.minted_user(f"stuck{i}") for i in range(n)]
    for r in readers:   # connected, then never read again, with a tiny receive buffer
        s.connect(r, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    senders = [ChatPeer(s.connect(s.minted_user(f"flood{i}")), r, window=8, interval=0.0,
                        prefix="x" * (size - 10)) for i, r in enumerate(readers)]
    base = process_figures(s.metrics_url)
    for p in senders:
        p.start()
    peak = dict(base)
    deadline = time.monotonic() + 90
    closed_at = None
    while True:                                 # bounded by the deadline
        figures, m = process_figures(s.metrics_url), scrape(s.metrics_url)
        peak = {k: max(peak[k], figures[k]) for k in peak}
        if closed_at is None and m.get('skyeim_ws_closes_total{code="4002"}', 0) >= n:
            closed_at = time.monotonic()
        if closed_at is not None and time.monotonic() - closed_at >= 3:
            break                               # and 3 s more of chats to offline users
        assert time.monotonic() < deadline, "the stuck readers were not all closed 4002"
        time.sleep(0.3)
    for p in senders:
        p.finish()
    sent_bytes = sum(len(p.acked) for p in senders) * size
    growth = peak["process_resident_memory_bytes"] - base["process_resident_memory_bytes"]
    print(f"\n{sent_bytes / 2**20:.0f} MB of chats acked for {n} stuck readers; gateway RSS "
          f"{base['process_resident_memory_bytes'] / 2**20:.0f} MB, peak +{growth / 2**20:.1f} MB; "
          f"fds {base['process_open_fds']:.0f} -> peak {peak['process_open_fds']:.0f}")
    assert [p.problem for p in senders if p.problem] == []
    assert [p.failed for p in senders if p.failed] == []
    assert sent_bytes >= 2 * n * queue * size          # far more than the queues can hold
    # the queues and socket buffers of n connections, with generous room for copies
    assert growth <= n * (queue + 8) * size * 3 + 24 * 2**20, growth
    assert assert_all_stored(s, senders) == sum(len(p.acked) for p in senders)
