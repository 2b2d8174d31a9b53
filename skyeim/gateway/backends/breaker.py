"""A circuit breaker per backend endpoint.

A dead or stalled service would otherwise cost every caller a full RPC
timeout, and tie up one greenlet (and one socket) per caller meanwhile. After
``failures`` consecutive failures (timeout, connection error, 5xx) of one
endpoint its breaker opens: calls to it fail at once for a cool-off that
starts at ``cooldown`` and doubles on every failed trial up to
``max_cooldown``. When the cool-off has passed, one trial call goes through
(half-open); its success closes the breaker, its failure opens it again.

The clock is injectable, so that the state machine can be tested without sleeps.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = 0, 1, 2           # also the values of the metrics gauge
STATE_NAMES = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half-open"}


class CircuitBreaker:
    __slots__ = ("name", "failures", "cooldown", "max_cooldown", "clock", "on_change",
                 "state", "consecutive", "current_cooldown", "retry_at")

    def __init__(self, name: str, failures: int, cooldown: float, max_cooldown: float,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[["CircuitBreaker", int], None] | None = None):
        self.name = name
        self.failures = failures            # 0: never opens
        self.cooldown = cooldown            # s, the first cool-off
        self.max_cooldown = max(max_cooldown, cooldown)
        self.clock = clock
        self.on_change = on_change
        self.state = CLOSED
        self.consecutive = 0
        self.current_cooldown = cooldown
        self.retry_at = 0.0                 # monotonic time of the next trial call

    def allow(self) -> bool:
        """May a call go to this endpoint now? In half-open, only one per cool-off."""
        if self.state == CLOSED:
            return True
        now = self.clock()
        if now < self.retry_at:
            return False
        # let this one call through as the trial; the others keep failing fast until
        # it reports back (or, if it never does, until the next cool-off has passed)
        self.retry_at = now + self.current_cooldown
        self._set(HALF_OPEN)
        return True

    def success(self) -> None:
        self.consecutive = 0
        if self.state != CLOSED:
            self.current_cooldown = self.cooldown
            self._set(CLOSED)

    def failure(self) -> None:
        if self.failures <= 0:
            return
        self.consecutive += 1
        if self.state == HALF_OPEN:           # the trial failed: wait longer next time
            self.current_cooldown = min(self.current_cooldown * 2, self.max_cooldown)
        elif self.state == CLOSED and self.consecutive < self.failures:
            return
        self.retry_at = self.clock() + self.current_cooldown
        self._set(OPEN)

    def _set(self, state: int) -> None:
        if state == self.state:
            return
        old, self.state = self.state, state
        if state == OPEN and old == CLOSED:
            log.warning("%s: circuit open after %d consecutive failures; calls fail at once "
                        "for %.1fs", self.name, self.consecutive, self.current_cooldown)
        elif state == CLOSED:
            log.warning("%s: circuit closed, the endpoint answers again", self.name)
        if self.on_change is not None:
            self.on_change(self, old)


class EndpointBreakers:
    """One CircuitBreaker per endpoint of a service, reporting to the gateway's metrics
    (a GatewayMetrics, or None)."""

    def __init__(self, service: str, bases: list[str], failures: int, cooldown_ms: int,
                 max_cooldown_ms: int, metrics: Any = None,
                 clock: Callable[[], float] = time.monotonic):
        self.service = service
        self._metrics = metrics
        self.by_base = {base: CircuitBreaker(f"{service} service {base}", failures,
                                             cooldown_ms / 1000.0, max_cooldown_ms / 1000.0,
                                             clock, functools.partial(self._changed, base))
                        for base in bases}

    def allow(self, base: str) -> bool:
        if self.by_base[base].allow():
            return True
        m = self._metrics
        if m is not None:
            m.breaker_refusals.labels(self.service).inc()
        return False

    def success(self, base: str) -> None:
        self.by_base[base].success()

    def failure(self, base: str) -> None:
        self.by_base[base].failure()

    def _changed(self, base: str, breaker: CircuitBreaker, old: int) -> None:
        m = self._metrics
        if m is None:
            return
        m.breaker_state.labels(self.service, base).set(breaker.state)
        if breaker.state == OPEN and old == CLOSED:
            m.breaker_opens.labels(self.service, base).inc()
