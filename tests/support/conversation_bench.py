"""Figures for docs/performance.md "Conversation list" (run by hand; not a test):

    .venv/bin/python tests/support/conversation_bench.py [--conversations 10000] [--calls 300]

1. GET /api/conversations through the gateway (standalone system, real processes)
   for a user with N 1:1 conversations (and a few groups), on SQLite and on
   PostgreSQL: p50/p99 of the first page (limit 50), of a page deep in the list
   (its cursor), and of a full page of 200.
2. The send hot path's extra cost: store.send_messages in batches of 64 chats
   (64 pairs) with and without the conversation upsert (in-process, CPU time per
   chat), on both databases.

The machine may be shared: the figures are indicative.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests
import sqlalchemy as sa

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[2])]
from harness import System  # noqa: E402
from service_harness import database_url  # noqa: E402
from skyeim.db import Database  # noqa: E402
from skyeim.message import store  # noqa: E402

BATCH = 1000


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def seed(system: System, me: int, n: int) -> None:
    """n conversations of ``me`` (peers 10_000_000 + i), one message each, in batches."""
    s = requests.Session()
    s.headers["X-Internal-Secret"] = system.internal_secret
    url = system.service_url("message") + "/v1/messages/batch"
    for start in range(0, n, BATCH):
        msgs = [{"msgId": uuid.uuid4().hex, "fromUserId": 10_000_000 + i, "toUserId": me,
                 "content": f"hello #{i}"} for i in range(start, min(n, start + BATCH))]
        r = s.post(url, json={"messages": msgs}, timeout=120)
        r.raise_for_status()


def timed(system: System, token: str, calls: int, **params) -> list[float]:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        r = s.get(system.url + "/api/conversations", params=params, timeout=30)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text
    return out


def list_latency(backend: str, n: int, calls: int, work: Path) -> dict:
    with database_url(backend, work, f"convbench_{backend}") as url:
        system = System(work / backend, message={"DataSource": url},
                        ws={"AuthRpc": {"Timeout": 30000}})   # registering on a loaded machine
        system.start()
        try:
            me = system.register_user("bench_me")
            others = []
            for i in range(3):
                system.api("POST", "/api/groups", me,
                           json_body={"name": f"g{i}", "memberIds": [o.id for o in others]})
            t0 = time.monotonic()
            seed(system, me.id, n)
            seeded = time.monotonic() - t0
            if backend == "postgresql":
                # the planner's statistics, as autovacuum keeps them in production (right
                # after a bulk load it has none yet, and the page's plan is 5x slower)
                engine = sa.create_engine(url)
                with engine.connect() as conn:
                    conn.exec_driver_sql("ANALYZE")
                    conn.commit()
                engine.dispose()
            first = system.api("GET", "/api/conversations", me, params={"limit": 200}).json()
            assert len(first["items"]) == 200 and first["nextCursor"]
            # a cursor about half way down the list
            cursor = first["nextCursor"]
            for _ in range(n // 400):
                cursor = system.api("GET", "/api/conversations", me,
                                    params={"limit": 200, "before": cursor}).json()["nextCursor"]
            timed(system, me.token, 20)                       # warm-up
            res = {"seeded_s": round(seeded, 1)}
            for name, params in (("first page (50)", {}), ("deep page (50)", {"before": cursor}),
                                 ("page of 200", {"limit": 200})):
                samples = timed(system, me.token, calls, **params)
                res[name] = (round(statistics.median(samples), 1), round(pct(samples, 0.99), 1))
            return res
        finally:
            system.stop()


def send_cost(backend: str, work: Path, batches: int = 200) -> dict:
    """CPU ms per chat of send_messages (64 chats of 64 pairs a batch), with and
    without the conversation upsert, alternating to share the machine's noise."""
    out = {}
    with database_url(backend, work, f"sendbench_{backend}") as url:
        db = Database(url, store.metadata, pool_size=2)
        real = store._touch_conversations
        try:
            results: dict[str, list[float]] = {"with": [], "without": []}
            base = 1
            for round_ in range(batches):
                for mode in ("with", "without"):
                    store._touch_conversations = real if mode == "with" else (lambda conn, pairs: None)
                    msgs = [store.NewMessage(uuid.uuid4().hex, base + 2 * i, base + 2 * i + 1,
                                             "x" * 100, 1) for i in range(64)]
                    base += 128 if round_ % 4 else 0    # new pairs, then the same pairs again
                    c0, w0 = time.process_time(), time.perf_counter()
                    db.run(store.send_messages, msgs)
                    results[mode].append(((time.process_time() - c0) * 1000 / 64,
                                          (time.perf_counter() - w0) * 1000 / 64))
            for mode, samples in results.items():
                out[mode] = (round(statistics.median(s[0] for s in samples), 3),
                             round(statistics.median(s[1] for s in samples), 3))
        finally:
            store._touch_conversations = real
            db.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--conversations", type=int, default=10_000)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--skip-list", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="convbench-") as tmp:
        work = Path(tmp)
        for backend in args.backends.split(","):
            cost = send_cost(backend, work)
            print(f"{backend}: send_messages per chat (CPU ms, wall ms), median of batches of 64: "
                  f"with the conversation upsert {cost['with']}, without {cost['without']}",
                  flush=True)
            if not args.skip_list:
                res = list_latency(backend, args.conversations, args.calls, work)
                print(f"{backend}: {args.conversations} conversations (seeded in "
                      f"{res.pop('seeded_s')} s); GET /api/conversations ms (p50, p99): {res}",
                      flush=True)


if __name__ == "__main__":
    main()
