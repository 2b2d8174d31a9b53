"""A bounded soak: connect/disconnect churn plus chat traffic for
SKYEIM_SOAK_SECONDS (default 60; CI may run up to 600, longer on demand),
against the gateway as its own process (the services beside it).

Every few seconds the gateway's /metrics is sampled: process_resident_memory_bytes,
process_open_fds, skyeim_greenlets. The rules (printed with the samples):
- level off: the maximum of the last third of the samples is at most the
  maximum of the first third x 1.2 plus a slack (RSS 16 MB, fds 20, greenlets 50);
- back to baseline: once the churn stopped and every client closed, open fds
  and greenlets are within a small slack (20 each) of the idle gateway's
  after a warm-up (its pooled keep-alive connections to the services stay open);
- nothing lost: every chat acked `sent` is in the store at the end.
"""
from __future__ import annotations

import os
import random
import threading
import time

import pytest

from harness import Client, ConnectionClosed, NoFrame, System, User, new_msg_id, wait_until
from load_harness import ChatPeer, assert_all_stored, process_figures, scrape, stored_ids

SOAK_SECONDS = float(os.environ.get("SKYEIM_SOAK_SECONDS", "60"))
SAMPLE_EVERY = 3.0          # s
PAIRS = 10                  # steady chat pairs
CHURNERS = 2                # threads that connect, maybe chat, and leave, over and over
SLACK = {"process_resident_memory_bytes": 16 * 2**20, "process_open_fds": 20,
         "skyeim_greenlets": 50}
BASELINE_SLACK = {"process_open_fds": 20, "skyeim_greenlets": 20}


class Churn(threading.Thread):
    """Connects users of its own pool one after another; each connection may
    chat once (acked `sent`), may log in twice (the first is kicked, 4001), and
    leaves with a close frame or by dropping TCP."""

    def __init__(self, system: System, users: list[User], targets: list[User], seed: int):
        super().__init__(daemon=True)
        self.system, self.users, self.targets = system, users, targets
        self.rng = random.Random(seed)
        self.acked: list[tuple[int, int, str]] = []
        self.cycles = 0
        self.problems: list[str] = []
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.is_set():        # bounded by stop()
            try:
                self._cycle()
                self.cycles += 1
            except (AssertionError, OSError, ConnectionClosed) as e:
                self.problems.append(repr(e)[:300])
                if len(self.problems) > 20:
                    return

    def _cycle(self) -> None:
        rng, user = self.rng, self.rng.choice(self.users)
        client = self.system.connect(user, connected_timeout=30)
        if rng.random() < 0.1:                 # a re-login replaces it
            newer = self.system.connect(user, connected_timeout=30)
            code = client.expect_close(timeout=15)
            assert code == 4001, f"replaced connection closed with {code}"
            client = newer
        if rng.random() < 0.6:
            to = rng.choice(self.targets)
            mid = client.chat(to, "churn", msg_id=new_msg_id())
            self._wait_sent(client, mid)
            self.acked.append((user.id, to.id, mid))
        if rng.random() < 0.3:
            client.abort()                     # vanishes without a close frame
        else:
            client.close()

    @staticmethod
    def _wait_sent(client: Client, mid: str) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                frame = client.recv_frame(max(deadline - time.monotonic(), 0.001))
            except NoFrame:
                raise AssertionError(f"no ack for {mid} within 30s") from None
            data = frame.get("data") or {}
            if frame["type"] == "error":
                raise AssertionError(f"error for a churn chat: {data}")
            if frame["type"] == "ack" and data.get("msgId") == mid and data.get("status") == "sent":
                return


def warm_idle_baseline(s: System, users: list[User]) -> dict:
    """The idle gateway's figures after a short warm-up: its keep-alive connections
    to the services (pooled, up to PoolSize per endpoint) are open fds that stay,
    by design, and must not count as a leak."""
    warm = [ChatPeer(s.connect(u), to, window=4, interval=0.05, prefix="warm-up")
            for u, to in zip(users, users[1:] + users[:1])]
    for p in warm:
        p.start()
    time.sleep(3)       # traffic for a while: no event marks "the pools are full"
    for p in warm:
        p.finish()
        p.client.close()
    wait_until(lambda: scrape(s.metrics_url)["skyeim_ws_connections"] == 0, timeout=30)
    time.sleep(1)       # the closed sockets' greenlets end just after the count drops
    return process_figures(s.metrics_url)


def third_max(samples: list[dict], key: str, which: int) -> float:
    n = max(len(samples) // 3, 1)
    part = samples[:n] if which == 0 else samples[-n:]
    return max(s[key] for s in part)


@pytest.mark.timeout(SOAK_SECONDS + 300)
def test_soak_churn_and_chat_level_off_and_lose_nothing(system_factory):
    s = system_factory(standalone=False)
    stable = [s.minted_user(f"soak{i}") for i in range(2 * PAIRS)]
    baseline = warm_idle_baseline(s, stable)
    peers = []
    for a, b in zip(stable[0::2], stable[1::2]):
        peers.append(ChatPeer(s.connect(a), b, window=4, interval=0.2, prefix="soak"))
        peers.append(ChatPeer(s.connect(b), a, window=4, interval=0.2, prefix="soak"))
    churners = [Churn(s, [s.minted_user(f"churn{k}_{i}") for i in range(25)], stable, seed=k)
                for k in range(CHURNERS)]
    for t in peers + churners:
        t.start()

    samples: list[dict] = []
    start = time.monotonic()
    while True:                                   # bounded by SOAK_SECONDS
        figures = process_figures(s.metrics_url)
        figures["t"] = round(time.monotonic() - start, 1)
        figures["connections"] = scrape(s.metrics_url)["skyeim_ws_connections"]
        samples.append(figures)
        if time.monotonic() - start >= SOAK_SECONDS:
            break
        time.sleep(SAMPLE_EVERY)

    for c in churners:
        c.stop()
    for c in churners:
        c.join(60)
    for p in peers:
        p.finish(timeout=60)
    for p in peers:
        p.client.close()
    wait_until(lambda: scrape(s.metrics_url)["skyeim_ws_connections"] == 0, timeout=30,
               message="connections left after the churn stopped")
    # a closed socket's greenlets end a moment after the count drops: bounded polling
    deadline = time.monotonic() + 15
    while True:
        final = process_figures(s.metrics_url)
        if all(final[k] <= baseline[k] + BASELINE_SLACK[k] for k in BASELINE_SLACK) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    print(f"\nsoak {SOAK_SECONDS:g}s: baseline {baseline}")
    print("   t  conns        rss_MB  fds  greenlets")
    for x in samples:
        print(f"{x['t']:6.1f} {x['connections']:5.0f} {x['process_resident_memory_bytes'] / 2**20:12.1f} "
              f"{x['process_open_fds']:4.0f} {x['skyeim_greenlets']:9.0f}")
    print(f"final (all closed): {final}")
    chats = sum(len(p.acked) for p in peers) + sum(len(c.acked) for c in churners)
    cycles = sum(c.cycles for c in churners)
    print(f"{chats} chats acked sent, {cycles} churn connections")

    assert [c.problems for c in churners if c.problems] == []
    assert [p.problem for p in peers if p.problem] == []
    assert [p.close_code for p in peers if p.closed] == []       # the steady clients stayed
    assert cycles >= SOAK_SECONDS / 2, "the churn hardly ran"
    for key, slack in SLACK.items():
        first, last = third_max(samples, key, 0), third_max(samples, key, -1)
        assert last <= first * 1.2 + slack, f"{key} keeps growing: first third max {first}, last {last}"
    for key, slack in BASELINE_SLACK.items():
        assert final[key] <= baseline[key] + slack, f"{key}: {final[key]} after, {baseline[key]} before"

    assert_all_stored(s, peers)
    by_pair: dict[tuple[int, int], set[str]] = {}
    for c in churners:
        for a, b, mid in c.acked:
            by_pair.setdefault((a, b), set()).add(mid)
    for (a, b), mids in by_pair.items():
        missing = mids - stored_ids(s, a, b)
        assert not missing, f"acked churn chats lost: {sorted(missing)[:5]}"
