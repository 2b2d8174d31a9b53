"""Smoke test of the benchmark tool: ``python -m skyeim.bench --quick`` end to end.

It starts its own systems (and the bare relay) on free ports, so it needs no
fixture; it checks that every scenario reported sane figures and that the
chart was written. The real figures are in docs/performance.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytest.importorskip("matplotlib", reason="the benchmark needs skyeim/bench/requirements.txt")


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@pytest.mark.timeout(240)
def test_quick_benchmark_runs_every_scenario_with_the_baseline(tmp_path):
    out, chart = tmp_path / "results.json", tmp_path / "chart.png"
    proc = subprocess.run(
        [sys.executable, "-m", "skyeim.bench", "--quick", "--scenario", "all", "--baseline",
         "--open-loop-rates", "40", "--out", str(out), "--chart", str(chart)],
        cwd=REPO, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads(out.read_text())
    sc = results["scenarios"]
    assert set(sc) == {"idle", "chat", "storm", "backlog", "presence"}

    idle = sc["idle"]
    for which in ("gateway", "relay"):
        fig = idle[which]
        assert fig["ok"] == fig["connections"] > 0 and fig["failed"] == 0, fig["outcomes"]
        assert positive(fig["rate_per_s"]) and positive(fig["connect_ms"]["p99"])
        assert fig["rss_kb_per_conn"] is not None and fig["idle_cpu_percent"] >= 0

    for which, basis in (("gateway", "delivered_ack_ms"), ("relay", "receive_ms")):
        chat = sc["chat"][which]
        assert chat["levels"], chat
        for level in chat["levels"]:
            assert positive(level["throughput"]), level
            assert level["failed"] == 0 and level["incomplete"] == 0 and not level["errors"], level
            assert 0 < level[basis]["p50"] <= level[basis]["p99"] <= level[basis]["p999"], level
        assert positive(chat["half_rate"]["throughput"]), chat["half_rate"]
        [fixed] = chat["open_loops"]                 # --open-loop-rates 40
        assert fixed["target_rate"] == 40 and positive(fixed["throughput"]), fixed
        assert fixed["failed"] == 0 and 0 < fixed[basis]["p50"] <= fixed[basis]["p99"], fixed
    gw_peak = sc["chat"]["gateway"]["peak"]
    assert 0 < gw_peak["sent_ack_ms"]["p50"] <= gw_peak["delivered_ack_ms"]["p50"]

    for which in ("gateway", "relay"):
        storm = sc["storm"][which]
        assert storm["ok"] == storm["clients"] and storm["refused"] == 0, storm["outcomes"]
        assert positive(storm["all_connected_s"])

    backlog = sc["backlog"]["gateway"]
    assert backlog["all_received"] and backlog["distinct"] == backlog["messages"] == backlog["unread_pushed"]
    assert positive(backlog["connected_s"]) and positive(backlog["push_rate_per_s"])

    presence = sc["presence"]["gateway"]
    assert presence["received"] == presence["friends"] == presence["online_friends_in_connected"]
    assert presence["missing"] == 0 and positive(presence["all_online_ms"])

    check = results["load_check"]
    assert check["phases"] and "verdict" in check
    assert all(p["max_load_worker"] >= 0 for p in check["phases"])
    assert results["meta"]["machine"]["nproc"] >= 1

    assert chart.exists() and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
    assert "gateway/relay" in proc.stdout        # the table, with ratios
    assert "delivered latency p99, open loop at 40 msg/s" in proc.stdout


def _cluster_unavailable() -> str | None:
    """Why the cluster target cannot run here (no redis-server, no PostgreSQL), or None."""
    import shutil

    import sqlalchemy as sa
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    url = os.environ.get("SKYEIM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.SQLAlchemyError as e:
        return f"PostgreSQL not reachable at {url}: {str(getattr(e, 'orig', e)).strip().splitlines()[0]}"
    finally:
        engine.dispose()
    return None


@pytest.mark.timeout(240)
def test_quick_benchmark_of_a_cluster_spreads_the_pairs_over_the_nodes(tmp_path):
    reason = _cluster_unavailable()
    if reason:
        if os.environ.get("SKYEIM_REQUIRE_SERVICES") == "1":
            pytest.fail(f"SKYEIM_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(f"{reason}; the cluster benchmark needs redis-server and PostgreSQL")
    out = tmp_path / "cluster.json"
    proc = subprocess.run(
        [sys.executable, "-m", "skyeim.bench", "--quick", "--target", "cluster", "--nodes", "1,2",
         "--scenario", "idle,chat", "--out", str(out), "--markdown", str(tmp_path / "table.md")],
        cwd=REPO, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads(out.read_text())
    assert results["meta"]["columns"] == ["1 node", "2 nodes"] and results["meta"]["nodes"] == [1, 2]
    sc = results["scenarios"]
    assert set(sc) == {"idle", "chat"} and all(set(v) == {"1 node", "2 nodes"} for v in sc.values())

    for col, per_node in (("1 node", [100]), ("2 nodes", [50, 50])):
        idle = sc["idle"][col]
        assert idle["ok"] == idle["connections"] == 100 and idle["failed"] == 0, idle["outcomes"]
        assert idle["held_per_node"] == per_node         # user uid on node uid % nodes
        assert idle["rss_kb_per_conn"] is not None
        chat = sc["chat"][col]
        assert chat["levels"], chat
        for level in chat["levels"]:                     # with 2 nodes every pair crosses Redis
            assert positive(level["throughput"]), level
            assert level["failed"] == 0 and level["incomplete"] == 0 and not level["errors"], level
            assert 0 < level["delivered_ack_ms"]["p50"] <= level["delivered_ack_ms"]["p99"], level
        assert not chat["log_warnings"]["measuring"], chat["log_warnings"]

    phases = results["load_check"]["phases"]
    assert {p["phase"].rsplit("(", 1)[1] for p in phases} == {"1-node cluster)", "2-node cluster)"}
    two = [p for p in phases if p["phase"].endswith("(2-node cluster)")][0]
    assert {"gateway-1", "gateway-2", "message", "friend", "auth", "redis"} <= set(two["server"]), two
    assert any(k.startswith("postgres (") for k in two["server"]), two["server"]
    assert "2 nodes/1 node" in proc.stdout                  # the table, with the scaling ratio
    assert "| 1 node | 2 nodes | 2 nodes / 1 node |" in (tmp_path / "table.md").read_text()


@pytest.mark.timeout(180)
def test_hook_option_reports_the_extra_latency_of_the_before_send_hook(tmp_path):
    out = tmp_path / "hook.json"
    proc = subprocess.run(
        [sys.executable, "-m", "skyeim.bench", "--hook", "--hook-chats", "30", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=160)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads(out.read_text())
    for label in ("off", "on"):
        assert results[label]["chats"] == 30
        assert all(positive(results[label][k]) for k in ("median_ms", "p95_ms", "p99_ms"))
    assert set(results["extra_ms"]) == {"median_ms", "p95_ms", "p99_ms"}
    assert positive(results["hook_call_mean_ms"])      # the hook was really called
    assert "hook on" in proc.stdout and "extra" in proc.stdout
