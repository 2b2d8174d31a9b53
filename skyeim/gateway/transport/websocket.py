"""The WebSocket transport: gevent-websocket 0.10.1 with the fixes this gateway needs.

gevent-websocket is kept (it is the user's choice and its framing is sound), but
as shipped it cannot meet PROTOCOL.md. Each fix below is pinned by
tests/test_transport.py:

1. Handshake: upstream writes ``101 Switching Protocols`` before the WSGI app
   runs, so a view can never refuse with 401/403/503. Here the handler only
   validates the upgrade request and hands the app a WebSocket that is not yet
   accepted; the view checks origin, token and capacity, then calls
   :meth:`WebSocket.accept` -- or returns an ordinary HTTP response.
2. Close codes: upstream ``close(code)`` sends a close frame without the code
   (and replies to a peer's close without echoing it). Here the code and reason
   are packed into the frame, and the peer's code is echoed and reported.
3. Message size: upstream reads any frame whole (a 20 MB frame is buffered).
   Here a frame or fragmented message whose length would exceed
   ``max_message_size`` is refused from its header, before its payload is read,
   with close 1009.
4. Masking: RFC 6455 5.1 requires client frames to be masked; unmasked ones
   are closed with 1002.
5. Concurrent writes: upstream has no write lock, so a pong written by the read
   greenlet can interleave with a frame from the write greenlet. Here every
   frame is written under one lock.
6. Werkzeug 3 routes a WebSocket upgrade only to a rule with ``websocket=True``
   (see skyeim.gateway.app).
Plus: unmasking and UTF-8 validation use wsaccel's C code (upstream unmasks in a
Python loop), TCP_NODELAY is set, and the whole upgrade request must arrive
within ``handshake_timeout`` seconds (slow-loris). After the upgrade, frames are
read with plain recv calls, the handler forgets the HTTP request, and the view's
session runs once the view has returned (``WebSocket.hand_over``): an idle
connection keeps as little as it can (docs/performance.md, idle memory).
"""
from __future__ import annotations

import base64
import hashlib
import logging
import socket
import struct
import time

import gevent
from gevent.lock import Semaphore
from gevent.pywsgi import WSGIHandler, WSGIServer
from geventwebsocket.exceptions import ProtocolError, WebSocketError
from geventwebsocket.handler import WebSocketHandler as _UpstreamHandler
from geventwebsocket.websocket import Header, Stream
from geventwebsocket.websocket import WebSocket as _UpstreamWebSocket
from wsaccel.utf8validator import Utf8Validator
from wsaccel.xormask import XorMaskerSimple

from skyeim import logs
from skyeim.fds import QuietAccept
from skyeim.protocol import CloseCode
from skyeim.wsgi import CLIENT_ADDRESS_KEY, HttpHandlerMixin, remote_address

log = logging.getLogger(__name__)

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA


class ConnectionClosed(Exception):
    """The WebSocket is closed; ``code`` is the peer's close code, ours, or 1006."""

    def __init__(self, code: int, reason: str = ""):
        super().__init__(code, reason)
        self.code, self.reason = code, reason


class MessageTooBig(ProtocolError):
    pass


class _WriteStalled(Exception):
    pass


def _valid_close_code(code: int) -> bool:
    # RFC 6455 7.4: 1000-1003, 1007-1011 (and 1012-1014 registered later), 3000-4999
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) \
        or 3000 <= code <= 4999


def _whole_text_frame(data: bytes) -> bool:
    """True if ``data`` starts with a whole unfragmented, masked text frame."""
    if len(data) < 2 or data[0] != 0x80 | OP_TEXT or not data[1] & 0x80:
        return False
    length, need = data[1] & 0x7F, 2 + 4           # masked: 4 bytes of key
    if length == 126:
        if len(data) < 4:
            return False
        length, need = struct.unpack_from("!H", data, 2)[0], need + 2
    elif length == 127:                            # never a small chat
        return False
    return len(data) >= need + length


class WebSocket(_UpstreamWebSocket):
    """One server-side WebSocket; read from one greenlet, written from any."""

    __slots__ = ("max_message_size", "close_timeout", "write_timeout", "accepted", "close_code",
                 "last_seen", "_write_lock", "_accept_headers", "_sock", "_serve", "_buf")

    def __init__(self, environ, handler, accept_headers, max_message_size, close_timeout,
                 write_timeout=60.0):
        super().__init__(environ, Stream(handler), handler)
        self.max_message_size = max_message_size
        self.close_timeout = close_timeout
        self.write_timeout = write_timeout      # s one frame may take to go out
        self.accepted = False
        self.close_code: int | None = None
        self.last_seen = time.monotonic()
        self._write_lock = Semaphore()
        self._accept_headers = accept_headers
        self._sock = handler.socket
        self._serve = None
        self._buf = b""           # bytes received and not yet read (b"" between frames)

    # -- handshake -------------------------------------------------------------

    def accept(self) -> None:
        """Send the 101 response; from now on the connection speaks WebSocket."""
        handler = self.handler
        handler.start_response("101 Switching Protocols", self._accept_headers)
        handler.write(b"")                      # flushes the status line and headers
        self.accepted = True
        self._read_from_socket()
        self._sock.settimeout(None)             # the handshake timeout no longer applies
        self.last_seen = time.monotonic()
        # the access log (skyeim.logs): the view may have put the user's id in the environ
        logs.log_ws_open(self.environ.get("PATH_INFO", ""), remote_address(handler),
                         self.environ.get(USER_ID_KEY))

    def hand_over(self, serve, *args) -> None:
        """Have the handler run ``serve(*args)`` (the connection's read loop) in this
        greenlet once the WSGI app has returned: outside the Flask request context,
        which is then gone, and a dozen call frames shallower than the view, so each
        idle connection's saved stack is smaller (docs/performance.md, idle memory)."""
        self._serve = (serve, args)

    def run_handed_over(self) -> None:
        serve, self._serve = self._serve, None
        if serve is not None:
            serve[0](*serve[1])

    # -- reading (one greenlet only) ---------------------------------------------

    def _read_from_socket(self) -> None:
        """From the upgrade on, frames are read with plain recv calls (``_read``), not
        through pywsgi's buffered reader: an idle connection then keeps no read buffer,
        and its read loop waits without the C call level of BufferedReader.read
        underneath (a smaller saved greenlet stack; docs/performance.md, idle memory).
        What the reader had buffered past the request's headers is taken over."""
        rfile, sock = self.handler.rfile, self._sock
        try:
            sock.settimeout(0.0)
            try:
                self._buf = rfile.read1(READ_BUFFER) or b""   # buffered bytes, or one recv
            finally:
                sock.settimeout(None)
        except (OSError, ValueError):
            self._buf = b""
        self.stream.read = self.raw_read = self._read

    def _read(self, n: int) -> bytes:
        """``n`` bytes (fewer only at EOF)."""
        buf = self._buf
        if len(buf) < n:
            chunks, have, sock = [buf], len(buf), self._sock
            while have < n:              # bounded: each recv returns >= 1 byte, or b"" at EOF
                chunk = sock.recv(max(n - have, READ_BUFFER))
                if not chunk:
                    break
                chunks.append(chunk)
                have += len(chunk)
            buf = b"".join(chunks)
        self._buf = buf[n:]
        return buf[:n]

    def receive(self) -> str | bytes:
        """The next text (str) or binary (bytes) message; raises ConnectionClosed."""
        try:
            return self.read_message()
        except ConnectionClosed:
            raise
        except MessageTooBig as e:
            self.close(CloseCode.TOO_BIG, "message too big")
            raise ConnectionClosed(CloseCode.TOO_BIG, str(e)) from None
        except UnicodeError:
            self.close(CloseCode.INVALID_DATA, "invalid UTF-8")
            raise ConnectionClosed(CloseCode.INVALID_DATA) from None
        except ProtocolError as e:               # includes upstream FrameTooLargeException
            self.close(CloseCode.PROTOCOL_ERROR, "protocol error")
            raise ConnectionClosed(CloseCode.PROTOCOL_ERROR, str(e)) from None
        except (WebSocketError, OSError, AttributeError, TypeError):
            # EOF, reset, or the socket was dropped under us (raw_read gone)
            code = self.close_code if self.close_code is not None else CloseCode.ABNORMAL
            self.closed = True
            raise ConnectionClosed(code) from None

    def frame_ready(self) -> bool:
        """True if a whole unfragmented text frame can be read without waiting: it
        is in this connection's read buffer already, or the kernel has it. Lets the
        read loop take a client's burst of chats at once (Session.read_pump)."""
        data = self._buf
        if not _whole_text_frame(data):
            sock = self._sock
            try:
                sock.settimeout(0.0)        # one recv that does not wait
                try:
                    more = sock.recv(READ_BUFFER)
                finally:
                    sock.settimeout(None)
            except (OSError, ValueError, AttributeError):   # nothing yet, closed, or dropped
                return False
            if not more:                    # EOF: the next receive() meets it too
                return False
            data = self._buf = data + more
        return _whole_text_frame(data)

    def read_frame(self, budget: int):
        header = Header.decode_header(self.stream)
        if header.flags:
            raise ProtocolError("reserved bits set without a negotiated extension")
        if not header.mask:
            raise ProtocolError("client frames must be masked")
        if header.opcode in (OP_TEXT, OP_BINARY, OP_CONT) and header.length > budget:
            raise MessageTooBig(f"message exceeds {self.max_message_size} bytes")
        payload = self.raw_read(header.length) if header.length else b""
        if len(payload) != header.length:
            raise WebSocketError("unexpected EOF reading frame payload")
        if header.length:
            payload = XorMaskerSimple(header.mask).process(payload)
        self.last_seen = time.monotonic()
        return header, payload

    def read_message(self):
        opcode = None
        message = bytearray()
        validator = None
        while True:
            header, payload = self.read_frame(self.max_message_size - len(message))
            op = header.opcode
            if op in (OP_TEXT, OP_BINARY):
                if opcode is not None:
                    raise ProtocolError("a new message inside a fragmented one")
                opcode = op
                validator = Utf8Validator() if op == OP_TEXT else None
            elif op == OP_CONT:
                if opcode is None:
                    raise ProtocolError("continuation frame without a message")
            elif op == OP_PING:
                self.send_frame(payload, OP_PONG)
                continue
            elif op == OP_PONG:
                continue
            elif op == OP_CLOSE:
                self.handle_close(header, payload)  # raises ConnectionClosed
            else:
                raise ProtocolError(f"unknown opcode {op}")
            if validator is not None:
                # validate as fragments arrive, so bad UTF-8 fails fast (Autobahn 6.*)
                valid, _end, _, _ = validator.validate(bytes(payload))
                if not valid:
                    raise UnicodeError("invalid UTF-8 in a text message")
            message += payload
            if header.fin:
                break
        if opcode == OP_TEXT:
            if not validator.validate(b"")[1]:     # a code point cut off at the end
                raise UnicodeError("truncated UTF-8 in a text message")
            return message.decode("utf-8")
        return bytes(message)

    def handle_close(self, header, payload):
        code, reason = CloseCode.NORMAL, ""
        if payload:
            if len(payload) < 2:
                raise ProtocolError("close frame with a 1-byte payload")
            code = struct.unpack("!H", payload[:2])[0]
            if not _valid_close_code(code):
                raise ProtocolError(f"invalid close code {code}")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise UnicodeError("invalid UTF-8 in close reason") from None
        if self.close_code is None:
            self.close(code)                      # echo the peer's code (RFC 6455 5.5.1)
        raise ConnectionClosed(self.close_code if self.close_code is not None else code, reason)

    # -- writing (any greenlet) ----------------------------------------------------

    def send_frame(self, message, opcode):
        if isinstance(message, str):
            message = message.encode("utf-8")
        self._write_frames(bytes(Header.encode_header(True, opcode, b"", len(message), 0)) + message)

    def send_text(self, text: str | bytes) -> None:
        self.send_frame(text, OP_TEXT)

    def send_texts(self, texts: list[str]) -> None:
        """Several text frames in one write: one system call for a burst of frames."""
        parts = []
        for text in texts:
            data = text.encode("utf-8")
            parts.append(bytes(Header.encode_header(True, OP_TEXT, b"", len(data), 0)))
            parts.append(data)
        self._write_frames(b"".join(parts))

    def _write_frames(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionClosed(self.close_code or CloseCode.ABNORMAL)
        with self._write_lock:
            if self.closed:                   # closed while we waited for the lock
                raise ConnectionClosed(self.close_code or CloseCode.ABNORMAL)
            try:
                # Most writes fit in the kernel's buffer at once: try that first,
                # without the timer and the SO_SNDBUF lookup of a full sendall.
                try:
                    sent = self._sock.send(data, 0, timeout=0.0)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    with gevent.Timeout(self.write_timeout, _WriteStalled):
                        self.raw_write(memoryview(data)[sent:])
            except _WriteStalled:
                # the peer has not taken data for write_timeout s: a frame is half
                # written, so no close frame can follow; drop TCP (PROTOCOL.md 4: best effort)
                self.close_code = CloseCode.TOO_SLOW
                self.drop()
                raise ConnectionClosed(CloseCode.TOO_SLOW) from None
            except (OSError, TypeError, AttributeError):
                self.closed = True
                raise ConnectionClosed(self.close_code or CloseCode.ABNORMAL) from None

    def send_ping(self, payload: bytes = b"") -> None:
        self.send_frame(payload, OP_PING)

    def close(self, code: int = CloseCode.NORMAL, message: str | bytes = b"") -> None:
        """Send a close frame (best effort, at most ``close_timeout`` s) and stop writing.

        The TCP connection is shut down once the peer answers with its close
        frame, or after ``close_timeout`` seconds if it does not.
        """
        if self.closed:
            return
        self.close_code = code
        reason = message.encode("utf-8") if isinstance(message, str) else bytes(message or b"")
        frame = bytes(Header.encode_header(True, OP_CLOSE, b"", 2 + len(reason[:123]), 0)) \
            + struct.pack("!H", code) + reason[:123]
        self.closed = True
        sent = False
        if self._write_lock.acquire(timeout=self.close_timeout):
            try:
                with gevent.Timeout(self.close_timeout, False):
                    self.raw_write(frame)
                    sent = True
            except (OSError, TypeError, AttributeError):
                pass
            finally:
                self._write_lock.release()
        if sent:
            # give the peer close_timeout to answer before dropping TCP
            gevent.spawn_later(self.close_timeout, self.drop)
        else:
            self.drop()

    def drop(self) -> None:
        """Shut the TCP connection down; wakes a reader blocked on it with EOF."""
        self.closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def linger(self) -> None:
        """Before the TCP close: read and discard what the peer still sends, until its
        EOF or ``close_timeout``. Closing a socket with unread data sends a RST, which
        can destroy our close frame in the peer's buffer (it would see 1006, not 1009)."""
        sock = self._sock
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        deadline = time.monotonic() + self.close_timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                if not sock.recv(65536):
                    break
        except OSError:
            pass

    def __del__(self):
        pass   # upstream's __del__ would try to write a close frame at GC time


READ_BUFFER = 1024     # bytes of read buffer per connection


USER_ID_KEY = "skyeim.user_id"    # environ key: the WebSocket's user, for the access log


class WebSocketHandler(HttpHandlerMixin, _UpstreamHandler):
    """gevent pywsgi handler that lets the WSGI app decide on the upgrade.

    HttpHandlerMixin (skyeim.wsgi): the access log and 431 for oversized headers.

    Server attributes read: ``max_message_size``, ``close_timeout``,
    ``handshake_timeout`` (set by :func:`make_server`).
    """

    def __init__(self, sock, address, server, rfile=None):
        # pywsgi's default read buffer is 8 KiB per socket for the life of the
        # connection; chat frames are far smaller, and a larger one is read
        # straight into its own bytes anyway. (Set here, before any byte is read.)
        super().__init__(sock, address, server,
                         rfile if rfile is not None else sock.makefile("rb", READ_BUFFER))

    def handle(self):
        # bound the time to send a request (and idle keep-alive time) on this socket
        self.socket.settimeout(getattr(self.server, "handshake_timeout", 10))
        try:   # small frames and responses must not wait for Nagle
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        super().handle()

    def handle_one_request(self):
        # The socket timeout above bounds each recv only: a client trickling a byte
        # every few seconds would hold the connection for hours (slow-loris). The
        # request line and headers must arrive within handshake_timeout in total.
        self._request_deadline = gevent.Timeout.start_new(
            getattr(self.server, "handshake_timeout", 10),
            socket.timeout("request not received in time"))
        try:
            return super().handle_one_request()
        finally:
            if self._request_deadline is not None:   # (None once a WebSocket forgot it)
                self._request_deadline.close()

    def read_request(self, raw_requestline):
        try:
            return super().read_request(raw_requestline)
        finally:
            self._request_deadline.close()       # the request is in; the app's time is its own

    def _handle_client_error(self, ex):
        if isinstance(ex, socket.timeout):       # too slow sending its headers: just drop it
            return None
        return super()._handle_client_error(ex)

    def run_application(self):
        headers = self._validate_upgrade()
        if headers is None:                   # not a (valid) upgrade: an ordinary request
            self.environ["wsgi.websocket"] = None
            return WSGIHandler.run_application(self)
        ws = WebSocket(self.environ, self, headers,
                       max_message_size=self.server.max_message_size,
                       close_timeout=self.server.close_timeout,
                       write_timeout=getattr(self.server, "write_timeout", 60.0))
        del headers                           # (this frame lives as long as the connection)
        self.environ["wsgi.websocket"] = ws
        self.environ["wsgi.websocket_version"] = "13"
        self.websocket = ws
        try:
            self.result = self.application(self.environ, self.start_response)
            if ws.accepted:
                try:
                    for _ in self.result:     # the app's return value is meaningless now
                        pass
                finally:
                    self._close_result()
                    self.close_connection = True
                    self._forget_request(ws)
                    ws.run_handed_over()      # the view's session, if it handed one over
            else:
                self.process_result()
        finally:
            self._close_result()
            if ws.accepted:
                if not ws.closed:
                    ws.close(CloseCode.NORMAL)
                ws.linger()
                code = ws.close_code if ws.close_code is not None else CloseCode.ABNORMAL
                logs.log_ws_close(self.environ.get("PATH_INFO", ""), int(code),
                                  (time.time() - self.time_start) * 1000, remote_address(self),
                                  self.environ.get(USER_ID_KEY))
            self.environ["wsgi.websocket"] = None
            self.websocket = None

    def _close_result(self) -> None:
        result, self.result = self.result, None
        close = getattr(result, "close", None)
        if close is not None:
            close()

    # what the access log's close line needs of the request (skyeim.wsgi.remote_address)
    _KEPT_ENVIRON = ("PATH_INFO", USER_ID_KEY, CLIENT_ADDRESS_KEY, "REMOTE_ADDR")

    def _forget_request(self, ws: WebSocket) -> None:
        """The upgrade is done: drop what only the HTTP request needed (the full WSGI
        environ, the parsed headers, the handshake timer), which would otherwise be
        kept for the connection's life (docs/performance.md, idle memory)."""
        env = self.environ
        self.environ = ws.environ = {k: env[k] for k in self._KEPT_ENVIRON if k in env}
        self.headers = None
        self.response_headers = None
        self._request_deadline = None
        ws._accept_headers = None
        self.rfile = None                     # the WebSocket reads the socket itself now
        if self.wsgi_input is not None:
            self.wsgi_input.rfile = None      # (a GET's input: never read)

    def _validate_upgrade(self) -> list[tuple[str, str]] | None:
        """The 101 response headers for a valid RFC 6455 upgrade request, else None."""
        env = self.environ
        if env.get("REQUEST_METHOD") != "GET" or self.request_version != "HTTP/1.1":
            return None
        if env.get("HTTP_UPGRADE", "").lower() != "websocket":
            return None
        if "upgrade" not in [t.strip() for t in env.get("HTTP_CONNECTION", "").lower().split(",")]:
            return None
        if env.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
            return None
        key = env.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
        try:
            if len(base64.b64decode(key, validate=True)) != 16:
                return None
        except ValueError:
            return None
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode()
        return [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", accept)]

    def start_response(self, status, headers, exc_info=None):
        ws = getattr(self, "websocket", None)
        if ws is not None and ws.accepted and not status.startswith("101"):
            return lambda data: None          # the app's reply after a WebSocket session
        writer = WSGIHandler.start_response(self, status, headers, exc_info=exc_info)
        if status.startswith("101"):
            # the WebSocket owns the socket now: no Content-Length, no chunking, no keep-alive
            self.provided_content_length = False
            self.response_use_chunked = False
            self.close_connection = True
            self.provided_date = True
        return writer


class _Server(QuietAccept, WSGIServer):
    """Out of descriptors, accept() answers 503 overloaded and goes on (skyeim.fds)."""


def make_server(listener, app, *, max_message_size: int, close_timeout: float = 1.0,
                handshake_timeout: float = 10.0, write_timeout: float = 60.0,
                backlog: int = 4096, **kwargs) -> WSGIServer:
    """A gevent WSGIServer whose connections may upgrade to our WebSocket.

    ``listener`` is an address, or a socket that listens already (with its own
    backlog: gevent refuses one for a socket, e.g. the SO_REUSEPORT listener)."""
    if hasattr(listener, "accept"):
        backlog = None
    server = _Server(listener, app, handler_class=WebSocketHandler, backlog=backlog, **kwargs)
    server.max_message_size = max_message_size
    server.close_timeout = close_timeout
    server.handshake_timeout = handshake_timeout
    server.write_timeout = write_timeout
    return server
