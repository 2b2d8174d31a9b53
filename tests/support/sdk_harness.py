"""Helpers for the SDK tests (test_client_*.py): reading frames from a Client.
The ``clients`` fixture (SDK clients closed after the test) is in conftest.py."""
from __future__ import annotations

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
