"""Processes die; supervisord restarts them (issue 12 part 11).

The shipped supervisord.conf (with etc/*.yaml, free ports and a private data
directory: chaos_harness.ShippedLayout) runs the four programs. SDK users chat
in pairs, continuously, with reconnect and resend on. Each of the four
programs is killed with SIGKILL in turn (waiting until supervisord has it
back); then the gateway while the Friend service is stopped, and presence must
heal once it is back; then random ones every few seconds for a bounded run:
SKYEIM_CHAOS_SECONDS (default 120 s, the CI run) counted from the first kill.

Once things settle:
- every chat acked ``sent`` has reached its recipient exactly once by
  (fromUserId, msgId) -- live, in the unread push or by sync after a
  reconnect -- and no ``chat`` frame came twice on one connection;
- the store holds each of them once, each conversation's seqs 1..n with no gap;
- presence has healed: every user sees each of its (connected) friends
  online, from the ``connected`` and ``online``/``offline`` frames it got, and
  GET /api/friends says the same;
- no log has a Traceback.
The figures (kills and restarts per program, reconnects, chats sent, acked,
delivered, the longest outage) are printed (pytest -s shows them; they are in
docs/reliability.md, "Killed processes under supervisord").
"""
from __future__ import annotations

import random
import statistics
import threading
import time

import pytest

from chaos_harness import PROGRAMS, ChatCrowd, Killer, ShippedLayout, chaos_seconds
from harness import wait_until

PAIRS = 4
SETTLE_TIMEOUT = 45.0          # s after the last kill for everything to be delivered and healed
KILL_EVERY = (2.0, 5.0)        # s between random kills
PRESENCE_HEAL_TIMEOUT = 30.0   # s for presence to heal once the Friend service is back


@pytest.fixture
def layout(tmp_path):
    lay = ShippedLayout(tmp_path)
    try:
        yield lay.start()
    finally:
        lay.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_nine_under_supervisord_loses_nothing_and_presence_heals(layout):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    crowd = ChatCrowd(layout.url, PAIRS)
    killer = Killer(layout, rng)
    duration = chaos_seconds()
    try:
        crowd.start()
        time.sleep(3)                               # chatting before the first kill
        watcher_stop = threading.Event()
        killer.watch(watcher_stop)
        t0 = time.monotonic()
        for program in PROGRAMS:                    # each in turn, back before the next
            k = killer.kill(program)
            assert k is not None, f"{program} not running:\n{layout.status()}"
            killer.wait_back(k)
            time.sleep(1)

        # the gateway dies while the Friend service is down: the users come back
        # without friend lists (no `online`, no onlineFriends); once the Friend
        # service is back, presence must heal by itself
        killer.stop("friend")
        killer.wait_back(killer.kill("gateway"))
        wait_until(crowd.all_live, timeout=30, message="users not back after the gateway restart")
        killer.start("friend")
        killer.wait_back(killer.kill("auth"))       # (a kill that leaves the friend alone)
        wait_until(lambda: not crowd.stale_presence() and not crowd.stale_rest_presence(),
                   timeout=PRESENCE_HEAL_TIMEOUT,
                   message=f"presence did not heal: {crowd.stale_presence()} {crowd.stale_rest_presence()}")
        heal_round = sum(t.count("presence repaired for") for t in layout.logs().values())
        while time.monotonic() - t0 < duration:     # then random ones
            k = killer.kill_random()
            time.sleep(rng.uniform(*KILL_EVERY))
        chaos_time = time.monotonic() - t0
        for k in killer.kills:                      # every program back
            if k.back_after is None:
                killer.wait_back(k)
        watcher_stop.set()
        crowd.stop_sending.set()

        # settle: everything acked, delivered, and presence healed
        deadline, state = time.monotonic() + SETTLE_TIMEOUT, {}
        settle_start = time.monotonic()
        while time.monotonic() < deadline:
            state = {"unacked": crowd.unacked(), "missing": crowd.missing(),
                     "presence": crowd.stale_presence(), "rest": crowd.stale_rest_presence(),
                     "not live": [u.name for u in crowd.users if not u.client.live]}
            if not any(state.values()):
                break
            time.sleep(0.5)
        settle_time = time.monotonic() - settle_start

        sent = sum(len(u.sent) for u in crowd.users)
        acked = sum(len(crowd.acked(u)) for u in crowd.users)
        delivered_acks = sum(1 for u in crowd.users for m in u.sent
                             if (r := u.client.result(m)) is not None and r.status == "delivered")
        received = sum(sum(u.received.values()) for u in crowd.users)
        outage, which = killer.longest_outage()
        print(f"\nchaos figures (seed {seed}, {chaos_time:.0f} s of kills, settled in {settle_time:.1f} s):")
        print(f"  kills per program: {killer.per_program()}")
        print(f"  restarts seen by supervisord: {layout.restarts()}")
        print(f"  program back after kill: longest {outage:.1f} s ({which}), "
              f"mean {statistics.mean(k.back_after for k in killer.kills if not k.held):.1f} s")
        print(f"  users {len(crowd.users)}, reconnects {sum(u.client.reconnects for u in crowd.users)}, "
              f"longest a user was not live {max(u.longest_offline for u in crowd.users):.1f} s")
        print(f"  chats sent {sent}, acked sent {acked}, acked delivered {delivered_acks}, "
              f"received {received}, repeated on a later connection {crowd.wire_repeats()}")
        print(f"  after settling: {state}")
        gateway_log = layout.logs().get("gateway.log", "")
        print(f"  presence repair rounds in gateway.log: {gateway_log.count('presence repaired for')} "
              f"({heal_round} after the gateway restart without the Friend service)")

        errors = [e for u in crowd.users for e in u.errors]
        assert not errors, errors
        assert not state.get("unacked"), f"chats never acked: {state['unacked']}"
        assert not crowd.missing(), f"acked sent but never received: {crowd.missing()}"
        assert not crowd.duplicates(), f"received twice by the SDK: {crowd.duplicates()}"
        assert not (problems := crowd.store_problems()), problems
        assert not crowd.wire_duplicates(), f"a chat frame twice on one connection: {crowd.wire_duplicates()}"
        assert not state.get("not live"), state
        assert not crowd.stale_presence(), crowd.stale_presence()
        assert not crowd.stale_rest_presence(), crowd.stale_rest_presence()
        assert acked > 0 and received >= acked
    finally:
        crowd.close()
    layout.shutdown()
    tracebacks = {name: text.count("Traceback") for name, text in layout.logs().items()
                  if "Traceback" in text}
    assert not tracebacks, f"tracebacks in the logs: {tracebacks}\n{layout.log_tails(80)}"
