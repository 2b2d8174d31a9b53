"""Session: one client connection (the original design's Client).

Two greenlets per connection: ``read_pump`` (the view's own greenlet) reads
frames and hands them to the dispatcher; ``write_pump`` drains a bounded send
queue onto the socket and owns the connection's timers (protocol pings, the
heartbeat timeout, token expiry). Anyone may call ``send``; it never blocks.
What a session needs of the rest of the gateway comes in one SessionContext,
shared by every session.
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import Callable

import gevent
import gevent.event

from skyeim.config import GatewayAuthConfig, WebSocketConfig
from skyeim.gateway.frames.codec import encode
from skyeim.gateway.transport.sendqueue import Empty, Full, SendQueue
from skyeim.gateway.transport.websocket import ConnectionClosed, WebSocket
from skyeim.metrics import GatewayMetrics, frame_type
from skyeim.protocol import UNKNOWN_PLATFORM, CloseCode, TokenBucket

log = logging.getLogger(__name__)

MAX_SENT_KEYS = 4096      # chat keys remembered per connection to never send one twice
SLOW_CLIENT_GRACE = 2.0   # s a producer that may wait gives a full queue before 4002
WRITE_BATCH = 64          # queued frames written with one system call
READ_AHEAD = 16          # frames already arrived that one pass of the read loop takes

_conn_ids = itertools.count(1)


class Outgoing:
    """A chat frame bound for this connection: written once, then reported as delivered."""

    __slots__ = ("text", "key", "seq", "t0", "ack", "written")

    def __init__(self, text: str, key: tuple[int, str], seq: int, t0: float | None = None,
                 ack: bool = True, written: gevent.event.Event | None = None):
        self.text, self.key, self.seq = text, key, seq
        self.t0 = t0        # when the chat arrived (live chats), for the delivered-ack latency
        self.ack = ack      # its sender gets `ack delivered` (not a server API chat's, 9.2)
        self.written = written   # set once it is on a socket here (the server API waits on it)


class _Close:
    """Queue marker: write everything before it, then close with ``code``."""

    __slots__ = ("code",)

    def __init__(self, code: int):
        self.code = code


_STOP = object()
_WAKE = object()    # a no-op that makes the writer re-plan its timers


@dataclass(frozen=True, slots=True)
class SessionContext:
    """What every session needs of the gateway (one object, shared by all)."""

    ws_cfg: WebSocketConfig
    auth_cfg: GatewayAuthConfig
    metrics: GatewayMetrics
    handle_messages: Callable[["Session", list], None]     # the dispatcher
    record_delivery: Callable[[int, Outgoing], None]       # (recipient, chat written to its socket)


class Session:
    __slots__ = ("ws", "user_id", "conn_id", "ctx", "queue", "held", "closing",
                 "stop_reading", "busy", "token_exp", "warned", "next_ping_at",
                 "rate", "sent_keys", "writer", "online", "gen", "platform", "typing",
                 "__weakref__")

    def __init__(self, ws: WebSocket, user_id: int, token_exp: int, ctx: SessionContext,
                 platform: str = UNKNOWN_PLATFORM):
        ws_cfg = ctx.ws_cfg
        self.ws = ws
        self.user_id = user_id
        self.conn_id = next(_conn_ids)
        self.ctx = ctx
        self.queue = SendQueue(ws_cfg.send_queue_size)
        self.held: list | None = []      # frames produced before `connected`; None once live
        self.closing = False
        self.stop_reading = False        # set by a graceful stop: handle no more frames
        self.busy = False                # a frame is being handled (graceful stop waits)
        self.token_exp = token_exp       # JWT exp, seconds
        self.warned = False
        self.next_ping_at = time.monotonic() + ws_cfg.ping_interval
        self.rate = TokenBucket(ws_cfg.rate_limit.rate, ws_cfg.rate_limit.burst)   # client frames
        self.sent_keys: dict[tuple[int, str], None] | None = None
        self.writer: gevent.Greenlet | None = None
        self.online: gevent.Greenlet | None = None    # the online flow, while it runs
        self.gen = 0                     # cluster login order of this user (0 = unknown)
        self.platform = platform         # the `platform` query parameter (MultiLogin)
        self.typing = TokenBucket(ws_cfg.typing_rate.rate, ws_cfg.typing_rate.burst)

    def __repr__(self) -> str:
        return f"<Session conn={self.conn_id} user={self.user_id}>"

    # -- sending (any greenlet; never blocks) ---------------------------------------

    def send(self, item, wait: float = 0.0) -> bool:
        """Queue a frame (str) or an Outgoing chat. False if this session is going away.

        A full queue means a client too slow to read: it is closed with 4002. A
        producer that can afford to wait (``wait`` s) -- this connection's own
        replies, batched acks -- gives a reading client time to drain a burst.
        """
        if self.closing:
            return False
        if self.held is not None:
            if len(self.held) >= self.queue.maxsize:
                self._overflow()
                return False
            self.held.append(item)
            return True
        try:
            if wait > 0:
                self.queue.put(item, timeout=wait)
            else:
                self.queue.put_nowait(item)
            return True
        except Full:
            self._overflow()
            return False

    def reply(self, item) -> bool:
        """Queue an answer to this client's own frame (ack, error, pong).

        Waiting here blocks only this connection's read loop: a client that
        sends without reading is slowed down before it is closed."""
        return self.send(item, wait=SLOW_CLIENT_GRACE)

    def push_backlog(self, item: Outgoing, timeout: float) -> None:
        """Queue a backlog chat before `connected`, waiting (bounded) for room.

        Raises ``Full`` when the client does not read for ``timeout`` seconds.
        """
        if not self.closing:
            self.queue.put(item, timeout=timeout)

    def go_live(self, connected_text: str, timeout: float) -> None:
        """Send `connected`, then the frames held while catching up, in order.

        Like the backlog, these wait (up to ``timeout`` s each) for room in the
        queue: the backlog may just have filled it. Frames produced meanwhile
        keep joining ``held``, so the order stays. Raises ``Full`` for a client
        that does not read."""
        held = self.held if self.held is not None else []
        self.queue.put(connected_text, timeout=timeout)
        while held:                       # bounded: held never grows past the queue size
            if self.closing:
                return
            self.queue.put(held.pop(0), timeout=timeout)
        self.held = None                  # (no yield between the last check and here)

    def _overflow(self) -> None:
        log.warning("conn=%s user=%s send queue full (%d): closing 4002",
                    self.conn_id, self.user_id, self.queue.maxsize)
        self.ctx.metrics.overflows.inc()
        self.closing = True
        gevent.spawn(self.close, CloseCode.TOO_SLOW, "send queue overflow")

    # -- closing ----------------------------------------------------------------------

    def close(self, code: int, reason: str = "") -> None:
        """Close now: queued frames are dropped (they stay unread in the store)."""
        self.closing = True
        self.ws.close(code, reason)
        try:
            self.queue.put_nowait(_STOP)     # wake the writer if it waits for frames
        except Full:
            pass                             # it is busy and will see the socket closed

    def finish(self) -> None:
        """The connection is over: stop the writer (bounded) and close the socket."""
        self.closing = True
        if not self.ws.closed:
            self.ws.close(CloseCode.NORMAL)
        try:
            self.queue.put_nowait(_STOP)
        except Full:
            pass
        if self.writer is not None:
            self.writer.join(timeout=self.ws.close_timeout)
            self.writer.kill(block=False)

    def close_after_flush(self, code: int) -> None:
        """Close once everything queued so far is written (graceful stop)."""
        try:
            self.queue.put(_Close(code), timeout=self.ws.close_timeout)
        except Full:
            self.close(code)

    # -- the write pump -----------------------------------------------------------------

    def write_pump(self) -> None:
        ws, ws_cfg, auth_cfg = self.ws, self.ctx.ws_cfg, self.ctx.auth_cfg
        queue = self.queue
        try:
            while True:                      # bounded: the heartbeat ends a silent connection
                try:
                    batch = [queue.get(timeout=self._time_to_next_timer(ws_cfg, auth_cfg))]
                except Empty:
                    batch = []
                # whatever else is queued goes out in the same write (bounded)
                while len(batch) < WRITE_BATCH and queue.qsize():
                    batch.append(queue.get_nowait())
                if not self._write_batch(batch):
                    return
                if not self._run_timers(ws_cfg, auth_cfg):
                    return
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("conn=%s user=%s write pump failed", self.conn_id, self.user_id)
            self.close(CloseCode.INTERNAL)
        finally:
            self.closing = True
            if ws.close_code is None:        # no close handshake under way: wake the reader
                ws.drop()

    def _write_batch(self, batch: list) -> bool:
        """Write queued frames in order; False once a stop or close item is reached."""
        texts: list[str] = []
        chats: list[Outgoing] = []
        frame_out = self.ctx.metrics.frame_out
        for item in batch:
            if item is _WAKE:
                continue
            if item is _STOP or type(item) is _Close:
                self._flush(texts, chats)
                if item is not _STOP:
                    self.closing = True
                    going_away = item.code == CloseCode.GOING_AWAY
                    self.ws.close(item.code, "server shutting down" if going_away else "")
                return False
            if type(item) is str:
                texts.append(item)
                frame_out(frame_type(item))
                continue
            # a chat: never twice on one connection (backlog and live may overlap)
            keys = self.sent_keys
            if keys is None:
                keys = self.sent_keys = {}
            elif item.key in keys:
                continue
            keys[item.key] = None
            if len(keys) > MAX_SENT_KEYS:
                del keys[next(iter(keys))]
            texts.append(item.text)
            chats.append(item)
            frame_out("chat")
        self._flush(texts, chats)
        return True

    def _flush(self, texts: list[str], chats: list[Outgoing]) -> None:
        if not texts:
            return
        if len(texts) == 1:
            self.ws.send_text(texts[0])
        else:
            self.ws.send_texts(texts)
        # only chats that reached the socket count as delivered
        record, uid = self.ctx.record_delivery, self.user_id
        for item in chats:
            record(uid, item)
            if item.written is not None:
                item.written.set()
        texts.clear()
        chats.clear()

    def _time_to_next_timer(self, ws_cfg, auth_cfg) -> float:
        now = time.monotonic()
        due = min(self.next_ping_at, self.ws.last_seen + ws_cfg.pong_timeout)
        if auth_cfg.enforce_expiry:
            wall = time.time()
            exp_in = self.token_exp - wall
            due = min(due, now + exp_in)
            if not self.warned and self.held is None:   # the warning waits for `connected`
                due = min(due, now + exp_in - auth_cfg.expiry_warning)
        return max(0.0, due - now) + 0.001

    def _run_timers(self, ws_cfg, auth_cfg) -> bool:
        """Pings, heartbeat and token expiry; False when the connection was closed."""
        now = time.monotonic()
        if now - self.ws.last_seen >= ws_cfg.pong_timeout:
            log.info("conn=%s user=%s heartbeat timeout: closing 4004", self.conn_id, self.user_id)
            self.close(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
            return False
        if now >= self.next_ping_at:
            self.ws.send_ping()
            self.next_ping_at = now + ws_cfg.ping_interval
        if auth_cfg.enforce_expiry:
            wall = time.time()
            if wall >= self.token_exp:
                log.info("conn=%s user=%s token expired: closing 4003", self.conn_id, self.user_id)
                self.close(CloseCode.TOKEN_EXPIRED, "token expired")
                return False
            # the warning waits for `connected`: nothing but backlog may precede it
            if not self.warned and self.held is None \
                    and wall >= self.token_exp - auth_cfg.expiry_warning:
                self.warned = True
                self.ws.send_text(encode("token_expiring", {"expiresAt": self.token_exp * 1000}))
        return True

    # -- the read pump --------------------------------------------------------------

    def read_pump(self) -> int:
        """Read and handle frames until the connection closes; returns the close code.

        Frames that have already arrived behind the first (a client that keeps
        several chats in flight) are taken in the same pass, up to READ_AHEAD:
        their chats are stored in one batch instead of one round trip each."""
        handle_messages, ws = self.ctx.handle_messages, self.ws
        while True:                      # bounded: the heartbeat closes a silent connection
            try:
                messages = [ws.receive()]
            except ConnectionClosed as e:
                return e.code
            closed = None
            while len(messages) < READ_AHEAD and ws.frame_ready():
                try:
                    messages.append(ws.receive())
                except ConnectionClosed as e:
                    closed = e.code
                    break
            if not (self.closing or self.stop_reading):   # else: draining until close or EOF
                self.busy = True
                try:
                    handle_messages(self, messages)
                finally:
                    self.busy = False
            if closed is not None:
                return closed

    def refresh_token(self, exp: int) -> None:
        self.token_exp = exp
        self.warned = False
        try:                              # wake the writer to re-plan its timers for the new exp
            self.queue.put_nowait(_WAKE)
        except Full:
            pass                          # it is busy writing and re-plans after that
