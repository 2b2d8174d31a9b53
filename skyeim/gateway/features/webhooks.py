"""Webhooks (PROTOCOL.md 9.3): events POSTed to the team's application.

``Webhooks`` turns what the gateway sees into events -- ``user.online`` /
``user.offline`` (as a PresenceListener alone; in a cluster from the hub's
once-per-cluster transitions, routing/cluster.py ``watch_presence``),
``message.offline`` (as a ChatListener: a stored 1:1 chat that reached no live
connection) and ``friend.added`` / ``friend.removed`` (as a FriendshipListener of
features/friendships.py: /api/friends and /server/v1/friends) -- and hands them to a ``WebhookSender``.

The sender is a bounded in-memory queue and one greenlet: an event is POSTed as
``{id, event, timestamp, data}`` with X-SkyeIM-Signature (when Webhooks.Secret is
set); a timeout, connection error or non-2xx answer is retried with doubling
pauses up to Webhooks.MaxAttempts, the event staying at the head of the queue, so
that events keep their order (per user, and overall). Putting an event never
blocks: a full queue drops it (counted, logged). Nothing here runs in a chat's
path but ``queue.put_nowait``. Delivery is at-least-once while the process
lives; ``id`` lets the receiver drop repeats (``message.offline``'s id is derived
from (fromUserId, msgId), so even a second node's copy would share it).
"""
from __future__ import annotations

import logging
import time
import uuid

import gevent
import orjson
import requests
from gevent.queue import Empty, Full, Queue

from skyeim.config import WebhooksConfig
from skyeim.gateway.frames.codec import chat_data
from skyeim.metrics import GatewayMetrics
from skyeim.protocol.signatures import HEADER, sign

log = logging.getLogger(__name__)

RETRY_FIRST_PAUSE = 0.5      # s before the second attempt; doubles per attempt
RETRY_MAX_PAUSE = 30.0       # s at most between attempts
DROP_LOG_EVERY = 1000        # a full queue logs its first drop, then one line per this many


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def event_body(event: str, data: dict, event_id: str | None = None,
               timestamp: int | None = None) -> bytes:
    """The exact bytes POSTed (and signed) for one event."""
    return orjson.dumps({"id": event_id or str(uuid.uuid4()), "event": event,
                         "timestamp": timestamp if timestamp is not None else now_ms(),
                         "data": data})


class WebhookSender:
    """The bounded queue and its sender greenlet."""

    def __init__(self, cfg: WebhooksConfig, metrics: GatewayMetrics):
        self.cfg = cfg
        self.queue: Queue = Queue(maxsize=cfg.queue_size)
        self.depth = metrics.webhook_queue
        self.sent, self.retries = metrics.webhook_sent, metrics.webhook_retries
        self.failed, self.drops = metrics.webhook_failed, metrics.webhook_drops
        self.dropped = 0
        self.http = requests.Session()
        self._greenlet: gevent.Greenlet | None = None
        self._running = False

    def put(self, event: str, body: bytes) -> bool:
        """Queue one event; False (dropped, counted) when the queue is full. Never blocks."""
        try:
            self.queue.put_nowait((event, body))
        except Full:
            self.dropped += 1
            self.drops.inc()
            if self.dropped % DROP_LOG_EVERY == 1:
                log.warning("webhooks: queue full (%d events waiting): %s dropped "
                            "(%d dropped so far)", self.cfg.queue_size, event, self.dropped)
            return False
        self.depth.set(self.queue.qsize())
        return True

    def start(self) -> None:
        self._running = True
        self._greenlet = gevent.spawn(self._run)

    def stop(self, timeout: float = 0.0) -> None:
        """Send what waits for up to ``timeout`` s, then stop."""
        deadline = time.monotonic() + timeout
        while not self.queue.empty() and time.monotonic() < deadline:
            gevent.sleep(0.05)
        self._running = False
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _run(self) -> None:
        while self._running:
            try:
                event, body = self.queue.peek(timeout=1.0)
            except Empty:
                continue
            try:
                self._deliver(event, body)
            except Exception:                 # a bug must not stop every later event
                log.exception("webhooks: sending %s failed", event)
            self.queue.get_nowait()           # off the queue only once it is done with
            self.depth.set(self.queue.qsize())

    def _deliver(self, event: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "X-SkyeIM-Event": event}
        if self.cfg.secret:
            headers[HEADER] = sign(body, self.cfg.secret)
        pause = RETRY_FIRST_PAUSE
        for attempt in range(1, self.cfg.max_attempts + 1):
            if attempt > 1:
                self.retries.inc()
                gevent.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_PAUSE)
            limit = self.cfg.timeout / 1000
            try:
                # requests' timeout bounds each read; gevent's, the whole call
                with gevent.Timeout(limit, requests.Timeout(f"no answer within {self.cfg.timeout} ms")):
                    resp = self.http.post(self.cfg.url, data=body, headers=headers, timeout=limit)
                resp.close()
                if 200 <= resp.status_code < 300:
                    self.sent.labels(event).inc()
                    return
                why = f"HTTP {resp.status_code}"
            except requests.RequestException as e:
                why = type(e).__name__
            log.info("webhooks: %s attempt %d/%d failed: %s", event, attempt,
                     self.cfg.max_attempts, why)
        self.failed.inc()
        log.warning("webhooks: %s given up after %d attempts", event, self.cfg.max_attempts)


class Webhooks:
    """The events (PresenceListener, ChatListener, FriendshipListener) into the sender."""

    def __init__(self, cfg: WebhooksConfig, sender: WebhookSender):
        self.cfg, self.sender = cfg, sender

    def emit(self, event: str, data: dict, event_id: str | None = None) -> None:
        if self.cfg.wants(event):
            self.sender.put(event, event_body(event, data, event_id))

    # PresenceListener (standalone), and the cluster's transitions
    def user_online(self, user_id: int) -> None:
        self.emit("user.online", {"userId": user_id})

    def user_offline(self, user_id: int) -> None:
        self.emit("user.offline", {"userId": user_id})

    def presence_changed(self, user_id: int, online: bool) -> None:
        (self.user_online if online else self.user_offline)(user_id)

    # ChatListener
    def chat_stored(self, message: dict, connections: int) -> None:
        if connections == 0:
            key = f"{message['fromUserId']}:{message['msgId']}"
            self.emit("message.offline", {"message": chat_data(message)},
                      str(uuid.uuid5(uuid.NAMESPACE_URL, "skyeim:message.offline:" + key)))

    # FriendshipListener: friendships changed through the gateway (REST /api/friends,
    # server API), told by features/friendships.py
    def friendship_changed(self, user_id: int, friend_id: int, added: bool) -> None:
        self.emit("friend.added" if added else "friend.removed",
                  {"userId": user_id, "friendId": friend_id})
