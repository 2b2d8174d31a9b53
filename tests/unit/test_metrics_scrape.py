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


PROBE = """
from gevent import monkey; monkey.patch_all()
import threading, gevent.monkey
from skyeim.metrics import GatewayMetrics
native = type(gevent.monkey.get_original("threading", "Lock")())
assert type(threading.Lock()) is not native            # patched, as in every program
m = GatewayMetrics()
m.frame_out("chat")
assert type(m.frames_out.labels("chat")._value._lock) is native
assert type(m.sent_latency._sum._lock) is native
assert type(m.frames_out._lock) is native
print("native")
"""


def test_counters_and_histograms_take_the_os_lock_not_the_gevent_one():
    """Per frame and per chat the gateway adds to counters and histograms; in a
    monkey-patched program their value locks must still be the OS lock
    (skyeim.metrics says why). Fails loudly if prometheus_client stops binding
    ``Lock`` where skyeim.metrics swaps it."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "native", out.stderr
