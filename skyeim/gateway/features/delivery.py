"""Delivery recording: a chat written to a recipient's socket is recorded as
delivered (PROTOCOL.md section 3), and its sender gets `ack delivered`.

Writers (Session._flush) and sync hand over (recipient, chat) without waiting
on HTTP; a worker greenlet drains the queue, one service call (and
transaction) per batch.
"""
from __future__ import annotations

import logging
import time

import gevent
from gevent.pool import Pool
from gevent.queue import Full, Queue

from skyeim.gateway.backends.batching import collect
from skyeim.gateway.backends.clients import BackendFailure, MessageService
from skyeim.gateway.frames.codec import encode_ack
from skyeim.gateway.routing.hub import Hub
from skyeim.gateway.transport.session import SLOW_CLIENT_GRACE, Outgoing
from skyeim.metrics import GatewayMetrics

log = logging.getLogger(__name__)


class DeliveryRecorder:
    QUEUE_SIZE = 10_000
    WORKERS = 2              # calls in flight at once (see MessageService.BATCH_CONCURRENCY)
    BATCH = 500
    LINGER = 0.0             # s a record may wait for company (none: see MessageService.SEND_LINGER)
    CONCURRENT_CALLS = 64    # senders being sent their `delivered` acks at once

    def __init__(self, messages: MessageService, hub: Hub, metrics: GatewayMetrics):
        self.messages, self.hub = messages, hub
        self.batch_size = metrics.batch_size.labels("deliveries")
        self.latency = metrics.delivered_latency
        self.queue: Queue = Queue(maxsize=self.QUEUE_SIZE)
        self.calls = Pool(self.CONCURRENT_CALLS)
        self.workers = [gevent.spawn(self._work) for _ in range(self.WORKERS)]
        self.pending = 0

    def add(self, recipient: int, item: Outgoing) -> None:
        try:
            # a full queue slows the writers down a little rather than losing the record;
            # if it stays full, the message simply stays undelivered and is pushed again
            self.queue.put((recipient, item), timeout=1.0)
            self.pending += 1
        except Full:
            log.warning("delivery recorder full: %s stays undelivered", item.key)

    def _work(self) -> None:
        last = 0.0
        while True:                       # runs for the life of the process
            first = self.queue.get()
            batch = collect(self.queue, first, self.BATCH, self.LINGER, last)
            last = time.monotonic()
            try:
                self._record(batch)
            except Exception:
                log.exception("recording deliveries failed")
            finally:
                self.pending -= len(batch)

    def _record(self, batch: list[tuple[int, Outgoing]]) -> None:
        self.batch_size.observe(len(batch))
        by_recipient: dict[int, dict[tuple[int, str], Outgoing]] = {}
        for recipient, item in batch:
            by_recipient.setdefault(recipient, {})[item.key] = item
        try:
            # every recipient of the batch in one call (and one transaction)
            marked = self.messages.mark_delivered_many(
                {recipient: list(items) for recipient, items in by_recipient.items()})
        except BackendFailure as e:
            log.warning("%d deliveries not recorded (%s); pushed again at next connect",
                        len(batch), e)
            return
        latency = self.latency
        acks_by_sender: dict[int, list[str]] = {}
        for recipient, acks in marked.items():
            items = by_recipient[recipient]
            for m in acks:
                item = items.get((m["fromUserId"], m["msgId"]))
                if item is None or not item.ack:      # (a server API chat: no ack, 9.2)
                    continue
                acks_by_sender.setdefault(m["fromUserId"], []).append(encode_ack(
                    m["msgId"], "delivered", m["deliveredAt"], item.seq))
                if item.t0 is not None:
                    latency.observe(time.perf_counter() - item.t0)
        # a sender slow to read may make its acks wait (SLOW_CLIENT_GRACE): not the others'
        for sender, texts in acks_by_sender.items():
            self.calls.spawn(self._ack_sender, sender, texts)

    def _ack_sender(self, sender: int, texts: list[str]) -> None:
        # one hub call for the sender's acks: in a cluster, two Redis round trips in all
        self.hub.send_to_users([(sender, text) for text in texts], wait=SLOW_CLIENT_GRACE)

    def flush(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.pending > 0 and time.monotonic() < deadline:
            gevent.sleep(0.01)
        self.calls.join(timeout=max(0.0, deadline - time.monotonic()))
