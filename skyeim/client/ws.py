"""A blocking WebSocket client for the SkyeIM gateway (PROTOCOL.md sections 1 to 5).

``Client`` is the front of four parts: the connection (connection.py: the
socket, its reader thread, reconnects with backoff), the outbox (outbox.py:
chats until their ack, resent with the same msgId), the inbox (inbox.py: each
message once, and the sync frames to send) and the dispatcher (dispatcher.py:
callbacks and the frame queue). The parts share the Client's lock.

Delivery guarantee: every chat goes through a bounded outbox and stays there
until the gateway acks it ``sent`` (or refuses it with an error). After a
reconnect the outbox is sent again with the same msgIds; the gateway's
idempotency on ``(fromUserId, msgId)`` turns a resend of a stored message into
``ack sent`` with ``duplicate: true`` and the recipient still gets it once.
"""
from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid
from typing import Any, Callable, Iterator

from skyeim.protocol import ContentType, ErrorCode, is_msg_id, is_positive_id, is_user_id

from .backoff import Backoff, TypingThrottle
from .connection import Connection, ws_url
from .api import Api
from .dispatcher import Dispatcher
from .errors import (AckTimeout, ChatError, ClientClosed, ConnectFailed, NotConnected,
                     OutboxFull, SkyeIMError, TokenRefused)
from .frames import (Ack, AnyFrame, Connected, ErrorFrame, Pong, TokenExpiring, decode,
                     parse_frame)
from .files import Source, file_content, http_base
from .inbox import Inbox
from .outbox import Outbox, Pending, SendResult

__all__ = ["Client", "SendResult", "ws_url"]

log = logging.getLogger("skyeim.client")

WAITS = ("sent", "delivered", None)
# answers to an `auth` frame that refuse the token (msgId null)
AUTH_REFUSALS = frozenset({ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN, ErrorCode.BAD_REQUEST})
CONTENT_TYPES = ", ".join(f"{c.value} {c.name.lower()}" for c in ContentType)
_ids = itertools.count(1)


def _compact(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _chat_frame(kind: str, target_key: str, target: int, content: str, content_type: int,
                msg_id: str | None, extra: dict | None = None) -> tuple[str, str]:
    """(msgId, the frame's text) of a ``chat`` or ``groupchat``, checked as the gateway would."""
    if not isinstance(content, str) or not content:
        raise ValueError("content must be a non-empty string")
    if not isinstance(content_type, int) or isinstance(content_type, bool):
        raise ValueError(f"content_type must be an integer ({CONTENT_TYPES})")
    msg_id = str(uuid.uuid4()) if msg_id is None else msg_id
    if not is_msg_id(msg_id):
        raise ValueError("msg_id must be 1 to 64 characters of [A-Za-z0-9_-]")
    return msg_id, _compact({"type": kind, "data": {
        "msgId": msg_id, target_key: target, "content": content,
        "contentType": int(content_type), **(extra or {})}})


class _Part:
    """A Client attribute kept by one of its parts; reading and setting it reach the part."""

    def __init__(self, part: str, name: str | None = None):
        self.part, self.name = part, name

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = self.name or name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else getattr(getattr(obj, self.part), self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(getattr(obj, self.part), self.name, value)


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

    ``ca_file``: for ``wss://`` (or ``https://``) URLs, a PEM file of the CA(s)
    to trust instead of the system's store, e.g. a private CA in front of a
    gateway behind nginx (docs/deploy.md).
    """

    # settings and counters kept by the parts (settable, as they always were)
    url = _Part("_conn")
    platform = _Part("_conn")     # `platform` query parameter: web, ios, android, desktop
    use_header = _Part("_conn")
    token_provider = _Part("_conn")
    origin = _Part("_conn")
    headers = _Part("_conn")
    reconnect = _Part("_conn")
    backoff = _Part("_conn")
    connect_timeout = _Part("_conn")
    io_timeout = _Part("_conn")
    keepalive = _Part("_conn")
    close_timeout = _Part("_conn")
    ca_file = _Part("_conn")
    reconnects = _Part("_conn")            # successful reconnects (a `connected` after the first)
    reconnect_attempts = _Part("_conn")    # handshakes tried while reconnecting
    max_outbox = _Part("_outbox", "limit")
    max_retries = _Part("_outbox", "max_retries")
    dropped_frames = _Part("_frames", "dropped")
    sync_enabled = _Part("_inbox", "sync")
    typing_interval = _Part("_typing", "interval")   # s between repeated `typing` to one target

    def __init__(self, url: str, token: str | None = None, *, use_header: bool = False,
                 token_provider: Callable[[], str] | None = None, origin: str | None = None,
                 headers: list[str] | None = None, reconnect: bool = True,
                 backoff: Backoff | None = None, connect_timeout: float = 10.0,
                 io_timeout: float = 30.0, keepalive: float | None = 20.0,
                 close_timeout: float = 1.0, max_outbox: int = 1000, max_queue: int = 10000,
                 max_message_size: int = 65536, rate_limit: tuple[float, int] | None = (40, 80),
                 max_retries: int = 5, sync: bool = True, platform: str | None = None,
                 typing_interval: float = 1.0, ca_file: str | None = None):
        self._name = f"skyeim-client-{next(_ids)}"
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)       # acks, connected, pongs
        backoff = backoff or Backoff()
        self._frames = Dispatcher(max_queue, self._name)
        self._conn = Connection(
            url, cond=self._cond, on_message=self._on_message, next_chat=self._next_chat,
            on_end=self._frames.end, token=token, use_header=use_header,
            token_provider=token_provider, origin=origin, headers=headers, platform=platform,
            reconnect=reconnect, backoff=backoff, connect_timeout=connect_timeout,
            io_timeout=io_timeout, keepalive=keepalive, close_timeout=close_timeout,
            rate_limit=rate_limit, ca_file=ca_file, name=self._name)
        self._outbox = Outbox(max_outbox, max_retries, rng=backoff.rng)
        self._inbox = Inbox(sync, own=lambda msg_id: self._outbox.find(msg_id) is not None)
        self._typing = TypingThrottle(typing_interval)
        self.max_message_size = max_message_size
        self._auth_errors: list[ErrorFrame] = []
        self._ping_gen = self._pings_sent = self._pongs_seen = 0

        self.user_id: int | None = None
        self.connected_info: Connected | None = None   # the last `connected` frame

    def __repr__(self) -> str:
        state = "closed" if self.closed else "live" if self.live else "not live"
        return f"<Client {self.url} user={self.user_id} {state}>"

    def __enter__(self) -> "Client":
        if not self._conn.started:
            self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- state ------------------------------------------------------------------------------
    @property
    def token(self) -> str | None:
        return self._conn.token

    @property
    def live(self) -> bool:
        """Connected and caught up (the current connection has sent `connected`)."""
        return self._conn.live

    @property
    def closed(self) -> bool:
        return self._conn.error is not None

    @property
    def error(self) -> SkyeIMError | None:
        """Why the client ended (None while it runs); ``ClientClosed`` after ``close()``."""
        return self._conn.error

    @property
    def outbox(self) -> list[str]:
        """msgIds of chats not yet acked ``sent``, oldest first."""
        with self._lock:
            return self._outbox.ids()

    @property
    def conversations(self) -> dict[int, int]:
        """peer id -> the seq up to which this client holds the conversation (no gaps)."""
        with self._lock:
            return dict(self._inbox.conversations.marks)

    @property
    def group_seqs(self) -> dict[int, int]:
        """Group id -> the highest seq this client has yielded."""
        with self._lock:
            return dict(self._inbox.groups.held)

    # -- connecting and closing --------------------------------------------------------------
    def connect(self, timeout: float | None = None) -> Connected:
        """Open the socket and wait for ``connected`` (the backlog chats before it go
        to callbacks and the iterator). Raises ``Unauthorized``, ``ForbiddenOrigin``,
        ``Overloaded`` (all ``HandshakeRefused``) or ``ConnectFailed``."""
        timeout = self.connect_timeout if timeout is None else timeout
        self._conn.start()
        self._frames.start()
        if self._conn.wait_live(timeout):
            return self.connected_info  # type: ignore[return-value]
        self.close()
        raise ConnectFailed(f"{self.url}: no 'connected' frame within {timeout:g}s")

    def close(self, timeout: float | None = None) -> None:
        """Close normally (1000) and stop the reader. Chats still in the outbox are
        not sent. Safe to call more than once, and from a callback."""
        self._conn.close(timeout)

    def drop_connection(self) -> None:
        """Drop the current TCP connection without a close frame, as a network failure
        would; the client then reconnects (if it may). For tests and debugging."""
        self._conn.drop()

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
        if not is_user_id(to_user_id):
            raise ValueError("to_user_id must be a positive integer user id")
        if wait not in WAITS:
            raise ValueError(f"wait must be one of {WAITS}")
        msg_id, payload = _chat_frame("chat", "toUserId", to_user_id, content, content_type,
                                      msg_id)
        return self._enqueue(msg_id, payload, to_user_id, wait, timeout)

    def send_groupchat(self, group_id: int, content: str, content_type: int = 1,
                       msg_id: str | None = None, wait: str | None = "sent",
                       timeout: float | None = 10.0,
                       mentions: list[int] | None = None) -> SendResult:
        """Send a message to a group (extension: docs/protocol.md "Groups") through the
        outbox, as ``send_chat``; ``wait`` is "sent" or None (groups have no delivered
        acks). Not a member: ``ChatError`` with code ``forbidden``; muted: ``muted``.
        ``mentions``: member ids the message mentions ("Mentions in groups")."""
        if not is_positive_id(group_id):
            raise ValueError("group_id must be a positive integer group id")
        if wait not in ("sent", None):
            raise ValueError('wait must be "sent" or None for a group message')
        if mentions is not None and (not isinstance(mentions, (list, tuple))
                                     or not all(is_user_id(u) for u in mentions)):
            raise ValueError("mentions must be a list of user ids")
        msg_id, payload = _chat_frame("groupchat", "groupId", group_id, content, content_type,
                                      msg_id, {"mentions": list(dict.fromkeys(mentions))}
                                      if mentions else None)
        return self._enqueue(msg_id, payload, 0, wait, timeout)

    # -- files (extension: docs/protocol.md "Files, images and voice") -------------------
    def api(self) -> Api:
        """The REST API of this client's gateway, with its current token."""
        return Api(http_base(self.url), token=self.token)

    def upload_file(self, source: Source, name: str | None = None) -> dict:
        """Upload a file (a path, or bytes named ``name``); the gateway's answer
        ``{fileId, name, size, mime, width?, height?, url, thumbnailUrl?, expiresAt}``."""
        return self.api().upload_file(source, name)

    def send_file(self, to_user_id: int | None, source: Source, *, group_id: int | None = None,
                  content_type: int = ContentType.FILE, name: str | None = None,
                  wait: str | None = "sent", timeout: float | None = 10.0,
                  **extra: Any) -> tuple[SendResult, dict]:
        """Upload ``source`` and send it as a file message (contentType 3; 2 image,
        4 voice) to a user or, with ``group_id``, to a group; ``extra`` joins the
        content (``durationMs`` for voice). Returns the send's result and the upload."""
        upload = self.upload_file(source, name)
        content = file_content(upload, name, **extra)
        if group_id is not None:
            return self.send_groupchat(group_id, content, int(content_type), wait=wait,
                                       timeout=timeout), upload
        if to_user_id is None:
            raise ValueError("give to_user_id or group_id")
        return self.send_chat(to_user_id, content, int(content_type), wait=wait,
                              timeout=timeout), upload

    def send_image(self, to_user_id: int | None, source: Source, **kw: Any
                   ) -> tuple[SendResult, dict]:
        """``send_file`` as an image message (contentType 2, with width and height)."""
        return self.send_file(to_user_id, source, content_type=ContentType.IMAGE, **kw)

    def mark_group_read(self, group_id: int, seq: int) -> None:
        """Move my read cursor of the group up to ``seq`` (extension)."""
        if not (is_positive_id(group_id) and is_positive_id(seq)):
            raise ValueError("group_id and seq must be positive integers")
        self._send_frame({"type": "group_read", "data": {"groupId": group_id, "seq": seq}})

    def request_conversations(self, limit: int | None = None, before: str | None = None,
                              request_id: str | None = None) -> None:
        """Ask for a page of the conversation list (extension); it arrives as a
        ``ConversationsPage`` frame (with ``request_id`` when one is given)."""
        data: dict[str, Any] = {}
        if limit is not None:
            data["limit"] = limit
        if before:
            data["before"] = before
        if request_id is not None:
            data["requestId"] = request_id
        self._send_frame({"type": "conversations", "data": data})

    def sync_group(self, group_id: int, after_seq: int | None = None) -> None:
        """Ask for the group's messages after ``after_seq`` (default: the seq held);
        they arrive as GroupMessage frames, each once."""
        with self._lock:
            frames = self._inbox.groups.sync_from(group_id, after_seq)
        self._send_sync(frames)

    def track_group(self, group_id: int, last_seq: int) -> None:
        """Hold the group's messages as known up to ``last_seq`` (e.g. from an app's
        storage): the ``group_unread`` after each ``connected`` then syncs the group from
        there, with what was recalled or edited since the last sync."""
        if not is_positive_id(group_id) or type(last_seq) is not int or last_seq < 1:
            raise ValueError("group_id must be a group id and last_seq an integer >= 1")
        with self._lock:
            self._inbox.groups.track(group_id, last_seq)

    def track(self, peer_id: int, last_seq: int = 0) -> None:
        """Hold ``peer_id``'s conversation as known up to ``last_seq`` (0: nothing yet);
        it is synced after every ``connected`` (now too, if live)."""
        if not is_user_id(peer_id) or type(last_seq) is not int or last_seq < 0:
            raise ValueError("peer_id must be a user id and last_seq an integer >= 0")
        with self._lock:
            self._inbox.conversations.track(peer_id, last_seq)
            live = self.live
        if live and self.sync_enabled:
            self.sync([peer_id])

    def sync(self, peers: list[int] | None = None) -> None:
        """Send a sync for the known conversations (or ``peers``) now; the missed
        messages arrive as ``ChatMessage`` frames, then a ``SyncComplete``."""
        with self._lock:
            frames = self._inbox.conversations.catch_up(peers)
        self._send_sync(frames)

    def wait_ack(self, msg_id: str, status: str = "sent",
                 timeout: float | None = 10.0) -> SendResult:
        """Wait for an ack of a chat sent earlier with ``wait=None`` (one still in the
        outbox or among the last ``max_outbox`` acked ones)."""
        if status not in ("sent", "delivered"):
            raise ValueError("status must be 'sent' or 'delivered'")
        if self._conn.in_reader:
            raise RuntimeError("cannot wait for an ack in a callback")
        with self._lock:
            p = self._outbox.find(msg_id)
        if p is None:
            raise KeyError(f"no chat {msg_id} is known to this client")
        return self._wait_for(p, status, None if timeout is None else time.monotonic() + timeout)

    def result(self, msg_id: str) -> SendResult | None:
        """What is known now about a chat sent by this client (None if forgotten)."""
        with self._lock:
            p = self._outbox.find(msg_id)
            return p.result() if p else None

    def mark_read(self, peer_id: int, msg_ids: list[str] | None = None) -> None:
        """Send a read receipt: ``msg_ids`` from ``peer_id`` (None: every unread one)."""
        if not is_user_id(peer_id):
            raise ValueError("peer_id must be a positive integer user id")
        data: dict[str, Any] = {"peerId": peer_id}
        if msg_ids is not None:
            data["msgIds"] = list(msg_ids)
        self._send_frame({"type": "read", "data": data})

    # -- recall, edit, delete for me (docs/protocol.md "Recall, edit, delete") ----------------
    def recall(self, msg_id: str, group_id: int | None = None) -> None:
        """Take back a chat this user sent (within the gateway's Chat.RecallWindow), or,
        with ``group_id``, a message it sent to that group. Both users' devices (every
        member's) get ``MessageRecalled``; a refusal is an ``ErrorFrame`` with the msgId
        and code ``too_late``, ``not_found`` (``forbidden``: not a member;
        ``not_supported``: the server cannot recall group messages)."""
        self._send_frame({"type": "recall", "data": {"msgId": self._own_msg_id(msg_id),
                                                     **self._group_field(group_id)}})

    def edit(self, msg_id: str, content: str, group_id: int | None = None) -> None:
        """Replace the content of a chat this user sent (within Chat.EditWindow), or of
        its message to the group ``group_id``; both users' devices (every member's) get
        ``MessageEdited`` (refusals: ``too_late``, ``recalled``, ``not_found``)."""
        if not isinstance(content, str) or not content:
            raise ValueError("content must be a non-empty string")
        self._send_frame({"type": "edit", "data": {"msgId": self._own_msg_id(msg_id),
                                                   "content": content,
                                                   **self._group_field(group_id)}})

    @staticmethod
    def _group_field(group_id: int | None) -> dict:
        if group_id is None:
            return {}
        if not is_positive_id(group_id):
            raise ValueError("group_id must be a positive integer group id")
        return {"groupId": group_id}

    def delete_for_me(self, peer_id: int, msg_ids: list[str]) -> None:
        """Hide messages of the conversation with ``peer_id`` (from either side) from this
        user's history; this user's devices get ``MessagesDeleted``, the peer nothing."""
        if not is_user_id(peer_id):
            raise ValueError("peer_id must be a positive integer user id")
        ids = [self._own_msg_id(m) for m in msg_ids]
        if not 1 <= len(ids) <= 200:
            raise ValueError("give 1 to 200 msgIds")
        self._send_frame({"type": "delete", "data": {"peerId": peer_id, "msgIds": ids}})

    @staticmethod
    def _own_msg_id(msg_id: str) -> str:
        if not is_msg_id(msg_id):
            raise ValueError("msg_id must be 1 to 64 characters of [A-Za-z0-9_-]")
        return msg_id

    def send_typing(self, to_user_id: int | None = None, state: str = "typing", *,
                    group_id: int | None = None) -> bool:
        """Tell ``to_user_id`` (or the members of ``group_id``) that this user is typing
        ("typing") or stopped ("paused"). Never stored or acked. The same state to the
        same peer or group goes out at most every ``typing_interval`` s (the gateway
        drops what is over WebSocket.TypingRate); returns False when skipped for that."""
        if (to_user_id is None) == (group_id is None):
            raise ValueError("give either to_user_id or group_id")
        if not is_positive_id(to_user_id if group_id is None else group_id):
            raise ValueError("to_user_id / group_id must be a positive integer id")
        if state not in ("typing", "paused"):
            raise ValueError('state must be "typing" or "paused"')
        if group_id is None:
            key, data = ("user", to_user_id), {"toUserId": to_user_id}
        else:
            key, data = ("group", group_id), {"groupId": group_id}
        with self._lock:
            if not self._typing.allow(key, state):
                return False
        self._send_frame({"type": "typing", "data": {**data, "state": state}})
        return True

    def ping(self, timeout: float | None = 5.0, wait: bool = True) -> float | None:
        """Send an application ``ping``; with ``wait``, return the seconds until its ``pong``."""
        if wait and self._conn.in_reader:
            raise RuntimeError("cannot wait for a pong in a callback; use wait=False")
        start = time.monotonic()
        gen, n = self._send_ping()
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
        if self._conn.in_reader:
            self._conn.token = token
            return
        gen, n = self._send_ping()
        self._wait_pong(gen, n, timeout)
        with self._lock:
            refused = self._auth_errors[mark:]
            del self._auth_errors[:]
        if refused:
            e = refused[0]
            raise TokenRefused(e.code or ErrorCode.UNAUTHORIZED, e.message or "")
        self._conn.token = token

    # -- receiving ------------------------------------------------------------------------------
    def on(self, key: Any, fn: Callable[[AnyFrame], Any] | None = None):
        """Call ``fn(frame)`` for every frame whose ``type`` is ``key`` (``"chat"``,
        ``"online"``, ...), that is an instance of ``key`` (a frame class such as
        ``Presence``), or for every frame (``"*"``). Usable as a decorator."""
        def register(f: Callable[[AnyFrame], Any]):
            self._frames.on(key, f)
            return f
        return register if fn is None else register(fn)

    def off(self, key: Any, fn: Callable | None = None) -> None:
        """Remove one callback (or every callback of ``key``)."""
        self._frames.off(key, fn)

    def next_frame(self, timeout: float | None = None) -> AnyFrame:
        """The next frame (oldest first). Raises ``TimeoutError`` when none comes within
        ``timeout``, and, once the queue is empty, the error that ended the client."""
        return self._frames.next(timeout)

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

    # -- internals: the outbox ----------------------------------------------------------------
    def _enqueue(self, msg_id: str, payload: str, to: int, wait: str | None,
                 timeout: float | None) -> SendResult:
        if wait and self._conn.in_reader:
            raise RuntimeError("cannot wait for an ack in a callback; use wait=None")
        if len(payload.encode("utf-8")) > self.max_message_size:
            raise ValueError(f"the chat frame is larger than {self.max_message_size} bytes")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._conn.check_usable()
            if msg_id in self._outbox:
                raise ValueError(f"msgId {msg_id} is already waiting in the outbox")
            while self._outbox.full:           # ends when acks make room, or at the deadline
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise OutboxFull(f"{len(self._outbox)} chats are waiting for their ack")
                self._cond.wait(remaining)
                self._conn.check_usable()
            p = self._outbox.add(msg_id, payload, to)
        self._conn.flush()
        self._conn.wake()
        return self._wait_for(p, wait, deadline) if wait else p.result()

    def _next_chat(self, gen: int) -> tuple[str | None, float | None]:
        """The connection's writer asks (under the lock) for the next chat for socket ``gen``."""
        p, wait = self._outbox.next_to_write(gen)
        if p is None:
            return None, wait
        self._outbox.written(p, gen)
        return p.payload, None

    def _wait_for(self, p: Pending, status: str, deadline: float | None) -> SendResult:
        with self._cond:
            while True:                        # ends with the ack, an error, or the deadline
                if p.error is not None:
                    raise ChatError(p.msg_id, p.error.code or "error", p.error.message or "")
                if p.reached(status):
                    return p.result()
                if self._conn.error is not None:
                    raise self._conn.error
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise AckTimeout(p.msg_id, status, p.result())
                self._cond.wait(remaining)

    # -- internals: other frames out ----------------------------------------------------------
    def _send_frame(self, obj: dict) -> None:
        """Write a non-chat frame now (within the rate limit); NotConnected if not live."""
        self._conn.send(_compact(obj))

    def _send_sync(self, frames: list[dict]) -> None:
        for f in frames:
            try:
                self._send_frame(f)
            except (SkyeIMError, TimeoutError) as e:
                # the next `connected` syncs again from what is held
                log.debug("%s: sync not sent: %s", self._name, e)
                return

    def _send_ping(self) -> tuple[int, int]:
        return self._conn.send(_compact({"type": "ping", "data": None}), self._count_ping)

    def _count_ping(self, gen: int) -> int:
        """Number this socket's pings in the order they are written (under the lock)."""
        if self._ping_gen != gen:
            self._ping_gen, self._pings_sent, self._pongs_seen = gen, 0, 0
        self._pings_sent += 1
        return self._pings_sent

    def _wait_pong(self, gen: int, n: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not (self._ping_gen == gen and self._pongs_seen >= n):
                if self._conn.gen != gen or not self._conn.open:
                    self._conn.check_usable()
                    raise NotConnected("the connection was lost before the pong")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no pong within {timeout:g}s")
                self._cond.wait(remaining)

    # -- internals: frames in (the reader thread) -----------------------------------------------
    def _on_message(self, payload: bytes, gen: int) -> None:
        obj = decode(payload)
        if obj is None:
            log.warning("%s: ignoring a frame that is not a JSON object with a string type",
                        self._name)
            return
        data = obj.get("data")
        if obj["type"] == "sync_messages" and self._inbox.takes_page(data):
            with self._lock:
                new = self._inbox.page(data, self.user_id)
            for frame in new:
                self._frames.dispatch(frame)
            return
        frame = parse_frame(obj)
        with self._lock:
            if not self._inbox.admit(frame, self.user_id):
                return            # seen already (a backlog pushed again, a sync overlap)
        self._apply(frame, gen)
        self._frames.dispatch(frame)
        with self._lock:
            follow = self._inbox.after(frame, self.live)
        self._send_sync(follow)
        if isinstance(frame, TokenExpiring) and self.token_provider is not None:
            try:
                self.refresh_token(self.token_provider())
            except Exception as e:  # noqa: BLE001
                log.warning("%s: token refresh failed: %r", self._name, e)

    def _apply(self, frame: AnyFrame, gen: int) -> None:
        """Update the client's state from a frame (before callbacks see it)."""
        with self._cond:
            if isinstance(frame, Connected):
                self.connected_info, self.user_id = frame, frame.user_id
                if self._conn.mark_live():
                    log.info("%s: reconnected; resending %d chats", self._name, len(self._outbox))
            elif isinstance(frame, Ack):
                p = self._outbox.on_ack(frame)
                if p is not None:
                    if frame.status == "sent" and p.to:
                        self._inbox.sent(self.user_id, p.to, p.msg_id, frame.seq)
                    self._cond.notify_all()
            elif isinstance(frame, ErrorFrame):
                p = self._outbox.on_error(frame)
                if p is not None and p.error is None:
                    log.info("%s: chat %s got %s; resending later", self._name, p.msg_id,
                             frame.code)
                elif p is not None:
                    self._cond.notify_all()
                elif frame.msg_id is None and frame.code in AUTH_REFUSALS:
                    self._auth_errors.append(frame)
                    del self._auth_errors[:-16]
            elif isinstance(frame, Pong) and gen == self._ping_gen:
                self._pongs_seen += 1
                self._cond.notify_all()
