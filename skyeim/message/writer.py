"""Group commit of the Message service's hot writes: chats and delivery records.

Every chat costs two writes: its row (the `sent` ack waits for it) and, once
it reached a socket, its delivery record (the `delivered` ack waits for that).
Each request used to be its own transaction, and the gateway kept one request
of each kind in flight, so a chat waited its turn about four times: behind the
send batch in flight, for its own, and the same again for its delivery record,
with sends and delivery records taking turns on the one SQLite writer.

Here requests do not open transactions. They queue their work and wait; a
writer greenlet takes everything queued (send batches and delivery batches of
any number of requests, from any number of gateways) and stores it in ONE
transaction: all the chats in one ``send_messages`` (one global lock order on
PostgreSQL, as the store wants), then all the delivery records, one commit.
While it commits, the next requests are parsed and queue up for the next
cycle, so the gateway can keep several requests in flight without them
waiting on each other's transactions.

A cycle that fails as a whole (one bad item makes the merged statements fail,
a deadlock on PostgreSQL) is redone request by request, each in its own
transaction, so one request's failure is never another's. Every wait has a
bound: the queue's size, a cycle's items, the caller's timeout.
"""
from __future__ import annotations

import logging
from typing import Any

import gevent
from gevent.event import AsyncResult
from gevent.queue import Empty, Full, Queue

from skyeim.db import Database, DatabaseUnavailable
from skyeim.message import store

log = logging.getLogger(__name__)

SEND, DELIVER = "send", "deliver"


class WriterBusy(DatabaseUnavailable):
    """The writer's queue is full: the database is far behind (503, retry)."""


class MessageWriter:
    QUEUE_SIZE = 2_000         # requests waiting for a cycle
    CYCLE_ITEMS = 4_000        # chats + delivery keys one transaction takes at most
    TIMEOUT = 30.0             # s a request waits for its cycle (the store's own bound)

    def __init__(self, db: Database, writers: int = 1):
        self.db = db
        self.queue: Queue = Queue(maxsize=self.QUEUE_SIZE)
        # SQLite has one writer anyway (one thread, one connection); PostgreSQL takes
        # several transactions side by side, each a group of whatever queued meanwhile
        self.workers = [gevent.spawn(self._work) for _ in range(writers)]

    # -- what the routes call -----------------------------------------------------

    def send(self, msgs: list[store.NewMessage]) -> list[tuple[Any, bool]]:
        """store.send_messages(msgs), committed with whatever else is pending."""
        return self._submit(SEND, msgs, len(msgs))

    def deliver(self, deliveries: list[tuple[int, list[tuple[int, str]]]]
                ) -> list[list[tuple[int, str, int]]]:
        """store.mark_delivered_many(deliveries), committed with whatever else is pending."""
        return self._submit(DELIVER, deliveries, sum(len(keys) for _, keys in deliveries))

    def close(self) -> None:
        gevent.killall(self.workers, block=True, timeout=1.0)

    def _submit(self, kind: str, payload: list, size: int):
        result = AsyncResult()
        try:
            self.queue.put_nowait((kind, payload, max(1, size), result))
        except Full:
            raise WriterBusy(f"{self.QUEUE_SIZE} write requests already waiting") from None
        try:
            ok, value = result.get(timeout=self.TIMEOUT)
        except gevent.Timeout:
            raise DatabaseUnavailable(f"no commit within {self.TIMEOUT:g} s") from None
        if not ok:
            raise value
        return value

    # -- the writer ----------------------------------------------------------------

    def _work(self) -> None:
        while True:                 # for the life of the process; each cycle bounded by CYCLE_ITEMS
            group = [self.queue.get()]
            total = group[0][2]
            while total < self.CYCLE_ITEMS:
                try:
                    nxt = self.queue.peek_nowait()
                except Empty:
                    break
                if group and total + nxt[2] > self.CYCLE_ITEMS:
                    break
                group.append(self.queue.get_nowait())
                total += nxt[2]
            try:
                self._cycle(group)
            except BaseException as e:      # noqa: B036 - never leave a caller waiting
                for *_, result in group:
                    if not result.ready():
                        result.set((False, e))
                if not isinstance(e, Exception):
                    raise

    def _cycle(self, group: list) -> None:
        try:
            answers = self.db.run(_store_group, [(kind, payload) for kind, payload, _, _ in group])
        except Exception as e:
            if len(group) == 1:
                group[0][3].set((False, e))
                return
            # One transaction per request, so that what failed fails alone.
            log.info("a write cycle of %d requests failed (%s); storing them one by one",
                     len(group), e)
            for kind, payload, _, result in group:
                try:
                    answer = self.db.run(_store_group, [(kind, payload)])[0]
                except Exception as one:
                    result.set((False, one))
                else:
                    result.set((True, answer))
            return
        for (*_, result), answer in zip(group, answers):
            result.set((True, answer))


def _store_group(conn, requests: list[tuple[str, list]]) -> list:
    """Every request's writes in this one transaction: all chats in one send_messages
    (arrival order kept within each sender), then all delivery records. Answers per
    request, in order."""
    sends = [(i, payload) for i, (kind, payload) in enumerate(requests) if kind == SEND]
    deliveries = [(i, payload) for i, (kind, payload) in enumerate(requests) if kind == DELIVER]
    answers: list = [None] * len(requests)
    if sends:
        stored = store.send_messages(conn, [m for _, msgs in sends for m in msgs])
        start = 0
        for i, msgs in sends:
            answers[i] = stored[start:start + len(msgs)]
            start += len(msgs)
    if deliveries:
        marked = store.mark_delivered_many(conn, [d for _, ds in deliveries for d in ds])
        # a key newly marked belongs to the first request that asked for it: its
        # sender gets one `delivered` ack even if two gateways recorded it at once
        claimed: set[tuple[int, int, str]] = set()
        start = 0
        for i, ds in deliveries:
            out = []
            for (to, _), newly in zip(ds, marked[start:start + len(ds)]):
                mine = [(f, m, at) for f, m, at in newly if (to, f, m) not in claimed]
                claimed.update((to, f, m) for f, m, _ in mine)
                out.append(mine)
            answers[i] = out
            start += len(ds)
    return answers
