"""Failed-login limits: per username and per client address, in a sliding window.

A key (a username, lower-cased, or an address) that failed ``limit`` times in
the last ``window`` seconds is refused until its oldest counted failure leaves
the window. Refused attempts are not counted, so waiting always helps. Memory
is bounded: at most ``max_keys`` keys of each kind, the least recently failed
one forgotten first.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict, deque

from skyeim.config import LoginLimitConfig

MAX_KEY_LENGTH = 64   # a longer name cannot exist (32); a longer address is not one


class FailureWindow:
    def __init__(self, limit: int, window: float, max_keys: int, clock=time.monotonic):
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._clock = clock
        self._fails: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        times = self._fails.get(key)
        if times is None or len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window - self._clock())

    def fail(self, key: str) -> None:
        times = self._fails.get(key)
        if times is None:
            times = self._fails[key] = deque(maxlen=self.limit)   # only the last `limit` matter
            while len(self._fails) > self.max_keys:               # bounded: one over at most
                self._fails.popitem(last=False)
        else:
            self._fails.move_to_end(key)
        times.append(self._clock())

    def reset(self, key: str) -> None:
        self._fails.pop(key, None)

    def __len__(self) -> int:
        return len(self._fails)


class LoginLimiter:
    def __init__(self, cfg: LoginLimitConfig, clock=time.monotonic):
        self.users = FailureWindow(cfg.max_failures, cfg.window, cfg.max_tracked, clock)
        self.addresses = FailureWindow(cfg.max_address_failures, cfg.window, cfg.max_tracked, clock)

    def retry_after(self, username: str, address: str) -> int:
        """Whole seconds to wait (the Retry-After value), 0 when the attempt may go on."""
        wait = max(self.users.wait(_user_key(username)), self.addresses.wait(address[:MAX_KEY_LENGTH]))
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, username: str, address: str) -> None:
        self.users.fail(_user_key(username))
        self.addresses.fail(address[:MAX_KEY_LENGTH])

    def succeeded(self, username: str) -> None:
        """A right password clears the username's failures (not the address's)."""
        self.users.reset(_user_key(username))


def _user_key(username: str) -> str:
    return username.lower()[:MAX_KEY_LENGTH]
