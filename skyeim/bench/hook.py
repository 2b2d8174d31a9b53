"""python -m skyeim.bench --hook: a chat's extra latency with the before-send hook on
(PROTOCOL.md 9.4).

A tiny local hook (a threaded HTTP server in this process that answers
``{"allow": true}`` at once) and two standalone systems, one after the other:
without the hook, then with ``Hooks.BeforeSend.Url`` pointing at it. Against
each, one connection sends ``--hook-chats`` chats one at a time (the next after
the previous one's ``ack`` ``sent``) to a second, online user; the time from the
send to the ``sent`` ack is recorded. The report: median, p95 and p99 of each
and their differences -- the hook's cost per chat (one hook call per chat; a
connection's burst of chats is asked concurrently). The hook server's own time
is near zero, so the difference is the gateway's HTTP round trip to it.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
import websocket

from skyeim.bench.system import ManagedSystem
from skyeim.tokens import issue

ALLOW = b'{"allow": true}'
WARMUP = 50           # chats before the measured ones (connections and pools warm up)


class _Allow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: without TCP_NODELAY the second waits for
    # the gateway's delayed ACK (40 ms), a cost of this server, not of the hook call
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ALLOW)))
        self.end_headers()
        self.wfile.write(ALLOW)


def start_hook_server() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Allow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/before-send"


def _recv_type(ws: websocket.WebSocket, kind: str) -> dict:
    while True:
        frame = json.loads(ws.recv())
        if frame.get("type") == kind:
            return frame["data"]


def measure(system: ManagedSystem, chats: int) -> list[float]:
    """Seconds from each chat's send to its `sent` ack, one chat at a time."""
    url = f"ws://127.0.0.1:{system.port}/ws?token="
    sender = websocket.create_connection(url + issue(system.secret, 1, 3600)[0], timeout=10)
    recipient = websocket.create_connection(url + issue(system.secret, 2, 3600)[0], timeout=10)
    try:
        _recv_type(sender, "connected")
        _recv_type(recipient, "connected")
        out: list[float] = []
        for i in range(WARMUP + chats):
            msg_id = str(uuid.uuid4())
            t0 = time.perf_counter()
            sender.send(json.dumps({"type": "chat", "data": {
                "msgId": msg_id, "toUserId": 2, "content": f"hook bench {i}"}}))
            while True:
                data = _recv_type(sender, "ack")
                if data["msgId"] == msg_id and data["status"] == "sent":
                    break
            if i >= WARMUP:
                out.append(time.perf_counter() - t0)
        return out
    finally:
        sender.close()
        recipient.close()


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def summary(values: list[float]) -> dict:
    return {"median_ms": round(statistics.median(values) * 1000, 3),
            "p95_ms": round(_pct(values, 95) * 1000, 3),
            "p99_ms": round(_pct(values, 99) * 1000, 3), "chats": len(values)}


def _hook_call_mean_ms(url: str) -> float | None:
    """The mean of the gateway's own skyeim_before_send_hook_seconds (allow calls)."""
    values = {}
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("skyeim_before_send_hook_seconds_") and 'outcome="allow"' in line:
            name, value = line.rsplit(" ", 1)
            values[name.split("{")[0].rsplit("_", 1)[1]] = float(value)
    if not values.get("count"):
        return None
    return round(values["sum"] / values["count"] * 1000, 3)


def run(chats: int, out: str, fd_limit: int = 4096, log_level: str = "warning") -> dict:
    server, hook_url = start_hook_server()
    workdir = Path(tempfile.mkdtemp(prefix="skyeim-bench-hook-"))
    results: dict = {"hook": "a local HTTP server answering {\"allow\": true} at once",
                     "chats": chats}
    try:
        for label, overrides in (("off", {}),
                                 ("on", {"Hooks": {"BeforeSend": {"Url": hook_url}}})):
            system = ManagedSystem("standalone", workdir, fd_limit=fd_limit, log_level=log_level,
                                   ws_overrides=overrides)
            system.start()
            try:
                results[label] = summary(measure(system, chats))
                if label == "on":
                    results["hook_call_mean_ms"] = _hook_call_mean_ms(system.metrics_url)
            finally:
                system.stop()
    finally:
        server.shutdown()
        server.server_close()
    results["extra_ms"] = {k: round(results["on"][k] - results["off"][k], 3)
                           for k in ("median_ms", "p95_ms", "p99_ms")}
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"before-send hook: {chats} chats one at a time, chat -> ack sent (ms)")
    print(f"{'':10}{'median':>10}{'p95':>10}{'p99':>10}")
    for label in ("off", "on", "extra_ms"):
        row = results[label] if label != "extra_ms" else results["extra_ms"]
        name = {"off": "hook off", "on": "hook on", "extra_ms": "extra"}[label]
        print(f"{name:10}{row['median_ms']:>10.2f}{row['p95_ms']:>10.2f}{row['p99_ms']:>10.2f}")
    print(f"the hook call itself (the gateway's histogram, mean): {results['hook_call_mean_ms']} ms")
    print(f"\nresults: {out}")
    return results
