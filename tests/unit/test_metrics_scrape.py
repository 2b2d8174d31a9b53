"""A /metrics scrape never walks the whole heap (issue 12): with 20,000 connections a
gc.get_objects() per scrape was a pause of every connection, every scrape."""
from __future__ import annotations

import gc

from prometheus_client import generate_latest

from skyeim.metrics import GatewayMetrics


def test_a_scrape_of_the_gateway_registry_does_not_walk_the_heap(monkeypatch):
    metrics = GatewayMetrics()
    metrics.count_greenlets(lambda: 7)

    def walk(*a, **kw):
        raise AssertionError("gc.get_objects() during a scrape")

    monkeypatch.setattr(gc, "get_objects", walk)
    text = generate_latest(metrics.registry).decode()
    assert "skyeim_greenlets 7.0" in text
