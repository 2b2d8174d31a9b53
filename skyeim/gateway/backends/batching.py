"""Coalescing of concurrent service calls into batch calls.

Under load, hundreds of greenlets each want one small thing from a service at
the same moment (store this chat, give me that user's friends). One HTTP
request each costs far more CPU, on both sides, than the work itself, and a
SQLite commit each is slower still. A Batcher lets each caller block as if it
made its own call, while a few worker greenlets take whatever has queued up
since their last call and send it as one batch request.

A lone call goes out at once (no added latency when idle), and batches grow
by themselves while earlier ones are in flight. Under a steady load that is
not enough: calls spread evenly in time would go out in batches of one or two,
each paying a whole HTTP request and a commit, and the CPU that costs makes
everything slower. So while calls keep coming (a batch went out less than
BUSY_WINDOW ago), a worker lingers ``linger`` seconds for more before sending:
group commit, bounded by a couple of milliseconds.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Generic, Sequence, TypeVar

import gevent
from gevent.event import AsyncResult
from gevent.queue import Empty, Full, Queue

log = logging.getLogger(__name__)

T = TypeVar("T")

_STOP = object()

# A batch that went out less than this long ago (s) means calls are flowing:
# the next one lingers for company instead of leaving alone.
BUSY_WINDOW = 0.05


class BatchOverflow(Exception):
    """The batch queue is full: the service is far behind; the caller should shed load."""


class BatchTimeout(Exception):
    """No answer within the caller's bound (the batch may still complete later)."""


def collect(queue: Queue, first: Any, max_batch: int, linger: float = 0.0, last_batch: float = 0.0,
            weight: Callable[[Any], int] = lambda entry: 1) -> list:
    """``first`` and the entries queued behind it while their total ``weight``
    stays within ``max_batch``. If the previous batch went out (``last_batch``,
    monotonic s) less than BUSY_WINDOW ago, wait ``linger`` s once for more
    while there is room. A stop marker met in the queue stays there (its
    worker ends after this batch)."""
    if time.monotonic() - last_batch >= BUSY_WINDOW:
        linger = 0.0                    # calls are not flowing: go out at once
    batch, total = [first], weight(first)
    for wait in (0.0, linger):
        if wait:
            if total >= max_batch:
                break
            gevent.sleep(wait)
        while total < max_batch:
            try:
                nxt = queue.peek_nowait()
            except Empty:
                break
            if nxt is _STOP:
                return batch
            if total + weight(nxt) > max_batch:
                return batch
            queue.get_nowait()
            batch.append(nxt)
            total += weight(nxt)
    return batch


class Batcher(Generic[T]):
    """``call(item)`` blocks until ``send_batch([... item ...])`` has answered for it;
    ``call_many(items)`` does the same for several items that go in one batch,
    in their order (a client's burst of chats keeps its order).

    ``send_batch`` takes a list of items and returns a list of the same length
    whose entries are results, or exceptions to raise in that item's caller.
    If it raises, every caller of that batch gets the exception.
    """

    def __init__(self, name: str, send_batch: Callable[[list[T]], Sequence[Any]], *,
                 max_batch: int, concurrency: int, queue_size: int, timeout: float,
                 on_batch: Callable[[str, int], None] | None = None, linger: float = 0.0):
        self.name = name
        self.send_batch = send_batch
        self.on_batch = on_batch        # told (name, size) of every batch: the metrics
        self.linger = linger            # s a batch may wait for more calls while busy
        self._last_batch = 0.0          # monotonic time the last batch went out
        self.max_batch = max_batch
        self.timeout = timeout          # s a caller waits, queueing included
        self.queue: Queue = Queue(maxsize=queue_size)   # entries: (items, AsyncResult)
        self.workers = [gevent.spawn(self._work) for _ in range(concurrency)]

    def call(self, item: T) -> Any:
        value = self.call_many([item])[0]
        if isinstance(value, BaseException):
            raise value
        return value

    def call_many(self, items: list[T]) -> list[Any]:
        """Results (or exceptions, returned) for ``items``, sent in one batch.
        Raises BatchOverflow or BatchTimeout for all of them, or the batch's error."""
        if not 0 < len(items) <= self.max_batch:
            raise ValueError(f"{self.name}: 1 to {self.max_batch} items per call")
        result = AsyncResult()
        try:
            self.queue.put_nowait((items, result))
        except Full:
            raise BatchOverflow(f"{self.name}: {self.queue.maxsize} calls already queued") from None
        try:
            values = result.get(timeout=self.timeout)
        except gevent.Timeout:
            raise BatchTimeout(f"{self.name}: no answer in {self.timeout:g} s") from None
        if isinstance(values, BaseException):
            raise values
        return values

    def _work(self) -> None:
        # Ends when stop() queues one _STOP per worker; each pass is bounded by max_batch.
        while True:
            first = self.queue.get()
            if first is _STOP:
                return
            batch = collect(self.queue, first, self.max_batch, self.linger, self._last_batch,
                            weight=lambda entry: len(entry[0]))
            self._last_batch = time.monotonic()
            self._send(batch)

    def _send(self, batch: list[tuple[list[T], AsyncResult]]) -> None:
        items = [item for entry_items, _ in batch for item in entry_items]
        if self.on_batch is not None:
            self.on_batch(self.name, len(items))
        try:
            results = self.send_batch(items)
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(items)} calls")
        except Exception as e:          # the whole batch failed: every caller hears why
            for _, waiter in batch:
                waiter.set(e)
            return
        start = 0
        for entry_items, waiter in batch:
            waiter.set(list(results[start:start + len(entry_items)]))
            start += len(entry_items)

    def stop(self, timeout: float = 1.0) -> None:
        """Let the workers finish what is queued, then end them."""
        for _ in self.workers:
            try:
                self.queue.put(_STOP, timeout=timeout)
            except Full:
                break
        gevent.joinall(self.workers, timeout=timeout)
        gevent.killall(self.workers, block=False)
