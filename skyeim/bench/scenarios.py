"""The scenarios, run by the coordinator against one system at a time.

Each ``run_*`` starts a fresh system (so that one scenario's data or memory does
not colour the next), drives it through the load workers, stops it, and
returns a dict of figures. While a scenario measures, the coordinator also
measures the CPU of the system's processes and of every load worker over the
same window: a worker above LOAD_BOUND_PERCENT of a core means the figure may
be the load side's limit, and the phase is flagged ``load_bound``.
"""
from __future__ import annotations

import math
import os
import random
import re
import sys
import threading
import time
from array import array
from dataclasses import dataclass, field

from skyeim.bench import procstat
from skyeim.bench.load import (C_BACKLOG, C_CONNECTED, C_DONE, C_FAILED, C_ONLINE, C_SENT, LoadPool,
                               floats, split)

LOAD_BOUND_PERCENT = 90.0        # a load worker above this (% of a core) may be the limit
SATURATED_PERCENT = 90.0         # a server process above this is CPU-bound (one core: the GIL)
MACHINE_BUSY_PERCENT = 95.0      # all cores busy (% of the machine)
STORM_TIMEOUT = 180.0


# ---------------------------------------------------------------------------------------
# Sizes

@dataclass
class Sizes:
    idle_conns: int = 10_000
    # one PingInterval (30 s): any window that long holds exactly one protocol ping per
    # connection, whenever the connections were opened, so gateway and relay compare fairly
    quiet_window: float = 30.0
    connect_concurrency: int = 50          # handshakes under way per worker (idle, presence)
    chat_pairs: int = 100
    chat_levels: list[int] = field(default_factory=lambda: [1, 10, 30, 100])
    chat_window: int = 4
    chat_duration: float = 15.0
    chat_warmup: float = 2.0
    chat_size: int = 100
    open_loop_rates: list[float] = field(default_factory=list)   # msg/s, extra open-loop steps
    storm_clients: int = 5_000
    backlog_messages: int = 10_000
    presence_friends: int = 1_000

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(idle_conns=100, quiet_window=1.0, chat_pairs=4, chat_levels=[1, 4], chat_window=4,
                   chat_duration=1.5, chat_warmup=0.3, storm_clients=100, backlog_messages=300,
                   presence_friends=50)


# ---------------------------------------------------------------------------------------
# Statistics

def percentile(sorted_values, q: float) -> float | None:
    """Nearest-rank percentile of an already sorted sequence."""
    n = len(sorted_values)
    if n == 0:
        return None
    return sorted_values[min(n - 1, max(0, math.ceil(q * n) - 1))]


def summary(values) -> dict:
    v = sorted(values)
    if not v:
        return {"n": 0, "p50": None, "p99": None, "p999": None, "mean": None, "max": None}
    r = lambda x: round(x, 2)  # noqa: E731
    return {"n": len(v), "p50": r(percentile(v, 0.50)), "p99": r(percentile(v, 0.99)),
            "p999": r(percentile(v, 0.999)), "mean": r(sum(v) / len(v)), "max": r(v[-1])}


def merged(results: list[dict | None], key: str) -> array:
    out = array("d")
    for r in results:
        if r and r.get(key):
            out.extend(floats(r[key]))
    return out


def add_counts(results: list[dict | None], key: str) -> dict:
    out: dict[str, int] = {}
    for r in results:
        for k, v in ((r or {}).get(key) or {}).items():
            out[k] = out.get(k, 0) + v
    return out


# ---------------------------------------------------------------------------------------
# Progress display

class Progress:
    """One status line on stderr (rewritten in place on a terminal, every 5 s otherwise)."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self._last_print = 0.0
        self._width = 0
        self.t0 = time.monotonic()

    def phase(self, text: str) -> None:
        self._end_line()
        self.stream.write(f"[{time.monotonic() - self.t0:6.1f}s] {text}\n")
        self.stream.flush()

    def status(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f}s]   {text}"
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
            self.stream.flush()
        elif time.monotonic() - self._last_print >= 5:
            self._last_print = time.monotonic()
            self.stream.write(line + "\n")
            self.stream.flush()

    def _end_line(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self._width = 0


# ---------------------------------------------------------------------------------------

class CpuBetween(threading.Thread):
    """Measure CPU of ``pids`` between two monotonic instants, in the background."""

    def __init__(self, pids: dict[str, int], t_from: float, t_to: float, discover=None):
        super().__init__(daemon=True)
        self.pids, self.t_from, self.t_to, self.discover = pids, t_from, t_to, discover
        self.window: procstat.CpuWindow | None = None
        self.start()

    def run(self) -> None:
        time.sleep(max(0.0, self.t_from - time.monotonic()))
        w = procstat.CpuWindow(self.pids, self.discover).start()
        while (left := self.t_to - time.monotonic()) > 0:     # t_to may be moved meanwhile
            time.sleep(min(left, 0.05))
        self.window = w.stop()

    def result(self) -> procstat.CpuWindow | None:
        self.join(max(1.0, self.t_to - time.monotonic() + 5))
        return self.window


class Runner:
    def __init__(self, pool: LoadPool, sizes: Sizes, progress: Progress, make_system, *,
                 connect_timeout: float = 60.0):
        self.pool = pool
        self.sizes = sizes
        self.progress = progress
        self.make_system = make_system          # kind ("skyeim" | "relay") -> an unstarted system
        self.connect_timeout = connect_timeout
        self.id_base = random.randrange(10**9, 10**12)
        self._ids_used = 0
        self.load_phases: list[dict] = []

    # -- helpers ------------------------------------------------------------------------

    def new_ids(self, n: int) -> list[int]:
        start = self.id_base + self._ids_used
        self._ids_used += n
        return list(range(start, start + n))

    def cpu_record(self, label: str, system, window: procstat.CpuWindow | None) -> dict:
        """CPU of the system and of the load workers over a window; flags a load-bound phase."""
        if window is None:
            return {}
        server = {k: v for k, v in window.percent.items() if not k.startswith("load")}
        max_server = max((v for v in server.values() if v is not None), default=0.0)
        backends = [server.pop(k) for k in list(server) if k.startswith("postgres-")]
        if backends:             # a cluster's PostgreSQL backends (system.ClusterSystem), as one
            server[f"postgres ({len(backends)} backends)"] = round(sum(v or 0 for v in backends), 1)
        load = {k: v for k, v in window.percent.items() if k.startswith("load")}
        max_load = max((v for v in load.values() if v is not None), default=0.0)
        ours = sum(v or 0 for v in window.percent.values())
        other = None
        if window.machine_percent is not None:
            # processes that are neither the system nor the load (on a shared machine)
            other = round(max(0.0, window.machine_percent * (os.cpu_count() or 1) - ours), 1)
        if max_load > LOAD_BOUND_PERCENT:
            bottleneck = "load"                  # a load worker saturated its core
        elif max_server >= SATURATED_PERCENT:
            bottleneck = "server"                # a server process saturated one core (the GIL)
        elif (window.machine_percent or 0) >= MACHINE_BUSY_PERCENT:
            bottleneck = "machine"               # every core busy, other processes included
        else:
            bottleneck = "none saturated"        # waiting: serialisation, latency
        rec = {"server": server, "load": load, "machine": window.machine_percent,
               "other_processes": other,
               "max_load_worker": max_load, "load_bound": max_load > LOAD_BOUND_PERCENT,
               "bottleneck": bottleneck, "seconds": round(window.seconds, 2)}
        self.load_phases.append({"phase": f"{label} ({getattr(system, 'kind_label', system.kind)})", **rec})
        return rec

    @staticmethod
    def log_summary(system, mark: dict | None) -> dict:
        """The system's WARNING/ERROR log lines by kind: while measuring, and while closing."""
        def kinds(lines: list[str]) -> dict[str, int]:
            out: dict[str, int] = {}
            for line in lines:
                # "name: date time LEVEL logger message" -> "name: LEVEL logger message", ids as N
                name, _, rest = line.partition(": ")
                parts = rest.split(" ", 4)
                text = f"{name}: {' '.join(parts[2:])}" if len(parts) >= 5 else line
                key = re.sub(r"\d+", "N", text)[:160]
                out[key] = out.get(key, 0) + 1
            return dict(sorted(out.items(), key=lambda kv: -kv[1]))
        try:
            if mark is None:
                return {"measuring": kinds(system.warnings()), "closing": {}}
            return {"measuring": kinds(system.warnings(until=mark)),
                    "closing": kinds(system.warnings(since=mark))}
        except OSError:
            return {}

    def all_pids(self, system) -> dict[str, int]:
        return {**system.pids, **self.pool.pids}

    def cpu_window(self, system) -> procstat.CpuWindow:
        """A started CPU window over the system and the load workers (and processes the
        system starts meanwhile, such as PostgreSQL backends)."""
        return procstat.CpuWindow(self.all_pids(system), lambda: system.pids).start()

    def connect(self, system, tag: str, uids: list[int], *, label: str, concurrency: int | None = None,
                start_at: float | None = None, per_worker: list[list[int]] | None = None,
                timeout: float | None = None, **extra) -> list[dict | None]:
        """Connect ``uids`` through the workers, each up to `connected` within ``timeout`` s."""
        timeout = timeout or self.connect_timeout
        chunks = per_worker if per_worker is not None else split(uids, self.pool.n)
        total = sum(len(c) for c in chunks)
        self.pool.reset_counters()
        t0 = time.monotonic()

        def tick() -> None:
            done = self.pool.counter(C_CONNECTED)
            failed = self.pool.counter(C_FAILED)
            rate = done / max(1e-6, time.monotonic() - (start_at or t0))
            self.progress.status(f"{label}: {done:,}/{total:,} connected, {failed:,} failed "
                                 f"({rate:,.0f}/s)")

        cmds = [None if not c else {
            "cmd": "connect", "tag": tag, "uids": c, "host": system.host, "port": system.port,
            "ports": getattr(system, "node_ports", None),      # a cluster: spread over its nodes
            "secret": system.secret, "timeout": timeout,
            "concurrency": concurrency or self.sizes.connect_concurrency, "start_at": start_at,
            **extra} for c in chunks]
        budget = timeout * (1 + total / max(1, self.pool.n * (concurrency or self.sizes.connect_concurrency))) + 30
        results = self.pool.call(cmds, timeout=budget, tick=tick)
        tick()
        return results

    def close(self, system, *tags: str) -> None:
        """Close every client of ``tags``; wait (bounded) until the server dropped them all."""
        for tag in tags:
            self.pool.call([{"cmd": "close", "tag": tag}] * self.pool.n, timeout=120)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            n = system.connections()
            if not n:
                return
            self.progress.status(f"waiting for the server to drop {n:,} connections")
            time.sleep(0.25)

    @staticmethod
    def connect_figures(results: list[dict | None]) -> dict:
        outcomes = add_counts(results, "outcomes")
        ok = outcomes.get("ok", 0)
        firsts = [r["first_start"] for r in results if r and r.get("first_start") is not None]
        lasts = [r["last_connected"] for r in results if r and r.get("last_connected") is not None]
        span = (max(lasts) - min(firsts)) if firsts and lasts else None
        return {
            "ok": ok, "outcomes": outcomes,
            "failed": sum(v for k, v in outcomes.items() if k != "ok"),
            "span_s": round(span, 3) if span else None,
            "rate_per_s": round(ok / span, 1) if span else None,
            "connect_ms": summary(merged(results, "connect_ms")),
            "upgrade_ms": summary(merged(results, "upgrade_ms")),
        }

    # -- idle capacity --------------------------------------------------------------------

    def run_idle(self, kind: str) -> dict:
        n = self.sizes.idle_conns
        system = self.make_system(kind)
        self.progress.phase(f"idle: {n:,} connections held on the {system.description}")
        mark = None
        system.start()
        try:
            time.sleep(1.0)
            # the gateway process(es): every node of a cluster; memory of all the system's own
            # processes (a cluster's PostgreSQL backends left out: they share their buffers)
            gws = getattr(system, "gateway_pids", None) or [p for p in [system.gateway_pid] if p]
            own = getattr(system, "rss_pids", None) or system.pids

            def gw_rss() -> int | None:
                return sum(procstat.rss_bytes(p) or 0 for p in gws) if gws else None
            rss0 = gw_rss()
            rss0_all = sum(procstat.rss_bytes(p) or 0 for p in own.values())
            uids = self.new_ids(n)
            w = self.cpu_window(system)
            results = self.connect(system, "idle", uids, label="connecting")
            connect_cpu = self.cpu_record("idle connect", system, w.stop())
            fig = self.connect_figures(results)
            time.sleep(min(2.0, self.sizes.quiet_window))   # let the connect flow's garbage settle
            rss1 = gw_rss()
            rss1_all = sum(procstat.rss_bytes(p) or 0 for p in own.values())
            self.progress.status(f"quiet window: {self.sizes.quiet_window:g}s with {fig['ok']:,} held")
            w = self.cpu_window(system)
            time.sleep(self.sizes.quiet_window)
            quiet = self.cpu_record("idle quiet", system, w.stop())
            held = system.connections()
            per_node = system.node_connections() if hasattr(system, "node_connections") else None
            mark = system.warning_mark()
            self.progress.status("closing")
            self.close(system, "idle")
        finally:
            logs = self.log_summary(system, mark)
            system.stop()
        ok = fig["ok"] or 1
        out = {
            "connections": n, "held": held, **fig,
            **({"held_per_node": per_node} if per_node is not None else {}),
            "rss_before_mb": round(rss0 / 2**20, 1) if rss0 else None,
            "rss_after_mb": round(rss1 / 2**20, 1) if rss1 else None,
            "rss_kb_per_conn": round((rss1 - rss0) / 1024 / ok, 2) if rss0 and rss1 else None,
            "rss_all_processes_kb_per_conn": round((rss1_all - rss0_all) / 1024 / ok, 2),
            "idle_cpu_percent": sum(v or 0 for v in quiet.get("server", {}).values()),
            "connect_cpu": connect_cpu, "quiet_cpu": quiet,
            "log_warnings": logs,
        }
        self.progress.phase(
            f"  held {fig['ok']:,} ({fig['failed']} failed): {out['rss_kb_per_conn']} KB/conn, "
            f"{fig['rate_per_s']}/s connect, idle CPU {out['idle_cpu_percent']:.1f}%")
        return out

    # -- 1:1 chat ---------------------------------------------------------------------------

    def run_chat(self, kind: str) -> dict:
        s = self.sizes
        system = self.make_system(kind)
        complete_on = "receive" if kind == "relay" else "delivered"
        self.progress.phase(f"chat: up to {s.chat_pairs} pairs, window {s.chat_window}, "
                            f"{s.chat_duration:g}s per step, on the {system.description}")
        mark = None
        system.start()
        levels: list[dict] = []
        half: dict = {}
        open_loops: list[dict] = []
        try:
            ids = self.new_ids(2 * s.chat_pairs)
            pairs = [(i, ids[2 * i], ids[2 * i + 1]) for i in range(s.chat_pairs)]
            per_worker = split(pairs, self.pool.n)
            self.connect(system, "chat", ids, label="connecting pairs",
                         per_worker=[[u for _, a, b in ps for u in (a, b)] for ps in per_worker])
            self.pool.call([{"cmd": "chat_setup", "pairs": ps} for ps in per_worker], timeout=60)
            step_id = 0
            for p in [x for x in s.chat_levels if x <= s.chat_pairs]:
                step_id += 1
                levels.append(self._chat_step(system, step_id, p, s.chat_window, None, complete_on,
                                              f"{p} pairs x window {s.chat_window}"))
            peak = max(levels, key=lambda x: x["throughput"]) if levels else None
            if peak and peak["throughput"] > 0:
                step_id += 1
                target = peak["throughput"] / 2
                per_sender = target / (2 * s.chat_pairs)
                half = self._chat_step(system, step_id, s.chat_pairs, 1000, per_sender, complete_on,
                                       f"open loop at {target:,.0f} msg/s (half the peak)")
                half["target_rate"] = round(target, 1)
            for rate in s.open_loop_rates:       # latency at given rates (comparable across runs)
                step_id += 1
                step = self._chat_step(system, step_id, s.chat_pairs, 1000, rate / (2 * s.chat_pairs),
                                       complete_on, f"open loop at {rate:,.0f} msg/s")
                step["target_rate"] = rate
                open_loops.append(step)
            mark = system.warning_mark()
            self.progress.status("closing")
            self.close(system, "chat")
        finally:
            logs = self.log_summary(system, mark)
            system.stop()
        peak = max(levels, key=lambda x: x["throughput"]) if levels else {}
        return {"complete_on": complete_on, "window": s.chat_window, "content_chars": s.chat_size,
                "levels": levels, "peak": peak, "half_rate": half, "open_loops": open_loops,
                "log_warnings": logs}

    def _chat_step(self, system, step_id: int, pairs: int, window: int, rate: float | None,
                   complete_on: str, label: str) -> dict:
        s = self.sizes
        start_at = time.monotonic() + 0.5
        rec_from = start_at + s.chat_warmup
        stop_at = rec_from + s.chat_duration
        cpu = CpuBetween(self.all_pids(system), rec_from, stop_at, lambda: system.pids)
        self.pool.reset_counters()

        def tick() -> None:
            now = time.monotonic()
            phase = "warm-up" if now < rec_from else ("measuring" if now < stop_at else "draining")
            self.progress.status(f"{label}: {phase}, sent {self.pool.counter(C_SENT):,}, "
                                 f"done {self.pool.counter(C_DONE):,}")

        cmd = {"cmd": "chat_step", "step_id": step_id, "pairs": pairs, "window": window, "rate": rate,
               "start_at": start_at, "rec_from": rec_from, "stop_at": stop_at,
               "drain_timeout": 15.0, "content_len": s.chat_size, "complete_on": complete_on}
        results = self.pool.call([cmd] * self.pool.n, timeout=stop_at - time.monotonic() + 40, tick=tick)
        cpu_rec = self.cpu_record(f"chat {label}", system, cpu.result())
        done = sum(r["done_in_window"] for r in results if r)
        out = {
            "pairs": pairs, "window": window, "in_flight": 2 * pairs * window if rate is None else None,
            "rate_per_sender": round(rate, 3) if rate else None,
            "duration_s": s.chat_duration,
            "sent": sum(r["sent"] for r in results if r),
            "throughput": round(done / s.chat_duration, 1),
            "failed": sum(r["failed"] for r in results if r),
            "incomplete": sum(r["incomplete"] for r in results if r),
            "closed_connections": sum(r["closed"] for r in results if r),
            "errors": add_counts(results, "errors"),
            "sent_ack_ms": summary(merged(results, "sent_ack")),
            "delivered_ack_ms": summary(merged(results, "delivered_ack")),
            "receive_ms": summary(merged(results, "receive")),
            # open loop: how late the load side sent against its schedule (its own lag is in
            # the latencies above, so it must stay small for them to be the server's)
            "send_lag_ms": summary(merged(results, "send_lag")) if rate else None,
            "cpu": cpu_rec,
        }
        lat = out["delivered_ack_ms"] if complete_on == "delivered" else out["receive_ms"]
        self.progress.phase(
            f"  {label}: {out['throughput']:,.0f} msg/s, p50 {lat['p50']} ms, p99 {lat['p99']} ms"
            f" ({'delivered ack' if complete_on == 'delivered' else 'receive'});"
            f" server CPU {sum(v or 0 for v in cpu_rec.get('server', {}).values()):.0f}%,"
            f" busiest load worker {cpu_rec.get('max_load_worker', 0):.0f}%")
        return out

    # -- connect storm ----------------------------------------------------------------------

    def run_storm(self, kind: str) -> dict:
        n = self.sizes.storm_clients
        system = self.make_system(kind)
        self.progress.phase(f"storm: {n:,} clients at once on the {system.description}")
        mark = None
        system.start()
        try:
            time.sleep(0.5)
            uids = self.new_ids(n)
            start_at = time.monotonic() + 2.0 + n / 20_000      # after every worker minted its tokens
            cpu = CpuBetween(self.all_pids(system), start_at, start_at + 1e9, lambda: system.pids)
            # a storm client waits up to STORM_TIMEOUT for `connected`: we want the time
            # until the last one got in, not a cut-off
            results = self.connect(system, "storm", uids, label="storm", start_at=start_at,
                                   timeout=STORM_TIMEOUT)
            cpu.t_to = time.monotonic()
            cpu_rec = self.cpu_record("storm", system, cpu.result())
            fig = self.connect_figures(results)
            lasts = [r["last_connected"] for r in results if r and r.get("last_connected")]
            starts = [r["last_start"] for r in results if r and r.get("last_start")]
            mark = system.warning_mark()
            self.progress.status("closing")
            self.close(system, "storm")
        finally:
            logs = self.log_summary(system, mark)
            system.stop()
        refused = sum(v for k, v in fig["outcomes"].items() if k.startswith("refused"))
        out = {"clients": n, **fig,
               "all_connected_s": round(max(lasts) - start_at, 3) if lasts and fig["failed"] == 0 else None,
               "last_connected_s": round(max(lasts) - start_at, 3) if lasts else None,
               "start_spread_s": round(max(starts) - start_at, 3) if starts else None,
               "refused": refused, "cpu": cpu_rec,
               "log_warnings": logs}
        self.progress.phase(f"  {fig['ok']:,}/{n:,} connected in {out['last_connected_s']} s, "
                            f"{refused} refused, {fig['failed'] - refused} failed otherwise")
        return out

    # -- unread backlog push -------------------------------------------------------------------

    def run_backlog(self, kind: str) -> dict:
        n = self.sizes.backlog_messages
        system = self.make_system(kind)
        self.progress.phase(f"backlog: {n:,} unread messages to one user on the {system.description}")
        mark = None
        system.start()
        try:
            ids = self.new_ids(11)
            user, senders = ids[0], ids[1:]
            self.progress.status(f"seeding {n:,} messages through the Message service")
            seed_s = system.seed_messages(user, senders, n, run_id=str(self.id_base))
            self.progress.phase(f"  seeded in {seed_s:.1f} s ({n / seed_s:,.0f}/s through the Message service API)")
            self.pool.reset_counters()
            cpu = self.cpu_window(system)

            def tick() -> None:
                self.progress.status(f"backlog chats received: {self.pool.counter(C_BACKLOG):,}/{n:,}")
            cmds = [None] * self.pool.n
            cmds[0] = {"cmd": "connect", "tag": "backlog", "uids": [user], "host": system.host,
                       "port": system.port, "secret": system.secret, "timeout": 300.0,
                       "concurrency": 1, "track_backlog": True}
            res = self.pool.call(cmds, timeout=360, tick=tick)[0]
            cpu_rec = self.cpu_record("backlog", system, cpu.stop())
            info = res["backlog"][0]
            mark = system.warning_mark()
            self.close(system, "backlog")
        finally:
            logs = self.log_summary(system, mark)
            system.stop()
        ok = bool(info["t_connected"])
        secs = info["t_connected"] - info["t_start"] if ok else None
        out = {"messages": n, "seed_s": round(seed_s, 2), "seed_rate_per_s": round(n / seed_s, 1),
               "outcomes": res["outcomes"], "received": info["frames"], "distinct": info["distinct"],
               "unread_pushed": (info["connected"] or {}).get("unreadPushed"),
               "connected_s": round(secs, 3) if secs else None,
               "push_rate_per_s": round(info["frames"] / secs, 1) if secs else None,
               "all_received": info["distinct"] == n, "cpu": cpu_rec,
               "log_warnings": logs}
        self.progress.phase(f"  connected after {out['connected_s']} s with {info['frames']:,} backlog "
                            f"chats ({out['push_rate_per_s']}/s)")
        return out

    # -- presence fan-out -------------------------------------------------------------------------

    def run_presence(self, kind: str) -> dict:
        n = self.sizes.presence_friends
        system = self.make_system(kind)
        self.progress.phase(f"presence: a user with {n:,} online friends connects, on the {system.description}")
        mark = None
        system.start()
        try:
            ids = self.new_ids(n + 1)
            user, friends = ids[0], ids[1:]
            self.progress.status(f"seeding {n:,} friendships through the Friend service")
            seed_s = system.seed_friends(user, friends)
            res = self.connect(system, "friends", friends, label="connecting friends")
            held = self.connect_figures(res)["ok"]
            self.pool.call([{"cmd": "watch_online", "tag": "friends", "user_id": user}] * self.pool.n,
                           timeout=30)
            cpu = self.cpu_window(system)
            cmds = [None] * self.pool.n
            cmds[0] = {"cmd": "connect", "tag": "hub", "uids": [user], "host": system.host,
                       "port": system.port, "secret": system.secret, "timeout": 60.0,
                       "concurrency": 1, "want_connected": True}
            me = self.pool.call(cmds, timeout=90)[0]["connected"][0]
            self.pool.reset_counters()

            def tick() -> None:
                self.progress.status(f"online frames: {self.pool.counter(C_ONLINE):,}/{held:,}")
            got = self.pool.call([{"cmd": "online_times", "tag": "friends", "timeout": 30.0}] * self.pool.n,
                                 timeout=60, tick=tick)
            cpu_rec = self.cpu_record("presence", system, cpu.stop())
            times = sorted(t - me["t_start"] for t in merged(got, "times"))
            missing = sum(r["missing"] for r in got if r)
            mark = system.warning_mark()
            self.close(system, "friends", "hub")
        finally:
            logs = self.log_summary(system, mark)
            system.stop()
        online_friends = len((me["data"] or {}).get("onlineFriends") or [])
        out = {"friends": n, "friends_online": held, "seed_s": round(seed_s, 2),
               "received": len(times), "missing": missing,
               "all_online_ms": round(times[-1] * 1000, 1) if times and not missing else None,
               "last_online_ms": round(times[-1] * 1000, 1) if times else None,
               "p50_online_ms": round(percentile(times, 0.5) * 1000, 1) if times else None,
               "user_connected_ms": round((me["t_connected"] - me["t_start"]) * 1000, 1)
               if me["t_connected"] else None,
               "online_friends_in_connected": online_friends, "cpu": cpu_rec,
               "log_warnings": logs}
        self.progress.phase(f"  {len(times):,}/{held:,} friends got `online` within "
                            f"{out['last_online_ms']} ms (p50 {out['p50_online_ms']} ms)")
        return out
