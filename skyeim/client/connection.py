"""The connection: one WebSocket to the gateway at a time, kept open.

Built on websocket-client. It opens the socket (a refused handshake becomes a
typed ``HandshakeRefused``), runs one daemon reader thread that answers
protocol pings, reassembles fragments, keeps the connection alive, does the
close handshake and reconnects with exponential backoff and full jitter. It
uses only ``threading``, ``select`` and ``socket``, so it works unchanged in a
gevent-monkey-patched process (the thread is then a greenlet) and without
gevent.

It knows nothing of chats. Its owner gives it three functions: ``on_message(
payload, gen)`` gets every text message of connection number ``gen``;
``next_chat(gen)`` hands out, under the lock, the next queued text to write
to that connection (the outbox); ``on_end(error)`` hears why it ended for good.
The owner's lock (``cond``) guards the connection's state too, so that "is it
live?" and the outbox change together.
"""
from __future__ import annotations

import logging
import math
import select
import socket
import struct
import threading
import time
from typing import Any, Callable
from urllib.parse import quote, urlsplit, urlunsplit

import websocket
from websocket import ABNF

from skyeim.protocol import CloseCode

from .backoff import Backoff, RateLimiter
from .errors import (ClientClosed, ConnectFailed, ConnectionClosed, ForbiddenOrigin,
                     HandshakeRefused, NotConnected, ReconnectFailed, Replaced, SkyeIMError,
                     TokenExpired, Unauthorized, handshake_refused)

log = logging.getLogger("skyeim.client")

# closes after which reconnecting cannot help (the same frames would meet the same
# close); 1003, 1005, 1008 and 1010 are RFC 6455 codes a proxy may send, the gateway never
FINAL_CLOSES = frozenset({CloseCode.NORMAL, CloseCode.PROTOCOL_ERROR, 1003, 1005,
                          CloseCode.INVALID_DATA, 1008, CloseCode.TOO_BIG, 1010})
CLOSED_BY_CLIENT = "closed by the client"
FLUSH_BATCH = 256         # chats written in one go before the reader reads again
WRITE_BUSY = 0.05         # s before the reader tries to write again while another thread writes


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


def _with_query(url: str, key: str, value: str) -> str:
    return url + ("&" if "?" in url else "?") + key + "=" + quote(value, safe="")


def final_close(code: int | None, reason: str, *, can_renew_token: bool,
                reconnect: bool) -> ConnectionClosed | None:
    """The error that ends the client after the gateway closed with ``code``, or None
    when the client reconnects (after 4003 only with a fresh token)."""
    if code == CloseCode.REPLACED:
        return Replaced(code, reason, "replaced by a newer login of the same user (4001)")
    if code == CloseCode.TOKEN_EXPIRED:
        if can_renew_token:
            return None
        return TokenExpired(code, reason, "the token expired or was revoked (4003)")
    if code in FINAL_CLOSES or not reconnect:
        return ConnectionClosed(code, reason)
    return None


class _Message:
    """Reassembles a message from its frames (RFC 6455 5.4)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.opcode: int | None = None

    def add(self, frame: ABNF) -> tuple[int | None, bytes] | None:
        """(opcode, payload) once the message is complete, else None."""
        data = frame.data if isinstance(frame.data, bytes) else frame.data.encode()
        if frame.opcode in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY):
            self.parts, self.opcode = [data], frame.opcode
        elif frame.opcode == ABNF.OPCODE_CONT:
            self.parts.append(data)
        if not frame.fin:
            return None
        done = (self.opcode, b"".join(self.parts))
        self.parts, self.opcode = [], None
        return done


class _Readable:
    """Waits until the socket or the wake-up socket is readable. gevent's
    monkey-patching removes select.poll; its select has no descriptor limit."""

    def __init__(self, sock: socket.socket, wake: socket.socket):
        self.sock, self.wake = sock, wake
        self.poller = None
        if hasattr(select, "poll"):
            self.poller = select.poll()
            self.poller.register(sock, select.POLLIN)
            self.poller.register(wake, select.POLLIN)

    def wait(self, timeout: float) -> bool:
        pending = getattr(self.sock, "pending", None)          # TLS: bytes already decrypted
        if pending is not None and pending():
            return True
        if self.poller is not None:
            fds = {fd for fd, _ in self.poller.poll(max(int(math.ceil(timeout * 1000)), 0))}
        else:
            fds = {s.fileno() for s in select.select([self.sock, self.wake], [], [], timeout)[0]}
        if self.wake.fileno() in fds:
            try:
                while self.wake.recv(4096):          # ends at EAGAIN (non-blocking)
                    pass
            except OSError:
                pass
        return self.sock.fileno() in fds


class Connection:
    """The socket, its reader and its reconnects (see the module's docstring)."""

    def __init__(self, url: str, *, cond: threading.Condition,
                 on_message: Callable[[bytes, int], None],
                 next_chat: Callable[[int], tuple[str | None, float | None]],
                 on_end: Callable[[SkyeIMError], None], token: str | None = None,
                 use_header: bool = False, token_provider: Callable[[], str] | None = None,
                 origin: str | None = None, headers: list[str] | None = None,
                 platform: str | None = None, reconnect: bool = True,
                 backoff: Backoff | None = None, connect_timeout: float = 10.0,
                 io_timeout: float = 30.0, keepalive: float | None = 20.0,
                 close_timeout: float = 1.0, rate_limit: tuple[float, int] | None = (40, 80),
                 ca_file: str | None = None, name: str = "skyeim-client"):
        self.url = ws_url(url)
        self.token, self.use_header, self.token_provider = token, use_header, token_provider
        self.origin, self.headers, self.platform = origin, list(headers or []), platform
        self.reconnect, self.backoff = reconnect, backoff or Backoff()
        self.connect_timeout, self.io_timeout = connect_timeout, io_timeout
        self.keepalive, self.close_timeout = keepalive, close_timeout
        self.ca_file = ca_file       # wss: trust this CA file (PEM) instead of the system's
        self.name = name
        self._cond = cond
        self._on_message, self._next_chat, self._on_end = on_message, next_chat, on_end
        self._limiter = RateLimiter(*rate_limit) if rate_limit else None
        self._send_lock = threading.Lock()         # the order of writes; taken before _cond
        self._stop = threading.Event()

        self.live = False                  # the current connection has sent `connected`
        self.error: SkyeIMError | None = None      # why it ended for good
        self.reconnects = 0                # successful reconnects (a `connected` after the first)
        self.reconnect_attempts = 0        # handshakes tried while reconnecting
        self._ws: websocket.WebSocket | None = None
        self._gen = 0
        self._ever_live = False
        self._connected_at: float | None = None
        self._close_sent_gen = -1
        self._need_new_token = False
        self._reader: threading.Thread | None = None
        self._reader_ident: int | None = None
        self._connecting = False
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._last_recv = self._last_ping = 0.0

    # -- state -----------------------------------------------------------------------
    @property
    def gen(self) -> int:
        """The number of the current (or last) socket: 1, 2, ... one per (re)connect."""
        return self._gen

    @property
    def open(self) -> bool:
        return self._ws is not None

    @property
    def started(self) -> bool:
        return self._reader is not None

    @property
    def in_reader(self) -> bool:
        """Whether the caller runs in the reader (a callback): it must not wait for frames."""
        return threading.get_ident() == self._reader_ident

    def check_usable(self) -> None:
        """Raise the error that ended the connection, or ClientClosed once closing."""
        if self.error is not None:
            raise self.error
        if self._stop.is_set():
            raise ClientClosed()

    def mark_live(self) -> bool:
        """The gateway said `connected`; True when this is a reconnect."""
        with self._cond:
            self.live, self._connected_at = True, time.monotonic()
            again = self._ever_live
            if again:
                self.reconnects += 1
            self._ever_live = True
            self._cond.notify_all()
        return again

    # -- opening and closing -----------------------------------------------------------
    def start(self) -> None:
        """Open the first socket and start the reader. Raises ``HandshakeRefused`` (and
        its subclasses) or ``ConnectFailed``."""
        with self._cond:
            self.check_usable()
            if self._reader is not None or self._connecting:
                raise RuntimeError("connect() was already called; the client reconnects by itself")
            self._connecting = True
        try:
            ws = self._open()
        finally:
            self._connecting = False
        with self._cond:
            if self._stop.is_set():
                ws.shutdown()
                raise ClientClosed()
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._install(ws)
            self._reader = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._reader.start()

    def wait_live(self, timeout: float) -> bool:
        """Wait until the gateway says `connected` (True) or ``timeout`` passes (False);
        raises the error that ended the connection."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.live:
                if self.error is not None:
                    raise self.error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self, timeout: float | None = None) -> None:
        """Close normally (1000) and stop the reader; safe more than once and from the reader."""
        with self._cond:
            self._stop.set()
            ws, gen, reader = self._ws, self._gen, self._reader
            if reader is None and self.error is None:
                self._finish(ClientClosed())
        if ws is not None:
            self._say_goodbye(ws, gen, CloseCode.NORMAL, self.close_timeout)
        self.wake()
        if reader is not None and not self.in_reader:
            reader.join(self.close_timeout + 2 if timeout is None else timeout)

    def drop(self) -> None:
        """Drop the TCP connection without a close frame, as a network failure would."""
        with self._cond:
            ws = self._ws
        if ws is not None:
            self._shutdown_socket(ws)

    def wake(self) -> None:
        """Make the reader look at its work (stop, writes) now rather than at its next tick."""
        w = self._wake_w
        if w is not None:
            try:
                w.send(b"x")
            except OSError:
                pass

    # -- writing ---------------------------------------------------------------------
    def send(self, text: str, before_write: Callable[[int], Any] | None = None) -> tuple[int, Any]:
        """Write a frame now, within the rate limit: (gen, what ``before_write(gen)``
        returned, called under the lock in the order of writes). NotConnected when not live."""
        deadline = time.monotonic() + self.io_timeout
        while True:                          # ends when the bucket has a token, or at the deadline
            with self._cond:
                self.check_usable()
                if not self.live or self._ws is None:
                    raise NotConnected("not connected to the gateway right now")
                delay = 0.0
                if self._limiter is not None and not self._limiter.take():
                    delay = self._limiter.wait_time()
            if delay <= 0:
                break
            if time.monotonic() + delay > deadline:
                raise TimeoutError(f"the rate limit let nothing out for {self.io_timeout:g}s")
            time.sleep(delay)
        with self._send_lock:
            with self._cond:
                ws, gen = self._ws, self._gen
                if ws is None:
                    raise NotConnected("not connected to the gateway right now")
                extra = before_write(gen) if before_write is not None else None
            try:
                ws.send(text)
            except Exception as e:  # noqa: BLE001 - the reader sees the broken socket
                self._shutdown_socket(ws)
                raise NotConnected(f"the connection broke: {e}") from None
        return gen, extra

    def flush(self, blocking: bool = True) -> float | None:
        """Write the queued chats ``next_chat`` hands out, within the rate limit. Returns
        seconds until more may go, or None. The reader (``blocking=False``) does not wait
        here while another thread writes: it goes back to reading."""
        if not self._send_lock.acquire(blocking):
            return WRITE_BUSY
        try:
            for _ in range(FLUSH_BATCH):
                with self._cond:
                    if not self.live or self._ws is None or self._stop.is_set():
                        return None
                    ws, gen = self._ws, self._gen
                    if self._limiter is not None and (wait := self._limiter.wait_time()) > 0:
                        return wait
                    text, wait = self._next_chat(gen)
                    if text is None:
                        return wait
                    if self._limiter is not None:
                        self._limiter.take()
                try:
                    ws.send(text)
                except Exception:  # noqa: BLE001 - the reader sees the broken socket
                    self._shutdown_socket(ws)
                    return None
            return 0.0
        finally:
            self._send_lock.release()

    # -- internals: sockets ----------------------------------------------------------
    def _open(self) -> websocket.WebSocket:
        url, headers = self.url, list(self.headers)
        if self.platform:
            url = _with_query(url, "platform", self.platform)
        if self.token:
            if self.use_header:
                headers.append(f"Authorization: Bearer {self.token}")
            else:
                url = _with_query(url, "token", self.token)
        opts: dict[str, Any] = {"header": headers, "timeout": self.connect_timeout}
        if self.origin:
            opts["origin"] = self.origin
        else:
            opts["suppress_origin"] = True        # non-browser clients send no Origin
        # TLS options go to the constructor (connect() ignores them)
        sslopt = {"ca_certs": str(self.ca_file)} if self.ca_file else None
        ws = websocket.WebSocket(enable_multithread=True, sslopt=sslopt)
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
        with self._cond:
            self._gen += 1
            self._ws, self.live, self._connected_at = ws, False, None
            self._last_recv = self._last_ping = time.monotonic()

    @staticmethod
    def _shutdown_socket(ws: websocket.WebSocket) -> None:
        sock = ws.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _say_goodbye(self, ws: websocket.WebSocket, gen: int, code: int,
                     timeout: float = -1) -> bool:
        """Send a close frame, once per connection; False when it could not be written."""
        if self._close_sent_gen == gen:
            return True
        if not self._send_lock.acquire(timeout=timeout):
            return False
        try:
            ws.send_close(code)
            self._close_sent_gen = gen
            return True
        except Exception:  # noqa: BLE001 - best effort
            return False
        finally:
            self._send_lock.release()

    def _finish(self, end: SkyeIMError) -> None:
        if self.error is None:
            self.error = end
            if not isinstance(end, ClientClosed):
                log.warning("%s: ended: %s", self.name, end)
        self._ws, self.live = None, False
        self._cond.notify_all()
        self._on_end(self.error)

    # -- internals: the reader ---------------------------------------------------------
    def _run(self) -> None:
        self._reader_ident = threading.get_ident()
        attempt = 0
        end: SkyeIMError
        try:
            while True:                      # one socket a round, until an error ends it
                with self._cond:
                    ws, gen = self._ws, self._gen
                code, reason = self._read_until_closed(ws, gen)
                with self._cond:
                    lived = (time.monotonic() - self._connected_at) if self._connected_at else 0.0
                    self._ws, self.live = None, False
                    self._cond.notify_all()
                ws.shutdown()
                if self._stop.is_set():
                    raise ClientClosed()
                end = final_close(code, reason, can_renew_token=self.token_provider is not None,
                                  reconnect=self.reconnect)
                if end is not None:
                    raise end
                self._need_new_token |= code == CloseCode.TOKEN_EXPIRED
                if lived >= self.backoff.reset_after:
                    attempt = 0
                log.info("%s: connection lost (code %s); reconnecting", self.name, code)
                ws, attempt = self._reconnect(attempt)
                with self._cond:
                    if self._stop.is_set():
                        ws.shutdown()
                        raise ClientClosed()
                    self._install(ws)
        except SkyeIMError as e:
            end = e
        except BaseException as e:  # noqa: BLE001 - a bug: end the client visibly
            log.exception("%s: reader failed", self.name)
            end = ConnectionClosed(CloseCode.ABNORMAL, message=f"client reader failed: {e!r}")
        with self._cond:
            self._finish(end)
        for s in (self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._wake_w = None

    def _reconnect(self, attempt: int) -> tuple[websocket.WebSocket, int]:
        last: BaseException | None = None
        while True:                          # bounded by backoff.max_attempts (None: forever)
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
                    self.token, self._need_new_token = token, False
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
                log.warning("%s: token provider failed: %r", self.name, e)
                last = e
            log.debug("%s: reconnect attempt %d failed: %s", self.name, attempt, last)

    def _read_until_closed(self, ws: websocket.WebSocket, gen: int) -> tuple[int | None, str]:
        """Read one socket until it ends: (close code, reason), 1006 when there was none."""
        readable = _Readable(ws.sock, self._wake_r)
        message = _Message()
        stop_deadline = None
        while True:                          # ends with the socket (closed, dead, or stopped)
            now = time.monotonic()
            if self._stop.is_set():
                if stop_deadline is None:
                    stop_deadline = now + self.close_timeout
                    if not self._say_goodbye(ws, gen, CloseCode.NORMAL):
                        return None, CLOSED_BY_CLIENT
                elif now >= stop_deadline:
                    return None, CLOSED_BY_CLIENT
            timeout = self._tick(ws, now)
            if timeout is None:
                return CloseCode.ABNORMAL, "no answer from the gateway"
            if stop_deadline is not None:
                timeout = max(min(timeout, stop_deadline - now), 0.0)
            try:
                if not readable.wait(timeout):
                    continue
                frame = ws.recv_frame()
            except websocket.WebSocketTimeoutException:
                return CloseCode.ABNORMAL, "read timed out"
            except (websocket.WebSocketException, OSError, ValueError, AttributeError,
                    struct.error):
                return CloseCode.ABNORMAL, ""
            self._last_recv = time.monotonic()
            end = self._on_frame(ws, gen, frame, message)
            if end is not None:
                return end

    def _on_frame(self, ws: websocket.WebSocket, gen: int, frame: ABNF,
                  message: _Message) -> tuple[int | None, str] | None:
        """Handle one frame read; (code, reason) when it ends the socket."""
        op = frame.opcode
        if op == ABNF.OPCODE_PING:
            try:
                ws.pong(frame.data)
            except Exception:  # noqa: BLE001
                return CloseCode.ABNORMAL, ""
            return None
        if op == ABNF.OPCODE_PONG:
            return None
        if op == ABNF.OPCODE_CLOSE:
            data = frame.data if isinstance(frame.data, bytes) else frame.data.encode()
            code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
            # echo the code when it may be sent (RFC 6455 7.4), else a normal close
            echo = code if code in (CloseCode.NORMAL, CloseCode.GOING_AWAY) or \
                3000 <= code <= 4999 else CloseCode.NORMAL
            self._say_goodbye(ws, gen, echo)
            return code, data[2:].decode("utf-8", "replace")
        done = message.add(frame)
        if done is None:
            return None
        kind, payload = done
        if kind != ABNF.OPCODE_TEXT:
            log.warning("%s: ignoring a non-text frame from the gateway", self.name)
            return None
        self._on_message(payload, gen)
        return None

    def _tick(self, ws: websocket.WebSocket, now: float) -> float | None:
        """Housekeeping between reads: keepalive, paced (re)sends. Returns how long the
        next read may wait, or None when the connection is dead."""
        timeout = 1.0
        if self.keepalive:
            idle = now - self._last_recv
            if idle >= 2 * self.keepalive:
                log.info("%s: nothing from the gateway for %.0fs", self.name, idle)
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
        wait = self.flush(blocking=False)
        if wait is not None:
            timeout = min(timeout, wait)
        return max(timeout, 0.005)
