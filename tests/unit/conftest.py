"""Shared fixtures of the gateway's unit tests: pure logic, no processes, no sockets.

``gateway`` is the real composition root built from the default configuration
(service clients that are never called, a lone hub); ``registry`` is its one
table of client frame types."""
from __future__ import annotations

import pytest

from skyeim.config import GatewayConfig
from skyeim.gateway.composition import Gateway


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSink:
    """A connection as the hub sees it (routing.hub.Sink): what it was sent."""

    def __init__(self, user_id: int, platform: str = "unknown", gen: int = 0,
                 accepts: bool = True):
        self.user_id, self.platform, self.gen = user_id, platform, gen
        self.accepts = accepts
        self.sent: list = []

    def send(self, item, wait: float = 0.0) -> bool:
        if self.accepts:
            self.sent.append(item)
        return self.accepts

    def __repr__(self) -> str:
        return f"<FakeSink user={self.user_id} platform={self.platform}>"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def gateway() -> Gateway:
    return Gateway.from_config(GatewayConfig())


@pytest.fixture(scope="session")
def registry(gateway):
    return gateway.frames


@pytest.fixture
def sink():
    return FakeSink
