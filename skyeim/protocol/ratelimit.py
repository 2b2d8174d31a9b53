"""A token bucket: the per-connection frame rate, the typing rate, the SDK's pacing."""
from __future__ import annotations

import time


class TokenBucket:
    """``rate`` tokens a second refill up to ``burst``; ``take()`` spends one if there is one."""

    __slots__ = ("rate", "burst", "tokens", "at", "clock")

    def __init__(self, rate: float, burst: float, clock=time.monotonic):
        self.rate, self.burst, self.clock = float(rate), float(burst), clock
        self.tokens, self.at = float(burst), clock()

    def _refill(self) -> float:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return self.tokens

    def take(self) -> bool:
        # the refill written out: this runs for every client frame
        now = self.clock()
        tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False

    def wait_time(self) -> float:
        """Seconds until a token is there (0 when one is)."""
        missing = 1.0 - self._refill()
        return 0.0 if missing <= 0 else missing / self.rate
