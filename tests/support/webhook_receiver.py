"""A real HTTP receiver in the test process, for webhooks (PROTOCOL.md 9.3) and the
before-send hook (9.4): what a team's application would run.

``Receiver(secret)`` listens on 127.0.0.1 on a free port (threads, one per
request). Every POST is recorded with its raw body, its parsed JSON and whether
its X-SkyeIM-Signature verifies with ``secret`` (skyeim.protocol.signatures, as a
receiver would check it). What it answers is set by the test:

- ``fail_next(n, status)``: the next n requests answer ``status`` (e.g. 500);
- ``hang()`` / ``release()``: requests wait (up to ``HANG_MAX`` s) until released;
- ``answer``: a function body-dict -> JSON-able answer (the hook's verdict); by
  default ``{"allow": true}`` (for webhooks an empty 200 works as well).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from skyeim.protocol.signatures import HEADER, verify_signature

HANG_MAX = 30.0        # s a hung request waits at most (so that the server can stop)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    signed_ok: bool
    at: float          # time.monotonic() when it arrived


class Receiver:
    def __init__(self, secret: str = ""):
        self.secret = secret
        self.received: list[Received] = []
        self.answer: Callable[[Any], Any] = lambda body: {"allow": True}
        self._lock = threading.Lock()
        self._fail: list[int] = []
        self._released = threading.Event()
        self._released.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):        # quiet
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                rec = Received(self.path, dict(self.headers.items()), raw, body,
                               verify_signature(raw, self.headers.get(HEADER), receiver.secret),
                               time.monotonic())
                with receiver._lock:
                    receiver.received.append(rec)
                    status = receiver._fail.pop(0) if receiver._fail else 200
                receiver._released.wait(HANG_MAX)
                out = json.dumps(receiver.answer(body) if status == 200 else
                                 {"code": "error", "message": "failing on purpose"}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:
                    pass                          # the caller gave up (timeout)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()

    # -- what the test sets ---------------------------------------------------------

    def fail_next(self, n: int, status: int = 500) -> None:
        with self._lock:
            self._fail.extend([status] * n)

    def hang(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    # -- what the test reads ----------------------------------------------------------

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.body for r in self.received]

    def events(self, event: str | None = None, **data: Any) -> list[dict]:
        """The distinct webhook events received (repeats of one id once), optionally of
        one kind whose data has the given items."""
        seen: dict[str, dict] = {}
        for b in self.bodies():
            if isinstance(b, dict) and "event" in b and b.get("id") not in seen:
                if (event is None or b["event"] == event) and \
                        all(b["data"].get(k) == v for k, v in data.items()):
                    seen[b["id"]] = b
        return list(seen.values())

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0,
                 what: str = "an event") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = predicate()
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {timeout:g}s; received: {self.bodies()[-10:]!r}")

    def wait_event(self, event: str, count: int = 1, timeout: float = 10.0,
                   **data: Any) -> list[dict]:
        return self.wait_for(lambda: (lambda e: e if len(e) >= count else None)(
            self.events(event, **data)), timeout, f"{count} x {event} {data or ''}")
