"""The benchmark's outputs: the table (stdout, Markdown), the JSON file, the PNG chart."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _get(d: Any, *path: str) -> Any:
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return a / b
    return None


DEGRADED = ("friend list unavailable", "unread push stopped")


def _log_count(sc: dict, scenario: str, which: str, needles: tuple[str, ...]) -> int | None:
    """WARNING lines of the system's log while measuring that contain one of ``needles``."""
    logs = _get(sc, scenario, which, "log_warnings", "measuring")
    if logs is None:
        return None
    return sum(n for k, n in logs.items() if any(x in k for x in needles))


def columns(results: dict) -> list[str]:
    """The systems compared, in order: "gateway" (and "relay" with --baseline), or the
    node counts of a cluster run ("1 node", "2 nodes", ...)."""
    baseline = any("relay" in v for v in results.get("scenarios", {}).values())
    cols = _get(results, "meta", "columns")
    if cols:
        return [c for c in cols if c != "relay" or baseline]
    return ["gateway", "relay"] if baseline else ["gateway"]


def ratio_of(results: dict) -> tuple[str, str] | None:
    """(numerator, denominator) columns of the ratio column: gateway / relay, or the
    biggest cluster / the smallest."""
    cols = columns(results)
    if cols == ["gateway", "relay"]:
        return ("gateway", "relay")
    if len(cols) > 1 and "relay" not in cols:
        return (cols[-1], cols[0])
    return None


def rows(results: dict) -> list[dict]:
    """Rows of (section, metric, unit, values by column); ratio as ``ratio_of``. The first
    column's value is also ``gateway`` and the relay's ``relay`` (older readers)."""
    sc = results.get("scenarios", {})
    cols = columns(results)
    ratio_cols = ratio_of(results)
    out: list[dict] = []

    def append(section: str, metric: str, unit: str, values: dict) -> None:
        out.append({"section": section, "metric": metric, "unit": unit, "values": values,
                    "gateway": values.get(cols[0]), "relay": values.get("relay"),
                    "ratio": _ratio(*(values.get(c) for c in ratio_cols)) if ratio_cols else None})

    def add_value(section: str, metric: str, unit: str, by_column) -> None:
        values = {c: by_column(c) for c in cols if c != "relay"}
        if any(v is not None for v in values.values()):
            append(section, metric, unit, values)

    def add(section: str, metric: str, unit: str, scenario: str, *path: str,
            relay_path: tuple[str, ...] | None = None) -> None:
        values = {c: _get(sc, scenario, c, *(relay_path if c == "relay" and relay_path else path))
                  for c in cols}
        if all(v is None for v in values.values()):
            return
        append(section, metric, unit, values)

    first = cols[0]
    cluster = first != "gateway"
    if "idle" in sc:
        n = _get(sc, "idle", first, "connections")
        add("idle", f"connections held (of {n:,})" if n else "connections held", "", "idle", "ok")
        if cluster:
            add_value("idle", "  held per node", "", lambda c: " / ".join(
                _fmt(x) for x in _get(sc, "idle", c, "held_per_node") or []) or None)
        add("idle", "memory per connection (RSS, gateway process" + ("es" if cluster else "") + ")", "KB",
            "idle", "rss_kb_per_conn")
        if cluster:
            add("idle", "memory per connection (RSS, all the system's processes)", "KB", "idle",
                "rss_all_processes_kb_per_conn")
        add("idle", "connect rate", "conn/s", "idle", "rate_per_s")
        add("idle", "connect time p50", "ms", "idle", "connect_ms", "p50")
        add("idle", "connect time p99", "ms", "idle", "connect_ms", "p99")
        add("idle", "CPU while idle (server processes)", "% of a core", "idle", "idle_cpu_percent")
        add_value("idle", "connect-flow backend calls that timed out (friend list, unread; gateway log)", "",
                  lambda c: _log_count(sc, "idle", c, DEGRADED))
    if "chat" in sc:
        add("chat", "peak throughput", "msg/s", "chat", "peak", "throughput")
        add("chat", "  at pairs x window", "", "chat", "peak", "pairs")
        for q in ("p50", "p99", "p999"):
            add("chat", f"delivered latency {q} at peak (gateway: delivered ack; relay: receipt)", "ms",
                "chat", "peak", "delivered_ack_ms", q, relay_path=("peak", "receive_ms", q))
        for q in ("p50", "p99", "p999"):
            add("chat", f"sent-ack latency {q} at peak", "ms", "chat", "peak", "sent_ack_ms", q)
        add("chat", "recipient receive latency p99 at peak", "ms", "chat", "peak", "receive_ms", "p99")
        def refused(c: str) -> int | None:
            levels = _get(sc, "chat", c, "levels")
            return sum(sum(v.get("errors", {}).values()) for v in levels) if levels else None
        add_value("chat", "chats refused with an error, all steps (e.g. `unavailable`)", "", refused)
        add("chat", "half the peak rate (open loop)", "msg/s", "chat", "half_rate", "throughput")
        add("chat", "delivered latency p99 at half the peak rate", "ms", "chat", "half_rate",
            "delivered_ack_ms", "p99", relay_path=("half_rate", "receive_ms", "p99"))
        add("chat", "sent-ack latency p99 at half the peak rate", "ms", "chat", "half_rate",
            "sent_ack_ms", "p99")
        add("chat", "load side's send lag p99 at half the peak rate (must be small)", "ms", "chat",
            "half_rate", "send_lag_ms", "p99")
        rates = sorted({step["target_rate"] for c in columns(results)
                        for step in (_get(sc, "chat", c, "open_loops") or [])})
        for rate in rates:
            def at(c: str, q: str, rate=rate) -> float | None:
                step = next((x for x in _get(sc, "chat", c, "open_loops") or []
                             if x["target_rate"] == rate), None)
                if step is None:
                    return None
                basis = "receive_ms" if c == "relay" else "delivered_ack_ms"
                return (step.get(basis) or {}).get(q)
            for q in ("p50", "p99"):
                add_value("chat", f"delivered latency {q}, open loop at {rate:,.0f} msg/s", "ms",
                          lambda c, q=q: at(c, q))
    if "storm" in sc:
        n = _get(sc, "storm", first, "clients")
        add("storm", f"connect storm: clients connected (of {n:,})" if n else "storm: connected", "",
            "storm", "ok")
        add("storm", "time until the last got `connected`", "s", "storm", "last_connected_s")
        add("storm", "refused (HTTP 503 etc.)", "", "storm", "refused")
        add("storm", "failed otherwise (reset, timeout)", "", "storm", "failed")
        add("storm", "connect time p99", "ms", "storm", "connect_ms", "p99")
        add_value("storm", "connect-flow backend calls that timed out (friend list, unread; gateway log)", "",
                  lambda c: _log_count(sc, "storm", c, DEGRADED))
    if "backlog" in sc:
        n = _get(sc, "backlog", first, "messages")
        add("backlog", f"unread backlog: chats received (of {n:,})" if n else "backlog received", "",
            "backlog", "distinct")
        add("backlog", "time from connect to `connected`", "s", "backlog", "connected_s")
        add("backlog", "push rate", "msg/s", "backlog", "push_rate_per_s")
    if "presence" in sc:
        n = _get(sc, "presence", first, "friends")
        add("presence", f"presence fan-out: friends that got `online` (of {n:,})" if n else
            "presence received", "", "presence", "received")
        add("presence", "time until the last friend got `online`", "ms", "presence", "last_online_ms")
        add("presence", "median friend got `online`", "ms", "presence", "p50_online_ms")
        add("presence", "the user's own time to `connected`", "ms", "presence", "user_connected_ms")
        add_value("presence", "connect-flow backend calls that timed out (friend list, unread; gateway log)", "",
                  lambda c: _log_count(sc, "presence", c, DEGRADED))
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else (f"{r:.2f}x" if r < 10 else f"{r:.0f}x")


def _pairs_label(results: dict, which: str) -> str | None:
    peak = _get(results, "scenarios", "chat", which, "peak")
    if not peak:
        return None
    return f"{peak['pairs']} x {peak['window']}"


def _cells(results: dict, r: dict) -> list[str]:
    """A row's value cells (one per column), then its ratio cell when there is a ratio column."""
    cols = columns(results)
    values, ratio = r["values"], r["ratio"]
    if r["metric"].strip() == "at pairs x window":
        values, ratio = {c: _pairs_label(results, c) for c in cols}, None
    cells = [_fmt(values.get(c)) for c in cols]
    if ratio_of(results):
        cells.append(_fmt_ratio(ratio))
    return cells


def _header(results: dict, sep: str = "/") -> list[str]:
    ratio = ratio_of(results)
    return columns(results) + ([f"{ratio[0]}{sep}{ratio[1]}"] if ratio else [])


def table_lines(results: dict) -> list[str]:
    header = ["metric", "unit"] + _header(results)
    body = [[r["metric"], r["unit"]] + _cells(results, r) for r in rows(results)]
    widths = [max(len(x[i]) for x in [header] + body) for i in range(len(header))]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]


def markdown_table(results: dict) -> str:
    header = _header(results, " / ")
    lines = ["| metric | unit | " + " | ".join(header) + " |",
             "|---|---|" + "--:|" * len(header)]
    for r in rows(results):
        cells = [r["metric"].strip().replace("|", "/"), r["unit"]] + _cells(results, r)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def load_check_lines(results: dict) -> list[str]:
    phases = results.get("load_check", {}).get("phases", [])
    if not phases:
        return []
    out = ["", "CPU per phase (% of one core; machine = % of all cores; other processes = "
           "neither the system nor the load, % of one core; -> what was saturated):"]
    for p in phases:
        server = sum(v or 0 for v in p.get("server", {}).values())
        flag = "  LOAD-BOUND: this figure may be the load generator's limit" if p.get("load_bound") else ""
        out.append(f"  {p['phase']:<52} server {server:5.0f}%  busiest load worker "
                   f"{p.get('max_load_worker', 0):4.0f}%  machine {p.get('machine') or 0:4.0f}%"
                   f"  other processes {p.get('other_processes') or 0:4.0f}%"
                   f"  -> {p.get('bottleneck', '?')}{flag}")
    return out


def print_report(results: dict) -> None:
    m = results.get("meta", {}).get("machine", {})
    print()
    print(f"SkyeIM benchmark ({results.get('meta', {}).get('target')}), {m.get('nproc')} x "
          f"{m.get('cpu_model')}, {m.get('ram_gib')} GiB, Python {m.get('python')}")
    for line in table_lines(results):
        print(line)
    for line in load_check_lines(results):
        print(line)
    verdict = results.get("load_check", {}).get("verdict")
    if verdict:
        print("\n" + verdict)


def write_json(results: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")


def render_chart(results: dict, path: str | Path) -> None:
    """Throughput and latency against load (chat), gateway and relay, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chat = _get(results, "scenarios", "chat") or {}
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    ax_tp, ax_lat, ax_curve = axes
    ticks: set = set()
    styles = {"gateway": ("tab:blue", "SkyeIM gateway"), "relay": ("tab:gray", "bare relay")}
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for i, which in enumerate(columns(results)):
        color, label = styles.get(which) or (palette[i % len(palette)], which)
        data = chat.get(which)
        if not data or not data.get("levels"):
            continue
        basis = "delivered_ack_ms" if data.get("complete_on") == "delivered" else "receive_ms"
        lv = data["levels"]
        x = [v["in_flight"] for v in lv]
        ticks.update(x)
        ax_tp.plot(x, [v["throughput"] for v in lv], "o-", color=color, label=label)
        for q, ls in (("p50", "--"), ("p99", "-")):
            ax_lat.plot(x, [v[basis][q] for v in lv], "o" + ls, color=color, label=f"{label} {q}")
        ax_curve.plot([v["throughput"] for v in lv], [v[basis]["p99"] for v in lv], "o-", color=color,
                      label=f"{label} p99 (closed loop, one point per load level)")
        half = data.get("half_rate") or {}
        if (half.get(basis) or {}).get("p99") is not None:
            ax_curve.plot([half["throughput"]], [half[basis]["p99"]], "s", color=color, markersize=9,
                          label=f"{label} p99, open loop at half the peak rate")
        steps = [x for x in data.get("open_loops") or [] if (x.get(basis) or {}).get("p99") is not None]
        if steps:
            ax_curve.plot([x["throughput"] for x in steps], [x[basis]["p99"] for x in steps], "^:",
                          color=color, markersize=8, label=f"{label} p99, open loop at given rates")
    ax_tp.set(title="1:1 chat throughput", xlabel="messages in flight (2 x pairs x window)",
              ylabel="messages / s (log)", xscale="log", yscale="log")
    ax_lat.set(title="latency against load\n(gateway: delivered ack; relay: receipt)",
               xlabel="messages in flight (2 x pairs x window)", ylabel="ms", xscale="log", yscale="log")
    ax_curve.set(title="p99 latency against throughput", xlabel="messages / s", ylabel="p99 ms",
                 xscale="log", yscale="log")
    from matplotlib.ticker import FuncFormatter, NullFormatter
    plain = FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    for ax in (ax_tp, ax_lat):
        if ticks:
            ax.set_xticks(sorted(ticks))
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.xaxis.set_major_formatter(plain)
        ax.yaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(NullFormatter())
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    m = results.get("meta", {}).get("machine", {})
    fig.suptitle(f"SkyeIM benchmark ({results.get('meta', {}).get('target')}) - {m.get('nproc')} x "
                 f"{m.get('cpu_model')}, Python {m.get('python')}, {results.get('meta', {}).get('date', '')}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
