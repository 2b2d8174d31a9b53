"""The gateway's call coalescing (skyeim/gateway/backends/batching.py): what callers of a
Batcher see, and how batches form. Runs in greenlets of this process; the
batch function stands for the service call."""
from __future__ import annotations

import gevent
import gevent.event
import pytest

from skyeim.gateway.backends.batching import BatchOverflow, Batcher, BatchTimeout


class Service:
    """Records every batch; answers each item with its double, or with the
    exception an item asks for; can be held to let calls queue up."""

    def __init__(self):
        self.batches: list[list] = []
        self.gate = gevent.event.Event()
        self.gate.set()

    def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        self.gate.wait(timeout=5)
        if "fail batch" in items:
            raise RuntimeError("the whole batch failed")
        return [ValueError(f"bad {i}") if isinstance(i, str) else i * 2 for i in items]


def batcher(service, **kw) -> Batcher:
    opts = {"max_batch": 8, "concurrency": 1, "queue_size": 100, "timeout": 5.0}
    return Batcher("test", service, **{**opts, **kw})


def test_a_lone_call_goes_out_at_once_and_alone():
    service = Service()
    b = batcher(service, linger=1.0)     # lingering is only for a busy batcher
    loop = gevent.get_hub().loop
    loop.update_now()                    # now() is cached: stale after the tests before this one
    started = loop.now()
    assert b.call(21) == 42
    assert gevent.get_hub().loop.now() - started < 0.5
    assert service.batches == [[21]]
    b.stop()


def behind_a_held_batch(service: Service, b: Batcher, make_calls) -> tuple:
    """Call 0 and hold its batch in the service; ``make_calls()`` spawns calls that
    queue behind it; then release and wait. Returns (call 0, the others)."""
    service.gate.clear()
    holder = gevent.spawn(b.call, 0)
    gevent.sleep(0.01)                  # batch [0] is in flight, held
    calls = make_calls()
    gevent.sleep(0.01)
    service.gate.set()
    gevent.joinall([holder, *calls], timeout=5)
    return holder, calls


def test_calls_made_while_a_batch_is_in_flight_share_the_next_batch():
    service = Service()
    b = batcher(service)
    holder, rest = behind_a_held_batch(service, b, lambda: [gevent.spawn(b.call, i) for i in range(1, 6)])
    assert [g.value for g in [holder, *rest]] == [0, 2, 4, 6, 8, 10]
    assert service.batches == [[0], [1, 2, 3, 4, 5]]
    b.stop()


def test_call_many_keeps_its_items_together_and_in_order():
    service = Service()
    b = batcher(service, max_batch=8)
    groups = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]      # 9 items: cannot all fit in 8
    _, calls = behind_a_held_batch(service, b, lambda: [gevent.spawn(b.call_many, g) for g in groups])
    assert [c.value for c in calls] == [[2, 4, 6], [8, 10, 12], [14, 16, 18]]
    # no group is split: the third waits for the next batch
    assert service.batches == [[0], [1, 2, 3, 4, 5, 6], [7, 8, 9]]
    b.stop()


def test_an_items_error_reaches_only_its_caller():
    service = Service()
    b = batcher(service)
    assert b.call_many([1, "x", 3])[0] == 2
    values = b.call_many([1, "x", 3])
    assert isinstance(values[1], ValueError) and values[2] == 6
    with pytest.raises(ValueError, match="bad y"):
        b.call("y")
    b.stop()


def test_a_failed_batch_fails_every_caller_in_it():
    service = Service()
    b = batcher(service)
    holder, calls = behind_a_held_batch(
        service, b, lambda: [gevent.spawn(b.call, 5), gevent.spawn(b.call, "fail batch")])
    assert holder.value == 0
    assert all(isinstance(c.exception, RuntimeError) for c in calls), [c.exception for c in calls]
    b.stop()


def test_a_full_queue_refuses_at_once_and_a_slow_batch_times_out():
    service = Service()
    b = batcher(service, queue_size=2, timeout=0.3)
    service.gate.clear()                # the service hangs (for 5 s)
    waiting = [gevent.spawn(b.call, 0)]
    gevent.sleep(0.01)                  # in flight
    waiting += [gevent.spawn(b.call, i) for i in (1, 2)]
    gevent.sleep(0.01)                  # queued: the queue is full
    with pytest.raises(BatchOverflow):
        b.call(99)
    gevent.joinall(waiting, timeout=5)
    assert all(isinstance(g.exception, BatchTimeout) for g in waiting)
    service.gate.set()
    b.stop()


def test_under_steady_calls_a_busy_batcher_lingers_for_company():
    def spaced_calls(linger: float) -> list[list]:
        service = Service()
        b = batcher(service, max_batch=64, linger=linger)
        calls = []
        for i in range(40):             # one call every 2 ms, each answered at once
            calls.append(gevent.spawn(b.call, i))
            gevent.sleep(0.002)
        gevent.joinall(calls, timeout=5)
        assert [c.value for c in calls] == [2 * i for i in range(40)]
        b.stop()
        return service.batches

    alone = spaced_calls(0.0)
    lingering = spaced_calls(0.02)
    assert len(alone) > 30, alone                       # nearly one batch per call
    assert len(lingering) < len(alone) / 3, lingering   # several calls per batch
