"""Coalescing of concurrent service calls into batch calls.

Under load, hundreds of greenlets each want one small thing from a service at
the same moment (store this chat, give me that user's friends). One HTTP
request each costs far more CPU, on both sides, than the work itself, and a
SQLite commit each is slower still. A Batcher lets each caller block as if it
made its own call, while a few worker greenlets take whatever has queued up
since their last call and send it as one batch request.

There is no timer: a lone call goes out at once (no added latency when idle),
and batches grow by themselves while earlier ones are in flight.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Generic, Sequence, TypeVar

import gevent
from gevent.event import AsyncResult
from gevent.queue import Empty, Full, Queue

log = logging.getLogger(__name__)

T = TypeVar("T")

_STOP = object()


class BatchOverflow(Exception):
    """The batch queue is full: the service is far behind; the caller should shed load."""


class BatchTimeout(Exception):
    """No answer within the caller's bound (the batch may still complete later)."""


class Batcher(Generic[T]):
    """``call(item)`` blocks until ``send_batch([... item ...])`` has answered for it.

    ``send_batch`` takes a list of items and returns a list of the same length
    whose entries are results, or exceptions to raise in that item's caller.
    If it raises, every caller of that batch gets the exception.
    """

    def __init__(self, name: str, send_batch: Callable[[list[T]], Sequence[Any]], *,
                 max_batch: int, concurrency: int, queue_size: int, timeout: float):
        self.name = name
        self.send_batch = send_batch
        self.max_batch = max_batch
        self.timeout = timeout          # s a caller waits, queueing included
        self.queue: Queue = Queue(maxsize=queue_size)
        self.workers = [gevent.spawn(self._work) for _ in range(concurrency)]

    def call(self, item: T) -> Any:
        result = AsyncResult()
        try:
            self.queue.put_nowait((item, result))
        except Full:
            raise BatchOverflow(f"{self.name}: {self.queue.maxsize} calls already queued") from None
        try:
            value = result.get(timeout=self.timeout)
        except gevent.Timeout:
            raise BatchTimeout(f"{self.name}: no answer in {self.timeout:g} s") from None
        if isinstance(value, BaseException):
            raise value
        return value

    def _work(self) -> None:
        # Ends when stop() queues one _STOP per worker; each pass is bounded by max_batch.
        while True:
            first = self.queue.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self.queue.get_nowait()
                except Empty:
                    break
                if nxt is _STOP:
                    self.queue.put(_STOP)    # give it back; this worker ends after its batch
                    break
                batch.append(nxt)
            self._send(batch)

    def _send(self, batch: list[tuple[T, AsyncResult]]) -> None:
        try:
            results = self.send_batch([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} calls")
        except Exception as e:          # the whole batch failed: every caller hears why
            for _, waiter in batch:
                waiter.set(e)
            return
        for (_, waiter), value in zip(batch, results):
            waiter.set(value)

    def stop(self, timeout: float = 1.0) -> None:
        """Let the workers finish what is queued, then end them."""
        for _ in self.workers:
            try:
                self.queue.put(_STOP, timeout=timeout)
            except Full:
                break
        gevent.joinall(self.workers, timeout=timeout)
        gevent.killall(self.workers, block=False)
