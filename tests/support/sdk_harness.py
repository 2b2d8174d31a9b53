"""Helpers for the SDK tests (test_client_*.py): reading frames from a Client;
a TCP proxy that cuts connections on purpose.
The ``clients`` fixture (SDK clients closed after the test) is in conftest.py."""
from __future__ import annotations

import socket
import threading
import time

from skyeim.client import Client

FAST = dict(base=0.05, cap=0.5)     # reconnect backoff for tests: quick, still jittered


def frames_until(client: Client, pred, timeout: float = 5.0) -> list:
    """Frames from the iterator up to and including the first one matching ``pred``."""
    out, deadline = [], time.monotonic() + timeout
    for _ in range(100_000):                  # bounded; the deadline ends it first
        f = client.next_frame(max(deadline - time.monotonic(), 0.001))
        out.append(f)
        if pred(f):
            return out
    raise AssertionError("no matching frame")


def next_of(client: Client, kind: type, timeout: float = 10.0, **match):
    """The next frame of class ``kind`` (with the given attribute values), skipping others."""
    frames = frames_until(client, lambda f: isinstance(f, kind) and all(
        getattr(f, k) == v for k, v in match.items()), timeout)
    return frames[-1]


def drain(client: Client, duration: float) -> list:
    """Every frame that arrives within ``duration`` seconds."""
    out, deadline = [], time.monotonic() + duration
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            out.append(client.next_frame(remaining))
        except TimeoutError:
            break
    return out


# -- connections cut on purpose ---------------------------------------------------------

class Proxy:
    """A TCP proxy to the gateway. ``blackhole(up=, down=)`` makes the current
    connections swallow bytes in a direction (client->gateway is up);
    ``cut()`` drops them; new connections always pass through."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.conns: list[dict] = []
        self.accepted = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            conn = {"c": c, "u": u, "up": False, "down": False}
            with self.lock:
                self.conns.append(conn)
                self.accepted += 1
            threading.Thread(target=self._pump, args=(conn, "c", "u", "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(conn, "u", "c", "down"), daemon=True).start()

    @staticmethod
    def _pump(conn: dict, src: str, dst: str, direction: str) -> None:
        while True:
            try:
                data = conn[src].recv(65536)
            except OSError:
                break
            if not data:
                break
            if conn[direction]:
                continue
            try:
                conn[dst].sendall(data)
            except OSError:
                break
        for k in ("c", "u"):
            try:
                conn[k].shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def blackhole(self, up: bool = False, down: bool = False) -> None:
        with self.lock:
            for conn in self.conns:
                conn["up"], conn["down"] = up, down

    def cut(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            for k in ("c", "u"):
                try:
                    conn[k].shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn[k].close()

    def close(self) -> None:
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)   # wakes the accept() (close alone does not)
        except OSError:
            pass
        self.lsock.close()
        self.cut()
