"""Smoke test of the benchmark tool: ``python -m skyeim.bench --quick`` end to end.

It starts its own systems (and the bare relay) on free ports, so it needs no
fixture; it checks that every scenario reported sane figures and that the
chart was written. The real figures are in docs/performance.md.
"""
from __future__ import annotations

import json
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
         "--out", str(out), "--chart", str(chart)],
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
