"""A blocking WebSocket client for the SkyeIM gateway (PROTOCOL.md sections 1 to 5).

Built on websocket-client. One daemon reader thread per ``Client`` reads the
socket, answers protocol pings, parses frames, resolves acks, hands frames to
callbacks and to the iterator, paces outgoing chats, and reconnects with
exponential backoff and full jitter. It uses only ``threading``, ``select``
and ``socket``, so it works unchanged in a gevent-monkey-patched process (the
thread is then a greenlet) and without gevent.

Delivery guarantee: every chat goes through a bounded outbox and stays there
until the gateway acks it ``sent`` (or refuses it with an error). After a
reconnect the outbox is sent again with the same msgIds; the gateway's
idempotency on ``(fromUserId, msgId)`` turns a resend of a stored message into
``ack sent`` with ``duplicate: true`` and the recipient still gets it once.
"""
from __future__ import annotations

import collections
import itertools
import json
import logging
import math
import re
import select
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import websocket
from websocket import ABNF

from .backoff import Backoff, RateLimiter
from .errors import (AckTimeout, ChatError, ClientClosed, ConnectFailed, ConnectionClosed,
                     ForbiddenOrigin, HandshakeRefused, NotConnected, OutboxFull,
                     ReconnectFailed, Replaced, SkyeIMError, TokenExpired, TokenRefused,
                     Unauthorized,
                     handshake_refused)
from .frames import (Ack, AnyFrame, ChatMessage, Connected, ErrorFrame, GroupMessage, GroupUnread,
                     Pong, SyncComplete, TokenExpiring, parse_frame)
from .groups import GroupSeqs
from .sync import Conversations

log = logging.getLogger("skyeim.client")

CLOSE_REPLACED = 4001
CLOSE_TOKEN_EXPIRED = 4003
# server close codes after which reconnecting cannot help (or must not happen)
NO_RECONNECT = frozenset({1000, 1002, 1003, 1005, 1007, 1008, 1009, 1010})
# chat errors that store nothing and are worth a later resend with the same msgId
RETRYABLE = frozenset({"rate_limited", "unavailable"})
MSG_ID = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
WAITS = ("sent", "delivered", None)
_ids = itertools.count(1)


def ws_url(url: str) -> str:
    """The WebSocket URL for ``url``: ``http://h:p[/prefix]`` -> ``ws://h:p[/prefix]/ws``
    (https -> wss); a ``ws://`` or ``wss://`` URL is used as it is."""
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss"):
        return url
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s):// or ws(s):// URL: {url!r}")
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", "", ""))


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


class _Pending:
    __slots__ = ("msg_id", "payload", "to", "sent_gen", "not_before", "retries", "sent",
                 "delivered", "error", "waiters")

    def __init__(self, msg_id: str, payload: str, to: int = 0):
        self.msg_id, self.payload, self.to = msg_id, payload, to
        self.sent_gen = -1              # the connection it was last written to
        self.not_before = 0.0           # monotonic time before which it is not (re)sent
        self.retries = 0
        self.sent: Ack | None = None
        self.delivered: Ack | None = None
        self.error: ErrorFrame | None = None
        self.waiters = 0

    def result(self) -> SendResult:
        sent, dlv = self.sent, self.delivered
        status = "delivered" if dlv else "sent" if sent else "queued"
        seq = (sent.seq if sent else None) or (dlv.seq if dlv else None)
        return SendResult(self.msg_id, status, seq, sent.timestamp if sent else None,
                          dlv.timestamp if dlv else None, bool(sent and sent.duplicate))


class Client:
    """One user's connection to the gateway, kept alive and reconnected.

    ``url``: ``ws://HOST:PORT/ws`` or the gateway's ``http://HOST:PORT`` (the
    socket URL is derived). ``token``: the JWT, sent as ``?token=`` or, with
    ``use_header``, as ``Authorization: Bearer``. ``token_provider``: a
    callable returning a fresh token; with it the client refreshes its token on
    ``token_expiring`` (an ``auth`` frame) and reconnects after 4003 or a 401;
    without it those end the client (``TokenExpired`` / ``Unauthorized``).

    Frames reach callbacks (``on``) in the reader thread, and the iterator
    (``frames()``, ``next_frame()``) through a queue of at most ``max_queue``
    frames (the oldest are dropped and counted in ``dropped_frames``;
    ``max_queue=0`` turns the queue off). A callback must not block on an ack
    (``send_chat(wait=...)``) -- that would stop the reader it runs in.

    With ``sync`` (the default) the client keeps, per conversation, the last
    seq it holds (``conversations``; ``track`` seeds it), sends a ``sync``
    frame after every ``connected`` and asks for the range when a gap in seq
    shows up; the missed messages reach callbacks and the iterator as
    ``ChatMessage`` frames, in seq order, and every message (by fromUserId
    and msgId) is yielded once, whether it came live, as backlog or by sync.
    ``SyncComplete`` frames say when a sync has been answered.
    """

    def __init__(self, url: str, token: str | None = None, *, use_header: bool = False,
                 token_provider: Callable[[], str] | None = None, origin: str | None = None,
                 headers: list[str] | None = None, reconnect: bool = True,
                 backoff: Backoff | None = None, connect_timeout: float = 10.0,
                 io_timeout: float = 30.0, keepalive: float | None = 20.0,
                 close_timeout: float = 1.0, max_outbox: int = 1000, max_queue: int = 10000,
                 max_message_size: int = 65536, rate_limit: tuple[float, int] | None = (40, 80),
                 max_retries: int = 5, sync: bool = True, platform: str | None = None,
                 typing_interval: float = 1.0):
        self.url = ws_url(url)
        # sent as the `platform` query parameter (web, ios, android, desktop): with
        # MultiLogin one-per-platform a new login replaces only the same platform's
        self.platform = platform
        self.typing_interval = typing_interval    # s between repeated `typing` to one peer
        self._typing_sent: dict[tuple[str, int], tuple[str, float]] = {}
        self._token = token
        self.use_header = use_header
        self.token_provider = token_provider
        self.origin = origin
        self.headers = list(headers or [])
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.keepalive = keepalive
        self.close_timeout = close_timeout
        self.max_outbox = max_outbox
        self.max_message_size = max_message_size
        self.max_retries = max_retries
        self._limiter = RateLimiter(*rate_limit) if rate_limit else None
        self.sync_enabled = sync
        self._conversations = Conversations()
        self._groups = GroupSeqs()          # extension: group seqs (skyeim/client/groups.py)

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)          # acks, connected, pongs
        self._frames_cond = threading.Condition(self._lock)   # the frame queue
        self._send_lock = threading.Lock()                    # order of writes; before _lock
        self._stop = threading.Event()
        self._ws: websocket.WebSocket | None = None
        self._gen = 0
        self._live = False
        self._ever_live = False
        self._connected_at: float | None = None
        self._close_sent_gen = -1
        self._need_new_token = False
        self._terminal: SkyeIMError | None = None
        self._outbox: collections.OrderedDict[str, _Pending] = collections.OrderedDict()
        self._recent: collections.OrderedDict[str, _Pending] = collections.OrderedDict()
        self._queue: collections.deque[AnyFrame] = collections.deque(maxlen=max(max_queue, 1))
        self._queue_frames = max_queue > 0
        self._handlers: dict[Any, list[Callable]] = {}
        self._reader: threading.Thread | None = None
        self._connecting = False
        self._reader_ident: int | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._pings_sent = 0
        self._pongs_seen = 0
        self._auth_errors: list[ErrorFrame] = []
        self._last_recv = 0.0
        self._last_ping = 0.0
        self._name = f"skyeim-client-{next(_ids)}"

        self.user_id: int | None = None
        self.connected_info: Connected | None = None   # the last `connected` frame
        self.reconnects = 0            # successful reconnects (a `connected` after the first)
        self.reconnect_attempts = 0    # handshakes tried while reconnecting
        self.dropped_frames = 0

    def __repr__(self) -> str:
        state = "closed" if self.closed else "live" if self._live else "not live"
        return f"<Client {self.url} user={self.user_id} {state}>"

    def __enter__(self) -> "Client":
        if self._reader is None:
            self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- state ------------------------------------------------------------------------------
    @property
    def token(self) -> str | None:
        return self._token

    @property
    def live(self) -> bool:
        """Connected and caught up (the current connection has sent `connected`)."""
        return self._live

    @property
    def closed(self) -> bool:
        return self._terminal is not None

    @property
    def error(self) -> SkyeIMError | None:
        """Why the client ended (None while it runs); ``ClientClosed`` after ``close()``."""
        return self._terminal

    @property
    def outbox(self) -> list[str]:
        """msgIds of chats not yet acked ``sent``, oldest first."""
        with self._lock:
            return list(self._outbox)

    # -- connecting and closing --------------------------------------------------------------
    def connect(self, timeout: float | None = None) -> Connected:
        """Open the socket and wait for ``connected`` (the backlog chats before it go
        to callbacks and the iterator). Raises ``Unauthorized``, ``ForbiddenOrigin``,
        ``Overloaded`` (all ``HandshakeRefused``) or ``ConnectFailed``."""
        timeout = self.connect_timeout if timeout is None else timeout
        with self._lock:
            if self._stop.is_set() or self._terminal is not None:
                raise self._terminal or ClientClosed()
            if self._reader is not None or self._connecting:
                raise RuntimeError("connect() was already called; the client reconnects by itself")
            self._connecting = True
        try:
            ws = self._open()
        finally:
            self._connecting = False
        with self._lock:
            if self._stop.is_set():
                ws.shutdown()
                raise ClientClosed()
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._install(ws)
            self._reader = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._reader.start()
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._live:
                if self._terminal is not None:
                    raise self._terminal
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            else:
                return self.connected_info  # type: ignore[return-value]
        self.close()
        raise ConnectFailed(f"{self.url}: no 'connected' frame within {timeout:g}s")

    def close(self, timeout: float | None = None) -> None:
        """Close normally (1000) and stop the reader. Chats still in the outbox are
        not sent. Safe to call more than once, and from a callback."""
        with self._lock:
            self._stop.set()
            ws, gen, reader = self._ws, self._gen, self._reader
            if reader is None and self._terminal is None:
                self._finish(ClientClosed())
        if ws is not None and self._send_lock.acquire(timeout=self.close_timeout):
            try:
                ws.send_close(1000)
                self._close_sent_gen = gen
            except Exception:  # noqa: BLE001 - best effort
                pass
            finally:
                self._send_lock.release()
        self._wake()
        if reader is not None and threading.get_ident() != self._reader_ident:
            reader.join(self.close_timeout + 2 if timeout is None else timeout)

    def drop_connection(self) -> None:
        """Drop the current TCP connection without a close frame, as a network failure
        would; the client then reconnects (if it may). For tests and debugging."""
        with self._lock:
            ws = self._ws
        if ws is not None:
            self._shutdown_socket(ws)

    # -- sending ------------------------------------------------------------------------------
    def send_chat(self, to_user_id: int, content: str, content_type: int = 1,
                  msg_id: str | None = None, wait: str | None = "sent",
                  timeout: float | None = 10.0) -> SendResult:
        """Send a chat (msgId: a new UUID4 unless given) and, with ``wait``, block until
        its ``sent`` or ``delivered`` ack. The chat goes through the outbox: it is sent
        now if the client is live, else after (re)connecting, and resent with the same
        msgId after every reconnect until acked ``sent``.

        Raises ``ChatError`` (the gateway refused it), ``AckTimeout`` (the chat stays in
        the outbox), ``OutboxFull`` (``max_outbox`` chats are unacked for ``timeout``),
        or the ``ConnectionClosed`` that ended the client."""
        if type(to_user_id) is not int or to_user_id < 1:
            raise ValueError("to_user_id must be a positive integer user id")
        if not isinstance(content, str) or not content:
            raise ValueError("content must be a non-empty string")
        if type(content_type) is not int:
            raise ValueError("content_type must be an integer (1 text, 2 image, 3 file, 4 voice)")
        if wait not in WAITS:
            raise ValueError(f"wait must be one of {WAITS}")
        msg_id = str(uuid.uuid4()) if msg_id is None else msg_id
        if not isinstance(msg_id, str) or not MSG_ID.match(msg_id):
            raise ValueError("msg_id must be 1 to 64 characters of [A-Za-z0-9_-]")
        if wait and threading.get_ident() == self._reader_ident:
            raise RuntimeError("cannot wait for an ack in a callback; use wait=None")
        payload = json.dumps({"type": "chat", "data": {
            "msgId": msg_id, "toUserId": to_user_id, "content": content,
            "contentType": content_type}}, ensure_ascii=False, separators=(",", ":"))
        return self._enqueue(msg_id, payload, to_user_id, wait, timeout)

    def send_groupchat(self, group_id: int, content: str, content_type: int = 1,
                       msg_id: str | None = None, wait: str | None = "sent",
                       timeout: float | None = 10.0) -> SendResult:
        """Send a message to a group (extension: docs/protocol.md "Groups") through the
        outbox, as ``send_chat``; ``wait`` is "sent" or None (groups have no delivered
        acks). Not a member: ``ChatError`` with code ``forbidden``."""
        if type(group_id) is not int or group_id < 1:
            raise ValueError("group_id must be a positive integer group id")
        if not isinstance(content, str) or not content:
            raise ValueError("content must be a non-empty string")
        if type(content_type) is not int:
            raise ValueError("content_type must be an integer (1 text, 2 image, 3 file, 4 voice)")
        if wait not in ("sent", None):
            raise ValueError('wait must be "sent" or None for a group message')
        msg_id = str(uuid.uuid4()) if msg_id is None else msg_id
        if not isinstance(msg_id, str) or not MSG_ID.match(msg_id):
            raise ValueError("msg_id must be 1 to 64 characters of [A-Za-z0-9_-]")
        if wait and threading.get_ident() == self._reader_ident:
            raise RuntimeError("cannot wait for an ack in a callback; use wait=None")
        payload = json.dumps({"type": "groupchat", "data": {
            "msgId": msg_id, "groupId": group_id, "content": content,
            "contentType": content_type}}, ensure_ascii=False, separators=(",", ":"))
        return self._enqueue(msg_id, payload, 0, wait, timeout)

    def mark_group_read(self, group_id: int, seq: int) -> None:
        """Move my read cursor of the group up to ``seq`` (extension)."""
        if type(group_id) is not int or type(seq) is not int or group_id < 1 or seq < 1:
            raise ValueError("group_id and seq must be positive integers")
        self._send_frame({"type": "group_read", "data": {"groupId": group_id, "seq": seq}})

    def sync_group(self, group_id: int, after_seq: int | None = None) -> None:
        """Ask for the group's messages after ``after_seq`` (default: the seq held);
        they arrive as GroupMessage frames, each once."""
        with self._lock:
            after = self._groups.held.get(group_id, 0) if after_seq is None else after_seq
            frames = self._groups._frames([(group_id, after)])
        self._send_sync(frames)

    @property
    def group_seqs(self) -> dict[int, int]:
        """Group id -> the highest seq this client has yielded."""
        with self._lock:
            return dict(self._groups.held)

    def _enqueue(self, msg_id: str, payload: str, to: int, wait: str | None,
                 timeout: float | None) -> SendResult:
        if len(payload.encode("utf-8")) > self.max_message_size:
            raise ValueError(f"the chat frame is larger than {self.max_message_size} bytes")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._check_usable()
            if msg_id in self._outbox:
                raise ValueError(f"msgId {msg_id} is already waiting in the outbox")
            while len(self._outbox) >= self.max_outbox:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise OutboxFull(f"{len(self._outbox)} chats are waiting for their ack")
                self._cond.wait(remaining)
                self._check_usable()
            p = _Pending(msg_id, payload, to)
            self._recent.pop(msg_id, None)
            self._outbox[msg_id] = p
            if wait:
                p.waiters += 1
        self._flush()
        self._wake()
        if not wait:
            return p.result()
        try:
            return self._wait_for(p, wait, deadline)
        finally:
            with self._lock:
                p.waiters -= 1

    @property
    def conversations(self) -> dict[int, int]:
        """peer id -> the seq up to which this client holds the conversation (no gaps)."""
        with self._lock:
            return dict(self._conversations.marks)

    def track(self, peer_id: int, last_seq: int = 0) -> None:
        """Hold ``peer_id``'s conversation as known up to ``last_seq`` (0: nothing yet);
        it is synced after every ``connected`` (now too, if live)."""
        if type(peer_id) is not int or peer_id < 1 or type(last_seq) is not int or last_seq < 0:
            raise ValueError("peer_id must be a user id and last_seq an integer >= 0")
        with self._lock:
            self._conversations.track(peer_id, last_seq)
            live = self._live
        if live and self.sync_enabled:
            self.sync([peer_id])

    def sync(self, peers: list[int] | None = None) -> None:
        """Send a sync for the known conversations (or ``peers``) now; the missed
        messages arrive as ``ChatMessage`` frames, then a ``SyncComplete``."""
        with self._lock:
            frames = self._conversations.catch_up(peers)
        self._send_sync(frames)

    def wait_ack(self, msg_id: str, status: str = "sent",
                 timeout: float | None = 10.0) -> SendResult:
        """Wait for an ack of a chat sent earlier with ``wait=None`` (one still in the
        outbox or among the last ``max_outbox`` acked ones)."""
        if status not in ("sent", "delivered"):
            raise ValueError("status must be 'sent' or 'delivered'")
        if threading.get_ident() == self._reader_ident:
            raise RuntimeError("cannot wait for an ack in a callback")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            p = self._outbox.get(msg_id) or self._recent.get(msg_id)
            if p is None:
                raise KeyError(f"no chat {msg_id} is known to this client")
            p.waiters += 1
        try:
            return self._wait_for(p, status, deadline)
        finally:
            with self._lock:
                p.waiters -= 1

    def result(self, msg_id: str) -> SendResult | None:
        """What is known now about a chat sent by this client (None if forgotten)."""
        with self._lock:
            p = self._outbox.get(msg_id) or self._recent.get(msg_id)
            return p.result() if p else None

    def mark_read(self, peer_id: int, msg_ids: list[str] | None = None) -> None:
        """Send a read receipt: ``msg_ids`` from ``peer_id`` (None: every unread one)."""
        if type(peer_id) is not int or peer_id < 1:
            raise ValueError("peer_id must be a positive integer user id")
        data: dict[str, Any] = {"peerId": peer_id}
        if msg_ids is not None:
            data["msgIds"] = list(msg_ids)
        self._send_frame({"type": "read", "data": data})

    def send_typing(self, to_user_id: int | None = None, state: str = "typing", *,
                    group_id: int | None = None) -> bool:
        """Tell ``to_user_id`` (or the members of ``group_id``) that this user is typing
        ("typing") or stopped ("paused"). Never stored or acked. The same state to the
        same peer or group goes out at most every ``typing_interval`` s (the gateway
        drops what is over WebSocket.TypingRate); returns False when skipped for that."""
        if (to_user_id is None) == (group_id is None):
            raise ValueError("give either to_user_id or group_id")
        target = to_user_id if group_id is None else group_id
        if type(target) is not int or target < 1:
            raise ValueError("to_user_id / group_id must be a positive integer id")
        if state not in ("typing", "paused"):
            raise ValueError('state must be "typing" or "paused"')
        key = ("user", target) if group_id is None else ("group", target)
        now = time.monotonic()
        with self._lock:
            last = self._typing_sent.get(key)
            if last is not None and last[0] == state and now - last[1] < self.typing_interval:
                return False
            if len(self._typing_sent) >= 1024:      # bounded: forget the oldest peer
                del self._typing_sent[next(iter(self._typing_sent))]
            self._typing_sent.pop(key, None)
            self._typing_sent[key] = (state, now)
        data = {"toUserId": to_user_id} if group_id is None else {"groupId": group_id}
        self._send_frame({"type": "typing", "data": {**data, "state": state}})
        return True

    def ping(self, timeout: float | None = 5.0, wait: bool = True) -> float | None:
        """Send an application ``ping``; with ``wait``, return the seconds until its ``pong``."""
        if wait and threading.get_ident() == self._reader_ident:
            raise RuntimeError("cannot wait for a pong in a callback; use wait=False")
        start = time.monotonic()
        gen, n = self._send_frame({"type": "ping", "data": None}, count_ping=True)
        if not wait:
            return None
        self._wait_pong(gen, n, timeout)
        return time.monotonic() - start

    def refresh_token(self, token: str, timeout: float | None = 5.0) -> None:
        """Give the live connection a fresh token (the ``auth`` frame) and use it for
        later reconnects. Waits until the gateway has handled it (a ping barrier) and
        raises ``TokenRefused`` (code ``unauthorized`` or ``forbidden``) if it refused it."""
        if not isinstance(token, str) or not token:
            raise ValueError("token must be a non-empty string")
        with self._lock:
            mark = len(self._auth_errors)
        self._send_frame({"type": "auth", "data": {"token": token}})
        if threading.get_ident() == self._reader_ident:
            self._token = token
            return
        gen, n = self._send_frame({"type": "ping", "data": None}, count_ping=True)
        self._wait_pong(gen, n, timeout)
        with self._lock:
            refused = self._auth_errors[mark:]
            del self._auth_errors[:]
        if refused:
            e = refused[0]
            raise TokenRefused(e.code or "unauthorized", e.message or "")
        self._token = token

    # -- receiving ------------------------------------------------------------------------------
    def on(self, key: Any, fn: Callable[[AnyFrame], Any] | None = None):
        """Call ``fn(frame)`` for every frame whose ``type`` is ``key`` (``"chat"``,
        ``"online"``, ...), that is an instance of ``key`` (a frame class such as
        ``Presence``), or for every frame (``"*"``). Usable as a decorator."""
        def register(f: Callable[[AnyFrame], Any]):
            with self._lock:
                self._handlers.setdefault(key, []).append(f)
            return f
        return register if fn is None else register(fn)

    def off(self, key: Any, fn: Callable | None = None) -> None:
        """Remove one callback (or every callback of ``key``)."""
        with self._lock:
            if fn is None:
                self._handlers.pop(key, None)
            elif fn in self._handlers.get(key, []):
                self._handlers[key].remove(fn)

    def next_frame(self, timeout: float | None = None) -> AnyFrame:
        """The next frame (oldest first). Raises ``TimeoutError`` when none comes within
        ``timeout``, and, once the queue is empty, the error that ended the client."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._frames_cond:
            while not self._queue:
                if self._terminal is not None:
                    raise self._terminal
                if self._reader is None:
                    raise NotConnected("connect() first")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no frame within {timeout:g}s")
                # bounded waits, so that Ctrl-C is seen promptly everywhere
                self._frames_cond.wait(0.5 if remaining is None else min(remaining, 0.5))
            return self._queue.popleft()

    def frames(self, timeout: float | None = None) -> Iterator[AnyFrame]:
        """Iterate over incoming frames until the client is closed; raises the error
        that ended it otherwise (``Replaced``, ``TokenExpired``, ``ReconnectFailed``, ...)."""
        while True:
            try:
                frame = self.next_frame(timeout)
            except ClientClosed:
                return
            yield frame

    def __iter__(self) -> Iterator[AnyFrame]:
        return self.frames()

    # -- internals: connection ----------------------------------------------------------------
    def _open(self) -> websocket.WebSocket:
        url, headers, token = self.url, list(self.headers), self._token
        if self.platform:
            url += ("&" if "?" in url else "?") + "platform=" + quote(self.platform, safe="")
        if token:
            if self.use_header:
                headers.append(f"Authorization: Bearer {token}")
            else:
                url += ("&" if "?" in url else "?") + "token=" + quote(token, safe="")
        opts: dict[str, Any] = {"header": headers, "timeout": self.connect_timeout}
        if self.origin:
            opts["origin"] = self.origin
        else:
            opts["suppress_origin"] = True        # non-browser clients send no Origin
        ws = websocket.WebSocket(enable_multithread=True)
        try:
            ws.connect(url, **opts)
        except websocket.WebSocketBadStatusException as e:
            ws.shutdown()
            raise handshake_refused(e.status_code, e.resp_body) from None
        except (websocket.WebSocketException, OSError, ValueError) as e:
            ws.shutdown()
            # the message names self.url, never the URL with the token
            raise ConnectFailed(f"{self.url}: {type(e).__name__}: {e}") from None
        ws.settimeout(self.io_timeout)
        return ws

    def _install(self, ws: websocket.WebSocket) -> None:
        with self._lock:
            self._gen += 1
            self._ws, self._live, self._connected_at = ws, False, None
            self._pings_sent = self._pongs_seen = 0
            self._last_recv = self._last_ping = time.monotonic()

    @staticmethod
    def _shutdown_socket(ws: websocket.WebSocket) -> None:
        sock = ws.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _wake(self) -> None:
        w = self._wake_w
        if w is not None:
            try:
                w.send(b"x")
            except OSError:
                pass

    def _check_usable(self) -> None:
        if self._terminal is not None:
            raise self._terminal
        if self._stop.is_set():
            raise ClientClosed()

    def _run(self) -> None:
        self._reader_ident = threading.get_ident()
        attempt = 0
        end: SkyeIMError
        try:
            while True:
                with self._lock:
                    ws, gen = self._ws, self._gen
                code, reason = self._io_loop(ws, gen)
                with self._lock:
                    lived = (time.monotonic() - self._connected_at) if self._connected_at else 0.0
                    self._ws, self._live = None, False
                    self._cond.notify_all()
                ws.shutdown()
                if self._stop.is_set():
                    raise ClientClosed()
                self._classify_close(code, reason)
                if lived >= self.backoff.reset_after:
                    attempt = 0
                log.info("%s: connection lost (code %s); reconnecting", self._name, code)
                ws, attempt = self._reconnect(attempt)
                with self._lock:
                    if self._stop.is_set():
                        ws.shutdown()
                        raise ClientClosed()
                    self._install(ws)
        except SkyeIMError as e:
            end = e
        except BaseException as e:  # noqa: BLE001 - a bug: end the client visibly
            log.exception("%s: reader failed", self._name)
            end = ConnectionClosed(1006, message=f"client reader failed: {e!r}")
        with self._lock:
            self._finish(end)
        for s in (self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._wake_w = None

    def _finish(self, end: SkyeIMError) -> None:
        if self._terminal is None:
            self._terminal = end
            if not isinstance(end, ClientClosed):
                log.warning("%s: ended: %s", self._name, end)
        self._ws, self._live = None, False
        self._cond.notify_all()
        self._frames_cond.notify_all()

    def _classify_close(self, code: int | None, reason: str) -> None:
        """Raise the terminal error for a close code, or return to reconnect."""
        if code == CLOSE_REPLACED:
            raise Replaced(code, reason, "replaced by a newer login of the same user (4001)")
        if code == CLOSE_TOKEN_EXPIRED:
            if self.token_provider is None:
                raise TokenExpired(code, reason, "the token expired or was revoked (4003)")
            self._need_new_token = True
            return
        if code in NO_RECONNECT:
            raise ConnectionClosed(code, reason)
        if not self.reconnect:
            raise ConnectionClosed(code, reason)

    def _reconnect(self, attempt: int) -> tuple[websocket.WebSocket, int]:
        last: BaseException | None = None
        while True:
            attempt += 1
            if self.backoff.max_attempts is not None and attempt > self.backoff.max_attempts:
                raise ReconnectFailed(attempt - 1, last)
            if self._stop.wait(self.backoff.delay(attempt)):
                raise ClientClosed()
            self.reconnect_attempts += 1
            try:
                if self._need_new_token:
                    token = self.token_provider() if self.token_provider else None
                    if not isinstance(token, str) or not token:
                        raise ValueError("token_provider returned no token")
                    self._token, self._need_new_token = token, False
                return self._open(), attempt
            except Unauthorized as e:
                if self.token_provider is None:
                    raise
                self._need_new_token, last = True, e
            except ForbiddenOrigin:
                raise
            except HandshakeRefused as e:
                if e.status < 500:
                    raise
                last = e
            except ConnectFailed as e:
                last = e
            except Exception as e:  # noqa: BLE001 - the token provider failed
                log.warning("%s: token provider failed: %r", self._name, e)
                last = e
            log.debug("%s: reconnect attempt %d failed: %s", self._name, attempt, last)

    # -- internals: the reader loop -------------------------------------------------------------
    def _wait_readable(self, sock: socket.socket, poller: Any, timeout: float) -> bool:
        pending = getattr(sock, "pending", None)
        if pending is not None and pending():
            return True
        if poller is not None:
            events = poller.poll(max(int(math.ceil(timeout * 1000)), 0))
            fds = {fd for fd, _ in events}
        else:     # gevent's monkey-patching removes select.poll; its select has no fd limit
            r, _, _ = select.select([sock, self._wake_r], [], [], timeout)
            fds = {s.fileno() for s in r}
        if self._wake_r is not None and self._wake_r.fileno() in fds:
            try:
                while self._wake_r.recv(4096):
                    pass
            except OSError:
                pass
        return sock.fileno() in fds

    def _io_loop(self, ws: websocket.WebSocket, gen: int) -> tuple[int | None, str]:
        """Read one connection until it ends; returns (close code, reason), 1006 if none."""
        sock = ws.sock
        poller = None
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            poller.register(self._wake_r, select.POLLIN)
        parts: list[bytes] = []
        opcode = None
        stop_deadline = None
        while True:
            now = time.monotonic()
            if self._stop.is_set():
                if stop_deadline is None:
                    stop_deadline = now + self.close_timeout
                    if self._close_sent_gen != gen:
                        try:
                            with self._send_lock:
                                ws.send_close(1000)
                            self._close_sent_gen = gen
                        except Exception:  # noqa: BLE001 - best effort
                            return None, "closed by the client"
                elif now >= stop_deadline:
                    return None, "closed by the client"
            timeout = self._tick(ws, gen, now)
            if timeout is None:
                return 1006, "no answer from the gateway"
            if stop_deadline is not None:
                timeout = max(min(timeout, stop_deadline - now), 0.0)
            try:
                if not self._wait_readable(sock, poller, timeout):
                    continue
                frame = ws.recv_frame()
            except websocket.WebSocketTimeoutException:
                return 1006, "read timed out"
            except (websocket.WebSocketException, OSError, ValueError, AttributeError,
                    struct.error):
                return 1006, ""
            self._last_recv = time.monotonic()
            op = frame.opcode
            if op == ABNF.OPCODE_PING:
                try:
                    ws.pong(frame.data)
                except Exception:  # noqa: BLE001
                    return 1006, ""
                continue
            if op == ABNF.OPCODE_PONG:
                continue
            if op == ABNF.OPCODE_CLOSE:
                data = frame.data if isinstance(frame.data, bytes) else frame.data.encode()
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                reason = data[2:].decode("utf-8", "replace")
                if self._close_sent_gen != gen:
                    try:
                        echo = code if code in (1000, 1001) or 3000 <= code <= 4999 else 1000
                        with self._send_lock:
                            ws.send_close(echo)
                    except Exception:  # noqa: BLE001 - best effort
                        pass
                return code, reason
            data = frame.data if isinstance(frame.data, bytes) else frame.data.encode()
            if op in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY):
                parts, opcode = [data], op
            elif op == ABNF.OPCODE_CONT:
                parts.append(data)
            if not frame.fin:
                continue
            payload, kind = b"".join(parts), opcode
            parts, opcode = [], None
            if kind != ABNF.OPCODE_TEXT:
                log.warning("%s: ignoring a non-text frame from the gateway", self._name)
                continue
            self._on_text(payload, gen)

    def _tick(self, ws: websocket.WebSocket, gen: int, now: float) -> float | None:
        """Housekeeping between reads: keepalive, paced (re)sends. Returns how long the
        next read may wait, or None when the connection is dead."""
        timeout = 1.0
        if self.keepalive:
            idle = now - self._last_recv
            if idle >= 2 * self.keepalive:
                log.info("%s: nothing from the gateway for %.0fs", self._name, idle)
                return None
            if (idle >= self.keepalive and now - self._last_ping >= self.keepalive
                    and self._send_lock.acquire(False)):
                self._last_ping = now
                try:
                    ws.ping()
                except Exception:  # noqa: BLE001
                    return None
                finally:
                    self._send_lock.release()
            timeout = min(timeout, max(self.keepalive - idle, 0.05) if idle < self.keepalive
                          else 2 * self.keepalive - idle)
        wait = self._flush(blocking=False)
        if wait is not None:
            timeout = min(timeout, wait)
        return max(timeout, 0.005)

    def _on_text(self, payload: bytes, gen: int) -> None:
        try:
            obj = json.loads(payload)
        except ValueError:
            log.warning("%s: ignoring a frame that is not JSON", self._name)
            return
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            log.warning("%s: ignoring a frame without a string type", self._name)
            return
        data = obj.get("data")
        if obj["type"] == "sync_messages" and isinstance(data, dict) and "groupId" in data:
            self._on_group_page(data)
            return
        if obj["type"] == "sync_messages" and self.sync_enabled:
            self._on_sync_page(data)
            return
        frame = parse_frame(obj)
        if isinstance(frame, ChatMessage) and self.sync_enabled and not self._is_new(frame):
            return                    # seen already (a backlog pushed again, a sync overlap)
        if isinstance(frame, GroupMessage):
            with self._lock:
                if not self._groups.message(frame.group_id, frame.seq):
                    return            # had it from a sync page already
        elif isinstance(frame, Ack) and frame.group_id is not None and frame.status == "sent":
            with self._lock:          # my own: never yielded back from a sync page
                self._groups.message(frame.group_id, frame.seq)
        self._apply(frame, gen)
        self._dispatch(frame)
        if self.sync_enabled:
            self._after_frame(frame)
        if isinstance(frame, TokenExpiring) and self.token_provider is not None:
            try:
                self.refresh_token(self.token_provider())
            except Exception as e:  # noqa: BLE001
                log.warning("%s: token refresh failed: %r", self._name, e)

    # -- internals: sync (skyeim/client/sync.py keeps the state) ---------------------------
    def _is_new(self, m: ChatMessage) -> bool:
        with self._lock:
            me = self.user_id
            if m.from_user_id == me and m.msg_id and (
                    m.msg_id in self._outbox or m.msg_id in self._recent):
                new = False           # our own, sent from this client
                self._conversations.own(me, m.to_user_id or 0, m.msg_id, m.seq)
            else:
                new = self._conversations.message(me, m.from_user_id, m.to_user_id,
                                                  m.msg_id, m.seq)
        return new

    def _on_sync_page(self, data: Any) -> None:
        """A sync_messages page: its new messages go out as chat frames, in seq order."""
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            return
        msgs = [m for m in data["messages"] if isinstance(m, dict)]
        for m in sorted(msgs, key=lambda m: m.get("seq") if type(m.get("seq")) is int else 0):
            frame = ChatMessage.from_data(m)
            if self._is_new(frame):
                self._dispatch(frame)

    def _on_group_page(self, data: dict) -> None:
        """A group's sync_messages page: its new messages as GroupMessage frames, in seq order."""
        msgs = data.get("messages")
        msgs = [m for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []
        for m in sorted(msgs, key=lambda m: m.get("seq") if type(m.get("seq")) is int else 0):
            frame = GroupMessage.from_data(m)
            with self._lock:
                new = self._groups.message(frame.group_id, frame.seq)
            if new:
                self._dispatch(frame)

    def _after_frame(self, frame: AnyFrame) -> None:
        """Sync frames to send after ``frame``: a catch-up after `connected`, the next
        round after `sync_complete`, a range request after a chat beyond a gap."""
        with self._lock:
            if not self._live:
                return                # the catch-up after `connected` covers any gap
            if isinstance(frame, Connected):
                frames = self._conversations.catch_up()
            elif isinstance(frame, SyncComplete):
                frames = self._conversations.complete(frame.request_id, frame.conversations)
                frames += self._groups.complete(frame.request_id, frame.conversations)
            elif isinstance(frame, GroupUnread):
                frames = self._groups.on_unread(frame.groups)
            elif isinstance(frame, ErrorFrame) and frame.request_id:
                self._conversations.failed(frame.request_id)
                self._groups.failed(frame.request_id)
                frames = []
            elif isinstance(frame, (ChatMessage, Ack)):
                frames = self._conversations.gaps()
            else:
                frames = []
        self._send_sync(frames)

    def _send_sync(self, frames: list[dict]) -> None:
        for f in frames:
            try:
                self._send_frame(f)
            except (NotConnected, SkyeIMError) as e:
                # the next `connected` syncs again from what is held
                log.debug("%s: sync not sent: %s", self._name, e)
                return

    def _apply(self, frame: AnyFrame, gen: int) -> None:
        """Update the client's state from a frame (before callbacks see it)."""
        with self._lock:
            if isinstance(frame, Connected):
                self._live, self._connected_at = True, time.monotonic()
                self.connected_info, self.user_id = frame, frame.user_id
                if self._ever_live:
                    self.reconnects += 1
                    log.info("%s: reconnected; resending %d chats", self._name, len(self._outbox))
                self._ever_live = True
                self._cond.notify_all()
            elif isinstance(frame, Ack) and frame.msg_id:
                p = self._outbox.get(frame.msg_id) or self._recent.get(frame.msg_id)
                if p is None:
                    return
                if frame.status == "sent":
                    p.sent = frame
                    if p.to:
                        self._conversations.own(self.user_id, p.to, p.msg_id, frame.seq)
                elif frame.status == "delivered":
                    p.delivered = frame
                if self._outbox.pop(p.msg_id, None) is not None:
                    self._remember(p)
                self._cond.notify_all()
            elif isinstance(frame, ErrorFrame):
                if frame.msg_id and frame.msg_id in self._outbox:
                    p = self._outbox[frame.msg_id]
                    if frame.code in RETRYABLE and p.retries < self.max_retries:
                        p.retries += 1
                        p.sent_gen = -1
                        p.not_before = time.monotonic() + self.backoff.rng.uniform(
                            0.5, 1.0) * min(8.0, 0.5 * 2 ** p.retries)
                        log.info("%s: chat %s got %s; resending later", self._name,
                                 p.msg_id, frame.code)
                    else:
                        p.error = frame
                        del self._outbox[p.msg_id]
                        self._remember(p)
                        self._cond.notify_all()
                elif frame.msg_id is None and frame.code in ("unauthorized", "forbidden",
                                                             "bad_request"):
                    self._auth_errors.append(frame)
                    del self._auth_errors[:-16]
            elif isinstance(frame, Pong):
                if gen == self._gen:
                    self._pongs_seen += 1
                    self._cond.notify_all()

    def _remember(self, p: _Pending) -> None:
        self._recent[p.msg_id] = p
        while len(self._recent) > self.max_outbox:
            self._recent.popitem(last=False)

    def _dispatch(self, frame: AnyFrame) -> None:
        with self._lock:
            if self._queue_frames:
                if len(self._queue) == self._queue.maxlen:
                    self.dropped_frames += 1
                self._queue.append(frame)
                self._frames_cond.notify_all()
            handlers = []
            for key, fns in self._handlers.items():
                if key == "*" or key == frame.type or (
                        isinstance(key, type) and isinstance(frame, key)):
                    handlers.extend(fns)
        for fn in handlers:
            try:
                fn(frame)
            except Exception:  # noqa: BLE001 - a callback's bug must not stop the reader
                log.exception("%s: callback %r failed on %s", self._name, fn, frame.type)

    # -- internals: writing ----------------------------------------------------------------------
    def _flush(self, blocking: bool = True) -> float | None:
        """Write the outbox's chats not yet written to this connection, oldest first,
        within the rate limit. Returns seconds until more can go, or None. The reader
        does not block here while another thread is writing (it keeps reading)."""
        if not self._send_lock.acquire(blocking):
            return 0.05
        try:
            while True:
                with self._lock:
                    if not self._live or self._ws is None or self._stop.is_set():
                        return None
                    ws, gen, now = self._ws, self._gen, time.monotonic()
                    p, wait = None, None
                    for q in self._outbox.values():
                        if q.sent_gen == gen:
                            continue
                        if q.not_before > now:
                            wait = min(wait if wait is not None else math.inf, q.not_before - now)
                            continue
                        p = q
                        break
                    if p is None:
                        return wait
                    if self._limiter is not None and not self._limiter.try_take():
                        return self._limiter.wait_time()
                    p.sent_gen = gen
                try:
                    ws.send(p.payload)
                except Exception:  # noqa: BLE001 - the reader sees the broken socket
                    self._shutdown_socket(ws)
                    return None
        finally:
            self._send_lock.release()

    def _send_frame(self, obj: dict, count_ping: bool = False) -> tuple[int, int]:
        """Write a non-chat frame now (within the rate limit); NotConnected if not live."""
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        while True:
            with self._lock:
                self._check_usable()
                if not self._live or self._ws is None:
                    raise NotConnected("not connected to the gateway right now")
                delay = 0.0
                if self._limiter is not None and not self._limiter.try_take():
                    delay = self._limiter.wait_time()
            if delay <= 0:
                break
            time.sleep(delay)
        with self._send_lock:
            with self._lock:
                ws, gen = self._ws, self._gen
                if ws is None:
                    raise NotConnected("not connected to the gateway right now")
                n = 0
                if count_ping:
                    self._pings_sent += 1
                    n = self._pings_sent
            try:
                ws.send(text)
            except Exception as e:  # noqa: BLE001
                self._shutdown_socket(ws)
                raise NotConnected(f"the connection broke: {e}") from None
        return gen, n

    def _wait_pong(self, gen: int, n: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pongs_seen < n or self._gen != gen:
                if self._gen != gen or self._ws is None:
                    self._check_usable()
                    raise NotConnected("the connection was lost before the pong")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no pong within {timeout:g}s")
                self._cond.wait(remaining)

    def _wait_for(self, p: _Pending, status: str, deadline: float | None) -> SendResult:
        with self._cond:
            while True:
                if p.error is not None:
                    raise ChatError(p.msg_id, p.error.code or "error", p.error.message or "")
                if (p.delivered if status == "delivered" else p.sent or p.delivered):
                    return p.result()
                if self._terminal is not None:
                    raise self._terminal
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise AckTimeout(p.msg_id, status, p.result())
                self._cond.wait(remaining)
