"""The circuit breaker's state machine (skyeim/gateway/backends/breaker.py), on a clock
the test moves by hand; its effect on real processes is in test_faults.py."""
from __future__ import annotations

from skyeim.gateway.backends.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(failures: int = 3, cooldown: float = 1.0, max_cooldown: float = 10.0):
    clock = Clock()
    return CircuitBreaker("test", failures, cooldown, max_cooldown, clock), clock


def test_opens_after_n_consecutive_failures_only():
    b, _ = breaker(failures=3)
    b.failure(); b.failure()
    assert b.state == CLOSED and b.allow()
    b.success()                       # the run is broken: counting starts again
    b.failure(); b.failure()
    assert b.state == CLOSED
    b.failure()
    assert b.state == OPEN
    assert not b.allow()


def test_half_open_lets_one_trial_through_per_cooldown():
    b, clock = breaker(failures=1, cooldown=1.0)
    b.failure()
    clock.now += 0.99
    assert not b.allow()
    clock.now += 0.02
    assert b.allow()                  # the trial
    assert b.state == HALF_OPEN
    assert not b.allow() and not b.allow()   # everyone else still fails fast
    b.success()
    assert b.state == CLOSED and b.allow() and b.allow()


def test_failed_trials_double_the_cooldown_up_to_the_max():
    b, clock = breaker(failures=1, cooldown=1.0, max_cooldown=5.0)
    b.failure()
    waits = []
    for _ in range(5):
        start = clock.now
        while not b.allow():
            clock.now += 0.25
        waits.append(clock.now - start)
        b.failure()                   # the trial fails
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    clock.now += 5.0
    assert b.allow()
    b.success()                       # recovery resets the cool-off
    b.failure()
    clock.now += 1.0
    assert b.allow()


def test_a_trial_that_never_reports_back_does_not_wedge_the_breaker():
    b, clock = breaker(failures=1, cooldown=1.0)
    b.failure()
    clock.now += 1.0
    assert b.allow()                  # the trial's greenlet is killed: no success, no failure
    assert not b.allow()
    clock.now += 1.0
    assert b.allow()                  # another trial after the next cool-off


def test_zero_failures_means_never_open():
    b, _ = breaker(failures=0)
    for _ in range(100):
        b.failure()
    assert b.state == CLOSED and b.allow()
