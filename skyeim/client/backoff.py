"""Pacing: the reconnect backoff (exponential with full jitter), the client-side
token bucket, and the typing throttle."""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from skyeim.protocol import TokenBucket


@dataclass
class Backoff:
    """Delay before reconnect attempt ``n`` (1, 2, ...): uniform in
    ``[0, min(cap, base * factor ** (n - 1))]`` -- "full jitter", so that the
    clients of a restarted gateway come back spread out, not all at once.
    ``max_attempts`` None retries forever. A connection that stayed up
    ``reset_after`` seconds starts the next series from attempt 1 again."""
    base: float = 0.5
    cap: float = 30.0
    max_attempts: int | None = None
    factor: float = 2.0
    reset_after: float = 10.0
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base or self.factor < 1:
            raise ValueError("Backoff needs 0 < base <= cap and factor >= 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be None or >= 1")

    def ceiling(self, attempt: int) -> float:
        # min() before the power would overflow for large attempt numbers
        exp = min(attempt - 1, 64)
        return min(self.cap, self.base * self.factor ** exp)

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0.0, self.ceiling(attempt))


class RateLimiter(TokenBucket):
    """The client's pacing (skyeim.protocol's token bucket, the one the gateway
    enforces): ``rate`` frames per second, ``burst`` at once, so that the client
    stays under the gateway's per-connection limit (50/s, burst 100 by default)."""

    __slots__ = ()

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        super().__init__(rate, burst, clock)

    def try_take(self) -> bool:
        return self.take()


class TypingThrottle:
    """The same typing state to the same target goes out at most every ``interval``
    seconds; a change of state always goes. Remembers at most ``size`` targets."""

    def __init__(self, interval: float, size: int = 1024, clock=time.monotonic):
        self.interval, self.size, self.clock = interval, size, clock
        self._last: dict[Any, tuple[str, float]] = {}

    def allow(self, target: Any, state: str) -> bool:
        """True when ``state`` to ``target`` may go now (and is counted as sent)."""
        now = self.clock()
        last = self._last.get(target)
        if last is not None and last[0] == state and now - last[1] < self.interval:
            return False
        if len(self._last) >= self.size:          # bounded: forget the oldest target
            del self._last[next(iter(self._last))]
        self._last.pop(target, None)
        self._last[target] = (state, now)
        return True
