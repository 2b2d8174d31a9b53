"""The outbox: every chat a Client sends, from the moment it is queued until the
gateway acks it ``sent`` or refuses it. No I/O and no lock: the Client calls it
under its own lock and does the waiting and the writing.

A chat is written at most once per connection (``gen``); after a reconnect
every chat still pending is written again, oldest first, with the same msgId,
and the gateway's idempotency on ``(fromUserId, msgId)`` makes a resend of a
stored chat ``ack sent`` with ``duplicate: true``. A refusal worth retrying
(``rate_limited``, ``unavailable``: nothing was stored) is written again after
a growing pause, up to ``max_retries`` times; any other refusal ends the chat.
Chats that are done stay known (``recent``, as many as ``limit``), so that a
late ``delivered`` ack or a ``wait_ack`` still finds them.
"""
from __future__ import annotations

import collections
import random
import time
from dataclasses import dataclass

from skyeim.protocol import ErrorCode

from .frames import Ack, ErrorFrame

# refusals that store nothing and are worth a later resend with the same msgId
RETRYABLE = frozenset({ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE})
RETRY_PAUSE_CAP = 8.0        # s: the longest pause before a refused chat is resent


@dataclass(frozen=True)
class SendResult:
    """What is known about a chat: ``status`` is ``queued`` (no ack yet), ``sent``
    (stored: ``seq``, ``created_at``) or ``delivered`` (``delivered_at``).
    ``duplicate`` is true when the gateway already had this msgId (a resend)."""
    msg_id: str
    status: str
    seq: int | None = None
    created_at: int | None = None
    delivered_at: int | None = None
    duplicate: bool = False


class Pending:
    """One chat in the outbox (or, once done, among the recent ones)."""

    __slots__ = ("msg_id", "payload", "to", "written_gen", "not_before", "retries", "sent",
                 "delivered", "error")

    def __init__(self, msg_id: str, payload: str, to: int = 0):
        self.msg_id, self.payload, self.to = msg_id, payload, to   # to: the peer (0: a group)
        self.written_gen = -1          # the connection it was last written to
        self.not_before = 0.0          # monotonic time before which it is not (re)written
        self.retries = 0
        self.sent: Ack | None = None
        self.delivered: Ack | None = None
        self.error: ErrorFrame | None = None

    def result(self) -> SendResult:
        sent, dlv = self.sent, self.delivered
        status = "delivered" if dlv else "sent" if sent else "queued"
        seq = (sent.seq if sent else None) or (dlv.seq if dlv else None)
        return SendResult(self.msg_id, status, seq, sent.timestamp if sent else None,
                          dlv.timestamp if dlv else None, bool(sent and sent.duplicate))

    def reached(self, status: str) -> bool:
        """Whether the ack ``status`` ("sent" or "delivered") has come (delivered implies sent)."""
        return self.delivered is not None if status == "delivered" else (
            self.sent is not None or self.delivered is not None)


class Outbox:
    """Chats waiting for their ``sent`` ack (at most ``limit``), oldest first."""

    def __init__(self, limit: int = 1000, max_retries: int = 5,
                 rng: random.Random | None = None, clock=time.monotonic):
        self.limit, self.max_retries = limit, max_retries
        self._rng, self._clock = rng or random.Random(), clock
        self._pending: collections.OrderedDict[str, Pending] = collections.OrderedDict()
        self._recent: collections.OrderedDict[str, Pending] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._pending

    def ids(self) -> list[str]:
        """msgIds of the chats not yet acked ``sent``, oldest first."""
        return list(self._pending)

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.limit

    def find(self, msg_id: str) -> Pending | None:
        """A chat still pending or among the recent ones (None: never sent or forgotten)."""
        return self._pending.get(msg_id) or self._recent.get(msg_id)

    def add(self, msg_id: str, payload: str, to: int = 0) -> Pending:
        """Queue a chat (the caller waits while ``full``). A msgId already pending is a
        ValueError; one that is done may be sent again (the gateway answers a duplicate)."""
        if msg_id in self._pending:
            raise ValueError(f"msgId {msg_id} is already waiting in the outbox")
        if self.full:
            raise OverflowError(f"{len(self._pending)} chats are waiting for their ack")
        p = Pending(msg_id, payload, to)
        self._recent.pop(msg_id, None)
        self._pending[msg_id] = p
        return p

    def next_to_write(self, gen: int) -> tuple[Pending | None, float | None]:
        """The oldest chat not yet written to connection ``gen`` and due now, or
        (None, seconds until one is due; None when nothing waits)."""
        now, wait = self._clock(), None
        for p in self._pending.values():
            if p.written_gen == gen:
                continue
            if p.not_before > now:
                wait = p.not_before - now if wait is None else min(wait, p.not_before - now)
                continue
            return p, None
        return None, wait

    @staticmethod
    def written(p: Pending, gen: int) -> None:
        p.written_gen = gen

    def on_ack(self, ack: Ack) -> Pending | None:
        """Record an ack of one of ours: ``sent`` ends the chat's wait in the outbox."""
        p = self.find(ack.msg_id) if ack.msg_id else None
        if p is None:
            return None
        if ack.status == "sent":
            p.sent = ack
        elif ack.status == "delivered":
            p.delivered = ack
        self._done(p)
        return p

    def on_error(self, err: ErrorFrame) -> Pending | None:
        """An error frame for one of ours (else None). A retryable refusal is written
        again after a pause; any other ends the chat (its ``error`` is set)."""
        p = self._pending.get(err.msg_id) if err.msg_id else None
        if p is None:
            return None
        if err.code in RETRYABLE and p.retries < self.max_retries:
            p.retries += 1
            p.written_gen = -1
            pause = min(RETRY_PAUSE_CAP, 0.5 * 2 ** p.retries)
            p.not_before = self._clock() + self._rng.uniform(0.5, 1.0) * pause
            return p
        p.error = err
        self._done(p)
        return p

    def _done(self, p: Pending) -> None:
        if self._pending.pop(p.msg_id, None) is None:
            return
        self._recent[p.msg_id] = p
        while len(self._recent) > self.limit:
            self._recent.popitem(last=False)
