"""A cost model fitted to benchmark runs, and what it says for a large deployment.

    python -m skyeim.bench.model RESULTS.json [MORE.json ...] [--connections 1000000]
                                 [--chats 100000] [--presence 20000] [--markdown FILE]

Reads cluster runs of ``python -m skyeim.bench --target cluster`` (idle, chat and
presence scenarios; any node counts; ``--message-services``) and fits, for each
kind of process (gateway, Message service, Friend service, PostgreSQL, Redis):

* per connection: RSS (KB, gateways) and CPU to connect (ms, every process);
* per chat: CPU (µs) at the peak, summed over the processes of a kind, with the
  users of each pair on one node (1 node) and on different nodes (2+ nodes);
* per presence notification: CPU (µs) of telling one online friend.

Then, for the load asked (connections, chats/s, presence notifications/s), the
cores each kind needs at ``TARGET_UTILISATION`` and the gateway count by CPU and
by memory. It is arithmetic on measured figures: docs/scaling.md says what it
leaves out (disks, networks, hot users, Redis's single thread).
"""
from __future__ import annotations

import argparse
import json
import math
import re
from collections import defaultdict

TARGET_UTILISATION = 0.6      # plan each process for 60% of a core: headroom for bursts
GATEWAY_RAM_GB = 8            # memory a gateway process may use for connections (plan)
KINDS = ("gateway", "message", "friend", "auth", "postgres", "redis")


def kind_of(process: str) -> str:
    """'gateway-2' -> gateway, 'message-2' -> message, 'postgres (9 backends)' -> postgres."""
    return re.split(r"[- (]", process, maxsplit=1)[0]


def by_kind(server_cpu: dict) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for process, percent in server_cpu.items():
        out[kind_of(process)] += percent or 0.0
    return out


def cpu_ms(percent: float, seconds: float) -> float:
    """CPU time (ms) of ``percent`` of one core held for ``seconds``."""
    return percent / 100.0 * seconds * 1000.0


def fit(runs: list[dict]) -> dict:
    """Per-unit costs from the runs' scenarios, one entry per (scenario, column)."""
    chats, connects, presence, memory = [], [], [], []
    for run in runs:
        services = run.get("message_services", 1)
        for column, r in run.get("scenarios", {}).get("chat", {}).items():
            peak = r.get("peak") or {}
            cpu, rate = peak.get("cpu") or {}, peak.get("throughput") or 0
            if not rate or not cpu.get("server"):
                continue
            nodes = int(column.split()[0]) if column[0].isdigit() else 1
            per = {k: cpu_ms(v, 1.0) * 1000.0 / rate for k, v in by_kind(cpu["server"]).items()}
            chats.append({"column": column, "nodes": nodes, "message_services": services,
                          "rate": rate, "p50_ms": peak["delivered_ack_ms"]["p50"],
                          "us_per_chat": per, "other_percent": cpu.get("other_processes")})
        for column, r in run.get("scenarios", {}).get("idle", {}).items():
            cpu = r.get("connect_cpu") or {}
            if r.get("ok") and cpu.get("server"):
                per = {k: cpu_ms(v, cpu["seconds"]) / r["ok"] for k, v in by_kind(cpu["server"]).items()}
                connects.append({"column": column, "ms_per_connect": per, "rate": r.get("rate_per_s")})
                memory.append({"column": column, "kb_per_conn": r.get("rss_kb_per_conn"),
                               "idle_cpu_percent": r.get("idle_cpu_percent"), "held": r["ok"]})
        for column, r in run.get("scenarios", {}).get("presence", {}).items():
            cpu = r.get("cpu") or {}
            if r.get("received") and cpu.get("server"):
                per = {k: cpu_ms(v, cpu["seconds"]) * 1000.0 / r["received"]
                       for k, v in by_kind(cpu["server"]).items()}
                presence.append({"column": column, "us_per_notification": per,
                                 "last_ms": r.get("last_online_ms")})
    return {"chat": chats, "connect": connects, "memory": memory, "presence": presence}


def _median(values: list[float]) -> float:
    values = sorted(v for v in values if v is not None)
    if not values:
        return 0.0
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def model(costs: dict) -> dict:
    """One figure per unit and kind: cross-node chats (the common case at scale: two
    users of a chat are on the same one of N nodes with probability 1/N)."""
    cross = [c for c in costs["chat"] if c["nodes"] > 1] or costs["chat"]
    chat = {k: _median([c["us_per_chat"].get(k, 0.0) for c in cross]) for k in KINDS}
    connect = {k: _median([c["ms_per_connect"].get(k, 0.0) for c in costs["connect"]]) for k in KINDS}
    notify = {k: _median([p["us_per_notification"].get(k, 0.0) for p in costs["presence"]
                          if not p["column"].startswith("1 ")] or
                         [p["us_per_notification"].get(k, 0.0) for p in costs["presence"]])
              for k in KINDS}
    kb = _median([m["kb_per_conn"] for m in costs["memory"]])
    return {"us_per_chat": chat, "ms_per_connect": connect, "us_per_notification": notify,
            "kb_per_conn": kb}


def size(m: dict, connections: int, chats_per_s: float, presence_per_s: float,
         reconnect_per_s: float) -> dict:
    """Cores per kind at TARGET_UTILISATION, and gateways by CPU and by memory."""
    cores = {}
    for k in KINDS:
        busy = (chats_per_s * m["us_per_chat"][k] / 1e6
                + presence_per_s * m["us_per_notification"][k] / 1e6
                + reconnect_per_s * m["ms_per_connect"][k] / 1e3)
        cores[k] = busy / TARGET_UTILISATION
    by_memory = math.ceil(connections * m["kb_per_conn"] / (GATEWAY_RAM_GB * 1024 * 1024))
    return {"cores": cores, "gateways_by_cpu": math.ceil(cores["gateway"]),
            "gateways_by_memory": by_memory,
            "gateways": max(math.ceil(cores["gateway"]), by_memory)}


def markdown(costs: dict, m: dict, plan: dict, args) -> str:
    lines = ["| run | nodes | Message services | chats/s | delivered p50 ms | "
             + " | ".join(f"{k} µs/chat" for k in KINDS) + " |",
             "|---|--:|--:|--:|--:|" + "--:|" * len(KINDS)]
    for c in costs["chat"]:
        lines.append(f"| {c['column']} | {c['nodes']} | {c['message_services']} | {c['rate']:,.0f} | "
                     f"{c['p50_ms']:,.0f} | "
                     + " | ".join(f"{c['us_per_chat'].get(k, 0):,.0f}" for k in KINDS) + " |")
    lines += ["", "| unit | " + " | ".join(KINDS) + " |", "|---|" + "--:|" * len(KINDS)]
    lines.append("| CPU per chat (µs), cross-node | " +
                 " | ".join(f"{m['us_per_chat'][k]:,.0f}" for k in KINDS) + " |")
    lines.append("| CPU per connect (ms) | " +
                 " | ".join(f"{m['ms_per_connect'][k]:.3f}" for k in KINDS) + " |")
    lines.append("| CPU per presence notification (µs) | " +
                 " | ".join(f"{m['us_per_notification'][k]:,.1f}" for k in KINDS) + " |")
    lines += ["", f"Memory per idle connection (gateway RSS): {m['kb_per_conn']:.1f} KB.", "",
              f"For {args.connections:,} connections, {args.chats:,} chats/s, "
              f"{args.presence:,} presence notifications/s and {args.reconnects:,} connects/s "
              f"(each process planned at {TARGET_UTILISATION:.0%} of a core):", "",
              "| kind | cores |", "|---|--:|"]
    for k in KINDS:
        lines.append(f"| {k} | {plan['cores'][k]:,.1f} |")
    lines += ["", f"Gateway processes: {plan['gateways_by_cpu']} by CPU, "
              f"{plan['gateways_by_memory']} by memory ({GATEWAY_RAM_GB} GB each): "
              f"{plan['gateways']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m skyeim.bench.model", description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", help="JSON files of python -m skyeim.bench --target cluster")
    p.add_argument("--connections", type=int, default=1_000_000)
    p.add_argument("--chats", type=int, default=100_000, help="chats per second")
    p.add_argument("--presence", type=int, default=20_000,
                   help="presence notifications per second (online/offline frames to friends)")
    p.add_argument("--reconnects", type=int, default=1_000, help="connects per second, steady")
    p.add_argument("--markdown", default=None, help="also write the tables to this file")
    args = p.parse_args(argv)
    runs = []
    for path in args.results:
        with open(path) as f:
            data = json.load(f)
        data["message_services"] = (data.get("meta") or {}).get("message_services", 1)
        runs.append(data)
    costs = fit(runs)
    if not costs["chat"]:
        raise SystemExit("error: no chat figures in these results (run --scenario chat)")
    m = model(costs)
    plan = size(m, args.connections, args.chats, args.presence, args.reconnects)
    text = markdown(costs, m, plan, args)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
