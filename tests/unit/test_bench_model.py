"""skyeim/bench/model.py: per-unit costs from benchmark JSON and the sizing arithmetic."""
from __future__ import annotations

import pytest

from skyeim.bench import model


def run(nodes: int, rate: float, gateway_percent: float, services: int = 1) -> dict:
    server = {f"gateway-{k}": gateway_percent / nodes for k in range(1, nodes + 1)}
    server.update({"message": 50.0, "postgres (9 backends)": 20.0, "redis": 5.0})
    column = f"{nodes} node{'s' if nodes > 1 else ''}"
    return {"message_services": services, "scenarios": {
        "chat": {column: {"peak": {"throughput": rate, "cpu": {"server": server, "seconds": 6.0},
                                   "delivered_ack_ms": {"p50": 20.0}}}},
        "idle": {column: {"ok": 1000, "rss_kb_per_conn": 40.0, "idle_cpu_percent": 1.0,
                          "connect_cpu": {"server": {"gateway-1": 100.0, "friend": 10.0},
                                          "seconds": 2.0}}},
        "presence": {column: {"received": 1000, "last_online_ms": 50.0,
                              "cpu": {"server": {"gateway-1": 50.0, "redis": 10.0},
                                      "seconds": 0.2}}}}}


def test_processes_are_summed_by_kind():
    assert model.by_kind({"gateway-1": 30.0, "gateway-2": 20.0, "message-2": 5.0, "message": 5.0,
                          "postgres (12 backends)": 7.0}) == \
        {"gateway": 50.0, "message": 10.0, "postgres": 7.0}


def test_costs_per_chat_connect_and_notification():
    costs = model.fit([run(1, 10_000, 50.0), run(2, 5_000, 100.0)])
    one, two = costs["chat"]
    assert one["us_per_chat"]["gateway"] == pytest.approx(50.0)     # 50% of a core / 10,000/s
    assert two["us_per_chat"]["gateway"] == pytest.approx(200.0)    # 100% / 5,000/s
    assert costs["connect"][0]["ms_per_connect"]["gateway"] == pytest.approx(2.0)   # 2 s at 100% / 1000
    assert costs["presence"][0]["us_per_notification"]["gateway"] == pytest.approx(100.0)
    m = model.model(costs)
    assert m["us_per_chat"]["gateway"] == pytest.approx(200.0)      # cross-node runs only
    assert m["kb_per_conn"] == 40.0


def test_sizing_counts_cores_at_the_planned_utilisation_and_memory():
    m = {"us_per_chat": dict.fromkeys(model.KINDS, 0.0), "ms_per_connect": dict.fromkeys(model.KINDS, 0.0),
         "us_per_notification": dict.fromkeys(model.KINDS, 0.0), "kb_per_conn": 40.0}
    m["us_per_chat"]["gateway"] = 120.0          # 100,000/s x 120 µs = 12 cores busy
    plan = model.size(m, 1_000_000, 100_000, 0, 0)
    assert plan["cores"]["gateway"] == pytest.approx(12 / model.TARGET_UTILISATION)
    assert plan["gateways_by_cpu"] == 20
    assert plan["gateways_by_memory"] == 5       # 40 GB of connections / 8 GB per process
    assert plan["gateways"] == 20
