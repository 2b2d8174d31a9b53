"""python -m skyeim.bench: the SkyeIM benchmark (see skyeim/bench/__init__.py)."""
from __future__ import annotations

import argparse
import os
import sys

from skyeim import __version__


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from skyeim.bench.scenarios import Sizes
    d = Sizes()
    p = argparse.ArgumentParser(
        prog="python -m skyeim.bench",
        description="Benchmark SkyeIM: start (or point at) a system on 127.0.0.1, drive it from "
                    "separate load processes, print a table, write JSON and a PNG chart.")
    p.add_argument("--version", action="version", version=f"skyeim {__version__}")
    p.add_argument("--scenario", default="all",
                   help="idle, chat, storm, backlog, presence, or all (several: comma-separated)")
    p.add_argument("--target", default="standalone",
                   help="standalone (one process), supervisord-layout (3 services + gateway), cluster "
                        "(--nodes gateway nodes over Redis, 3 services on PostgreSQL), or the URL of a "
                        "running gateway on this machine, e.g. http://127.0.0.1:10300")
    p.add_argument("--nodes", default="2",
                   help="with --target cluster: gateway nodes, or a comma-separated list of node counts "
                        "each scenario runs with in turn, e.g. 1,2,3 (default 2)")
    p.add_argument("--message-services", type=int, default=1, metavar="N",
                   help="with --target cluster: Message service processes on the one database, the "
                        "nodes' calls spread over them (default 1)")
    p.add_argument("--redis", default=None, metavar="URL",
                   help="with --target cluster: this Redis (keys under a prefix of their own, removed at "
                        "the end) instead of a private redis-server on a free port")
    p.add_argument("--ws-config", default="etc/ws.yaml",
                   help="with a URL target: the gateway's ws.yaml (AccessSecret, InternalSecret, services)")
    p.add_argument("--baseline", action="store_true",
                   help="also run idle, chat and storm against the bare relay, and report ratios")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run in well under a minute")
    p.add_argument("--out", default="bench-results.json", help="the JSON results file")
    p.add_argument("--chart", default=None, help="the PNG chart (default: --out with .png)")
    p.add_argument("--markdown", default=None, help="also write the table as Markdown to this file")
    p.add_argument("--from-json", default=None, metavar="JSON",
                   help="run nothing: print the table and render the chart from an earlier JSON")
    p.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2),
                   help="load generator processes (default: number of CPUs, at least 2)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="the system's log level (default info, as etc/*.yaml)")
    p.add_argument("--keep-work", action="store_true",
                   help="keep the temporary directory with the systems' configs, logs and databases")
    p.add_argument("--data-source", default=None,
                   help="SQLAlchemy URL for the three services (default: fresh SQLite files per scenario); "
                        "with --target cluster: the PostgreSQL server on which a fresh database is created "
                        "per scenario and dropped after it (default: $SKYEIM_TEST_POSTGRES_URL or "
                        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres)")
    p.add_argument("--hook", action="store_true",
                   help="run nothing else: a chat's extra latency with the before-send hook on "
                        "(PROTOCOL.md 9.4), against a tiny local hook; writes --out "
                        "(default bench-hook.json)")
    p.add_argument("--hook-chats", type=int, default=2000,
                   help="with --hook: chats measured per system, one at a time (default 2000)")
    g = p.add_argument_group("sizes (defaults are the full run; --quick shrinks them)")
    g.add_argument("--idle-conns", type=int, help=f"idle: connections held ({d.idle_conns})")
    g.add_argument("--quiet-window", type=float, help=f"idle: seconds of CPU measurement ({d.quiet_window:g})")
    g.add_argument("--chat-pairs", type=int, help=f"chat: pairs at the top level ({d.chat_pairs})")
    g.add_argument("--chat-levels", help="chat: comma-separated pair counts, one step each "
                                         f"({','.join(map(str, d.chat_levels))})")
    g.add_argument("--chat-window", type=int, help=f"chat: messages in flight per sender ({d.chat_window})")
    g.add_argument("--chat-duration", type=float, help=f"chat: seconds measured per step ({d.chat_duration:g})")
    g.add_argument("--chat-size", type=int, help=f"chat: characters of content ({d.chat_size})")
    g.add_argument("--open-loop-rates", help="chat: comma-separated rates (msg/s) of extra open-loop "
                                             "steps after the one at half the peak (none)")
    g.add_argument("--storm-clients", type=int, help=f"storm: clients at once ({d.storm_clients})")
    g.add_argument("--backlog-messages", type=int, help=f"backlog: unread messages ({d.backlog_messages})")
    g.add_argument("--presence-friends", type=int, help=f"presence: online friends ({d.presence_friends})")
    return p.parse_args(argv)


SCENARIOS = ("idle", "chat", "storm", "backlog", "presence")
BASELINE_SCENARIOS = ("idle", "chat", "storm")


def sizes_from(args: argparse.Namespace):
    from skyeim.bench.scenarios import Sizes
    s = Sizes.quick() if args.quick else Sizes()
    for name in ("idle_conns", "quiet_window", "chat_pairs", "chat_window", "chat_duration", "chat_size",
                 "storm_clients", "backlog_messages", "presence_friends"):
        v = getattr(args, name)
        if v is not None:
            if v <= 0:
                raise SystemExit(f"error: --{name.replace('_', '-')} must be positive")
            setattr(s, name, v)
    if args.open_loop_rates:
        s.open_loop_rates = [float(x) for x in args.open_loop_rates.split(",") if x.strip()]
        if any(r <= 0 for r in s.open_loop_rates):
            raise SystemExit("error: --open-loop-rates must be positive")
    if args.chat_levels:
        s.chat_levels = sorted({int(x) for x in args.chat_levels.split(",") if x.strip()})
    elif args.chat_pairs is not None:
        s.chat_levels = sorted({max(1, round(s.chat_pairs * f)) for f in (0.01, 0.1, 0.3, 1.0)})
    s.chat_pairs = max([s.chat_pairs] + s.chat_levels)
    return s


def node_label(n: int) -> str:
    """The results' key (and table column) of a cluster of ``n`` gateway nodes."""
    return f"{n} node" + ("s" if n != 1 else "")


def check_cluster_prerequisites(args: argparse.Namespace) -> None:
    """Fail early, with the reason, when --target cluster cannot run here."""
    import shutil
    if args.redis is None and shutil.which("redis-server") is None:
        raise SystemExit("error: --target cluster needs redis-server on PATH (apt-get install "
                         "redis-server) or --redis URL")
    import sqlalchemy as sa

    from skyeim.bench.system import DEFAULT_POSTGRES_URL
    url = args.data_source or DEFAULT_POSTGRES_URL
    try:
        if not sa.make_url(url).drivername.startswith("postgresql"):
            raise SystemExit(f"error: --target cluster needs a PostgreSQL --data-source, not {url}")
        engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        finally:
            engine.dispose()
    except (sa.exc.SQLAlchemyError, ImportError) as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise SystemExit(f"error: --target cluster: PostgreSQL not reachable at {url}: {reason}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from skyeim.bench import report
    chart = args.chart or os.path.splitext(args.out)[0] + ".png"

    if args.hook:
        from skyeim.bench import hook
        if args.hook_chats <= 0:
            raise SystemExit("error: --hook-chats must be positive")
        out = args.out if args.out != "bench-results.json" else "bench-hook.json"
        hook.run(args.hook_chats if not args.quick else min(args.hook_chats, 200), out,
                 log_level=args.log_level if args.log_level != "info" else "warning")
        return 0

    if args.from_json:
        import json
        with open(args.from_json) as f:
            results = json.load(f)
        report.print_report(results)
        report.render_chart(results, chart)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(report.markdown_table(results))
        return 0

    wanted = SCENARIOS if args.scenario == "all" else tuple(x.strip() for x in args.scenario.split(","))
    for w in wanted:
        if w not in SCENARIOS:
            raise SystemExit(f"error: unknown scenario {w!r} (choose from {', '.join(SCENARIOS)}, all)")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit("error: the chart needs matplotlib: "
                         "pip install -r skyeim/bench/requirements.txt") from None
    if args.workers < 1:
        raise SystemExit("error: --workers must be at least 1")
    sizes = sizes_from(args)
    node_counts: list[int] = []
    if args.target == "cluster":
        try:
            node_counts = [int(x) for x in args.nodes.split(",") if x.strip()]
        except ValueError:
            node_counts = []
        if not node_counts or min(node_counts) < 1:
            raise SystemExit("error: --nodes must be a positive number or a comma-separated list of them")
        if args.baseline:
            raise SystemExit("error: --baseline is for one gateway; compare node counts with --nodes 1,2,3")
        check_cluster_prerequisites(args)

    import datetime
    import subprocess
    import tempfile
    import time
    from dataclasses import asdict
    from pathlib import Path

    from skyeim.bench import procstat, system as systems
    from skyeim.bench.load import LoadPool
    from skyeim.bench.scenarios import LOAD_BOUND_PERCENT, Progress, Runner

    biggest = max(sizes.idle_conns, sizes.storm_clients, sizes.presence_friends + 1, 2 * sizes.chat_pairs)
    # every connection is one fd in a load worker and one in the server process
    want_fds = biggest + 4096
    soft, _hard = procstat.raise_fd_limit(want_fds)
    notes: list[str] = []
    if soft < biggest + 256:
        notes.append(f"ulimit -n is {soft}: too low for {biggest:,} connections in one server "
                     f"process; raise it (e.g. ulimit -n {want_fds}) or expect refused connections")
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            somaxconn = int(f.read())
    except OSError:
        somaxconn = None

    progress = Progress()
    workdir = Path(tempfile.mkdtemp(prefix="skyeim-bench-"))

    columns = ["gateway"] + (["relay"] if args.baseline else [])     # each scenario's figures, by system
    current: dict = {}
    if args.target == "cluster":
        columns = [node_label(n) for n in node_counts]

        def make_system(kind: str):
            return systems.ClusterSystem(current["nodes"], workdir, fd_limit=soft, log_level=args.log_level,
                                         postgres_url=args.data_source or systems.DEFAULT_POSTGRES_URL,
                                         redis_url=args.redis, message_services=args.message_services)
        target_desc = "cluster of " + ", ".join(map(str, node_counts)) + " gateway node(s)"
    elif args.target in ("standalone", "supervisord-layout"):
        def make_system(kind: str):
            if kind == "relay":
                return systems.RelaySystem(workdir, fd_limit=soft)
            return systems.ManagedSystem(args.target, workdir, fd_limit=soft, log_level=args.log_level,
                                         data_source=args.data_source)
        target_desc = args.target
    else:
        external = systems.ExternalSystem(args.target, args.ws_config)

        def make_system(kind: str):
            if kind == "relay":
                return systems.RelaySystem(workdir, fd_limit=soft)
            return external
        target_desc = f"external {external.url}"

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=systems.REPO, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    results: dict = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit, "target": target_desc, "quick": args.quick, "baseline": args.baseline,
            "workers": args.workers, "sizes": asdict(sizes), "log_level": args.log_level,
            "data_source": (args.data_source or "sqlite (a fresh file per scenario)") if not node_counts
            else (args.data_source or systems.DEFAULT_POSTGRES_URL) + " (a fresh database per scenario)",
            "columns": columns,
            **({"nodes": node_counts, "message_services": args.message_services,
                "redis": args.redis or "a private redis-server per scenario"}
               if node_counts else {}),
            "config_changes": ["WebSocket.RateLimit raised to {Rate: 1000000, Burst: 1000000} "
                               "(the 50 frames/s per connection limit is not what is measured)"],
            "machine": procstat.machine_info(), "somaxconn": somaxconn,
            "argv": sys.argv[1:] if argv is None else argv,
        },
        "notes": notes,
        "scenarios": {},
    }
    for n in notes:
        progress.phase("note: " + n)
    progress.phase(f"{args.workers} load worker processes; work files in {workdir}"
                   + ("" if args.keep_work else " (removed at the end; --keep-work keeps them)"))
    pool = LoadPool(args.workers, fd_limit=soft)
    runner = Runner(pool, sizes, progress, make_system)
    t_start = time.monotonic()
    try:
        for name in wanted:
            entry = results["scenarios"].setdefault(name, {})
            if node_counts:
                for n in node_counts:
                    current["nodes"] = n
                    entry[node_label(n)] = getattr(runner, f"run_{name}")("skyeim")
                continue
            entry["gateway"] = getattr(runner, f"run_{name}")("skyeim")
            if args.baseline and name in BASELINE_SCENARIOS:
                entry["relay"] = getattr(runner, f"run_{name}")("relay")
    except KeyboardInterrupt:
        progress.phase("interrupted: writing what was measured")
        results["interrupted"] = True
    finally:
        pool.close()
        if not args.keep_work:
            import shutil
            shutil.rmtree(workdir, ignore_errors=True)
    results["meta"]["duration_s"] = round(time.monotonic() - t_start, 1)

    phases = runner.load_phases
    bound = [p["phase"] for p in phases if p["load_bound"]]
    busiest = max((p["max_load_worker"] for p in phases), default=0.0)
    if bound:
        verdict = (f"LOAD-BOUND: a load worker used more than {LOAD_BOUND_PERCENT:.0f}% of a core in: "
                   f"{', '.join(bound)}; those figures may be the load generator's limit, not the server's")
    else:
        verdict = (f"Load side not the bottleneck: the busiest load worker used {busiest:.0f}% of a core "
                   f"at most (limit {LOAD_BOUND_PERCENT:.0f}%) in every measured phase")
    contended = [p["phase"] for p in phases if p.get("bottleneck") == "machine"]
    if contended:
        verdict += ("\nMachine-bound (every core busy, no process of the system or the load above 90% "
                    "of a core): "
                    f"{', '.join(contended)}; 'other processes' in the CPU table says how much of "
                    "the machine something else on it took")
    results["load_check"] = {"threshold_percent": LOAD_BOUND_PERCENT, "max_load_worker_percent": busiest,
                             "load_bound_phases": bound, "machine_bound_phases": contended,
                             "verdict": verdict, "phases": phases}

    report.write_json(results, args.out)
    report.render_chart(results, chart)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report.markdown_table(results))
    report.print_report(results)
    print(f"\nresults: {args.out}   chart: {chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
