"""Reconnect backoff (exponential with full jitter) and a client-side token bucket."""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field


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


class RateLimiter:
    """A token bucket (``rate`` frames per second, ``burst`` at once) that keeps the
    client under the gateway's per-connection limit (50/s, burst 100 by default)."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self._clock = float(rate), float(burst), clock
        self._tokens, self._at = float(burst), clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def try_take(self) -> bool:
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_time(self) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._refill()
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate
