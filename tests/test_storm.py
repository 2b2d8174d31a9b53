"""A reconnect storm after a restart: far more clients than WebSocket.MaxConnections
hand-shake at the same instant (from a separate process, tests/support/storm_client.py).

The gateway stays up and answers /healthz throughout, upgrades exactly up to
the limit, refuses every other handshake with 503 `overloaded` (none hangs,
none is reset), and serves normally afterwards.

SKYEIM_STORM_CLIENTS (default 2000) and SKYEIM_STORM_LIMIT (default 1500)
size it; the defaults are what a loaded 2-core machine handles in about a minute.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from harness import REPO, reap, wait_until
from load_harness import process_figures, scrape

CLIENTS = int(os.environ.get("SKYEIM_STORM_CLIENTS", "2000"))
LIMIT = int(os.environ.get("SKYEIM_STORM_LIMIT", "1500"))


class HealthProbe(threading.Thread):
    """GET /healthz every half second until stopped; records (status, seconds)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.answers = url, []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.5):
            t0 = time.monotonic()
            try:
                status = requests.get(self.url + "/healthz", timeout=10).status_code
            except requests.RequestException as e:
                status = type(e).__name__
            self.answers.append((status, time.monotonic() - t0))

    def finish(self) -> list:
        self._halt.set()
        self.join(15)
        return self.answers


@pytest.mark.timeout(300)
def test_reconnect_storm_beyond_max_connections(system_factory, tmp_path):
    s = system_factory(standalone=False, ws={"WebSocket": {"MaxConnections": LIMIT}})
    # "after a restart": the storm hits a gateway that has just come up
    s.stop_process("gateway")
    s._spawn("gateway", [sys.executable, "wsserver.py", "-f", str(s.paths["ws"])])
    s.wait_ready()
    tokens = tmp_path / "tokens"
    tokens.write_text("\n".join(s.minted_user(f"storm{i}").token for i in range(CLIENTS)))

    probe = HealthProbe(s.url)
    probe.start()
    storm = subprocess.Popen([sys.executable, str(REPO / "tests" / "support" / "storm_client.py"),
                              s.host, str(s.port), str(tokens)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = storm.stdout.readline()          # bounded: the client gives up after ~90 s
        result = json.loads(line)
        held = scrape(s.metrics_url)["skyeim_ws_connections"]
        figures = process_figures(s.metrics_url)
    finally:
        health = probe.finish()
        if storm.poll() is None:
            storm.stdin.write("done\n")
            storm.stdin.flush()
        reap(storm, 30)
    print(f"\nstorm of {CLIENTS} with MaxConnections {LIMIT}: {result}; "
          f"held {held:.0f}; gateway {figures}; /healthz during it: "
          f"{len(health)} probes, slowest {max((t for _, t in health), default=0):.2f}s")

    outcomes = result["outcomes"]
    assert result["answered"] == CLIENTS
    assert outcomes.get("101") == LIMIT, outcomes
    assert outcomes.get("503 overloaded") == CLIENTS - LIMIT, outcomes
    assert set(outcomes) == {"101", "503 overloaded"}, outcomes     # no hang, reset, 5xx else
    assert held == LIMIT
    assert health and all(status == 200 for status, _ in health), health
    assert s.procs["gateway"].poll() is None

    # the storm is over: every slot comes free, and the gateway serves as before
    wait_until(lambda: scrape(s.metrics_url)["skyeim_ws_connections"] == 0, timeout=60)
    alice, bob = s.minted_user("after_a"), s.minted_user("after_b")
    ca, cb = s.connect(alice), s.connect(bob)
    mid = ca.chat(bob, "after the storm")
    ca.expect_ack(mid, "sent")
    assert cb.expect("chat")["msgId"] == mid
    assert s.stop_process("gateway", signal.SIGTERM) == 0
