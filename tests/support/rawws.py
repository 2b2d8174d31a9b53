"""A raw RFC 6455 client for tests that must send what websocket-client refuses to.

The HTTP upgrade is written by hand, client frames are built byte by byte
(masked or not, fragmented, with RSV bits, oversized headers, invalid UTF-8)
and every byte the server sends is parsed strictly. Used by test_transport.py
and test_fuzz_frames.py; a module that opens raw connections closes them after
each test with ``close_raw_sockets``.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import time
from dataclasses import dataclass

from harness import System

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DATA_OPCODES = (OP_TEXT, OP_BINARY, OP_CONT)
CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)

TIMEOUT = 5.0               # s any expected frame may take

PING_JSON = '{"type":"ping","data":null}'

# ---------------------------------------------------------------------------
# A raw RFC 6455 client

class ServerEOF(AssertionError):
    """The server ended the TCP connection (EOF) where a frame was expected."""


class NothingArrived(AssertionError):
    """No (complete) frame arrived in time."""


def _xor(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def frame_bytes(opcode: int, payload: bytes | str = b"", *, fin: bool = True, mask: bool = True,
                rsv: int = 0, length: int | None = None) -> bytes:
    """One client frame. ``rsv`` is the 3-bit RSV field (4 = RSV1, 2 = RSV2, 1 = RSV3);
    ``length`` announces a length other than the payload's (for header-only frames)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    b1 = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, b1 | n])
    elif n <= 0xFFFF:
        head = bytes([b0, b1 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, b1 | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        head += key
        payload = _xor(payload, key)
    return head + payload


def close_payload(code: int, reason: bytes | str = b"") -> bytes:
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    return struct.pack("!H", code) + reason


@dataclass
class Frame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        assert self.opcode == OP_CLOSE
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode("utf-8")

    def json(self) -> dict:
        assert self.opcode == OP_TEXT, f"not a text frame: {self}"
        obj = json.loads(self.payload.decode("utf-8"))
        assert isinstance(obj, dict) and isinstance(obj.get("type"), str), obj
        return obj

    def __repr__(self) -> str:
        return f"Frame(fin={self.fin}, op={self.opcode}, {self.payload[:80]!r}{'...' if len(self.payload) > 80 else ''})"


@dataclass
class HttpResponse:
    status: int
    status_line: str
    headers: dict[str, str]
    body: bytes
    raw: bytes                                   # the status line and headers as sent


class RawWS:
    """One TCP connection speaking raw WebSocket frames; every read is bounded."""

    MAX_SANE_LENGTH = 1 << 20                    # no server frame in these tests is larger

    def __init__(self, sock: socket.socket, buffered: bytes = b""):
        self.sock = sock
        self.buf = bytearray(buffered)
        self.eof = False
        self.before_close: list[Frame] = []

    # -- bytes ------------------------------------------------------------------
    def _fill(self, deadline: float) -> None:
        """Receive more bytes into the buffer; ServerEOF at EOF, NothingArrived at the deadline."""
        if self.eof:
            raise ServerEOF("the server closed the connection")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NothingArrived("nothing arrived in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            raise NothingArrived("nothing arrived in time") from None
        if not data:
            self.eof = True
            raise ServerEOF("the server closed the connection")
        self.buf += data

    def _take(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    # -- frames -----------------------------------------------------------------
    def recv_frame(self, timeout: float = TIMEOUT) -> Frame:
        """The next server frame, checked strictly (RFC 6455 5.2 for a server's frames)."""
        deadline = time.monotonic() + timeout
        b0, b1 = self._take(2, deadline)
        fin, rsv, opcode = bool(b0 & 0x80), (b0 >> 4) & 0x7, b0 & 0x0F
        assert rsv == 0, f"server frame with RSV bits {rsv:03b} (header {b0:#04x} {b1:#04x})"
        assert opcode in DATA_OPCODES + CONTROL_OPCODES, f"server frame with opcode {opcode:#x}"
        assert not b1 & 0x80, "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2, deadline))[0]
            assert n >= 126, "16-bit length used for a short frame"
        elif n == 127:
            n = struct.unpack("!Q", self._take(8, deadline))[0]
            assert n > 0xFFFF, "64-bit length used for a short frame"
        if opcode in CONTROL_OPCODES:
            assert fin and n <= 125, f"malformed server control frame (fin={fin}, length={n})"
        assert n <= self.MAX_SANE_LENGTH, f"implausible server frame length {n}"
        return Frame(fin, opcode, self._take(n, deadline))

    def recv_json(self, timeout: float = TIMEOUT) -> dict:
        """The next application frame (protocol pings are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.recv_frame(max(deadline - time.monotonic(), 0.001))
            if f.opcode == OP_PING:
                continue
            assert f.opcode == OP_TEXT and f.fin, f"expected a text frame, got {f}"
            return f.json()

    def expect(self, type_: str, timeout: float = TIMEOUT) -> dict | None:
        frame = self.recv_json(timeout)
        assert frame["type"] == type_, f"expected {type_!r}, got {frame!r}"
        return frame.get("data")

    def wait_connected(self, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv_json(max(deadline - time.monotonic(), 0.001))
            if frame["type"] == "connected":
                return frame["data"]

    def expect_close(self, timeout: float = TIMEOUT) -> Frame:
        """Read up to the server's close frame (earlier frames go to ``before_close``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                f = self.recv_frame(max(deadline - time.monotonic(), 0.001))
            except NothingArrived:
                raise NothingArrived(f"no close frame within {timeout:g}s "
                                     f"(frames meanwhile: {self.before_close[-5:]!r})") from None
            except ServerEOF:
                raise ServerEOF(f"EOF without a close frame (frames before: "
                                f"{self.before_close[-5:]!r})") from None
            if f.opcode == OP_CLOSE:
                return f
            self.before_close.append(f)

    def expect_close_code(self, code: int, timeout: float = TIMEOUT) -> Frame:
        f = self.expect_close(timeout)
        assert f.close_code == code, f"expected close {code}, got {f.close_code} {f.payload!r}"
        return f

    def read_to_eof(self, timeout: float = TIMEOUT) -> bytes:
        """Everything the server still sends, up to its EOF (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._fill(deadline)
            except (ServerEOF, ConnectionResetError):
                out = bytes(self.buf)
                self.buf.clear()
                return out
            except NothingArrived:
                raise NothingArrived(f"the server did not close TCP within {timeout:g}s") from None

    def wait_eof(self, timeout: float = TIMEOUT) -> float:
        """Wait for the server's EOF with nothing more on the wire; the seconds it took."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            try:
                self._fill(deadline)
            except ServerEOF:
                assert not self.buf, f"unexpected bytes before EOF: {bytes(self.buf[:200])!r}"
                return time.monotonic() - start
            except NothingArrived:
                raise NothingArrived(f"the server did not close TCP within {timeout:g}s") from None
            except ConnectionResetError:
                assert not self.buf, f"unexpected bytes before EOF: {bytes(self.buf[:200])!r}"
                return time.monotonic() - start
            assert not self.buf, f"unexpected bytes before EOF: {bytes(self.buf[:200])!r}"

    # -- sending ------------------------------------------------------------------
    def send(self, opcode: int, payload: bytes | str = b"", **kw) -> None:
        self.sock.settimeout(TIMEOUT)
        self.sock.sendall(frame_bytes(opcode, payload, **kw))

    def send_raw(self, data: bytes) -> None:
        self.sock.settimeout(TIMEOUT)
        self.sock.sendall(data)

    def send_json(self, obj) -> None:
        self.send(OP_TEXT, json.dumps(obj))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


OPEN_RAW: list[RawWS] = []


def close_raw_sockets() -> None:
    """Close every raw connection opened so far (call after each test)."""
    while OPEN_RAW:
        OPEN_RAW.pop().close()


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def upgrade_request(system: System, path: str = "/ws", *, key: str | None = None,
                    upgrade: bool = True, headers: dict | None = None) -> bytes:
    hdrs = {"Host": f"{system.host}:{system.port}"}
    if upgrade:
        hdrs.update({"Upgrade": "websocket", "Connection": "Upgrade",
                     "Sec-WebSocket-Key": key or new_key(), "Sec-WebSocket-Version": "13"})
    for k, v in (headers or {}).items():
        hdrs.pop(k, None)
        if v is not None:
            hdrs[k] = v
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def open_socket(system: System, rcvbuf: int | None = None) -> socket.socket:
    if rcvbuf is None:
        sock = socket.create_connection((system.host, system.port), timeout=TIMEOUT)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)   # before connect
        sock.settimeout(TIMEOUT)
        sock.connect((system.host, system.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def handshake(system: System, path: str = "/ws", *, key: str | None = None, upgrade: bool = True,
              headers: dict | None = None, rcvbuf: int | None = None,
              timeout: float = TIMEOUT) -> tuple[HttpResponse, RawWS]:
    """Send an upgrade request by hand; the HTTP response (head, and the body unless
    101) and the connection (with any bytes after a 101's head buffered)."""
    sock = open_socket(system, rcvbuf)
    ws = RawWS(sock)
    OPEN_RAW.append(ws)
    sock.sendall(upgrade_request(system, path, key=key, upgrade=upgrade, headers=headers))
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in ws.buf:
        ws._fill(deadline)
    end = ws.buf.index(b"\r\n\r\n") + 4
    raw = bytes(ws.buf[:end])
    del ws.buf[:end]
    lines = raw.decode("latin-1").split("\r\n")
    status_line = lines[0]
    parts = status_line.split(" ", 2)
    assert parts[0] == "HTTP/1.1" and parts[1].isdigit(), f"bad status line {status_line!r}"
    headers_out: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers_out[k.strip().lower()] = v.strip()
    status = int(parts[1])
    body = b""
    if status != 101:
        assert "content-length" in headers_out, f"no Content-Length: {raw!r}"
        body = ws._take(int(headers_out["content-length"]), deadline)
    return HttpResponse(status, status_line, headers_out, body, raw), ws


def connect(system: System, user, *, rcvbuf: int | None = None) -> RawWS:
    """An upgraded connection of ``user``, read up to ``connected``."""
    key = new_key()
    resp, ws = handshake(system, f"/ws?token={user.token}", key=key, rcvbuf=rcvbuf)
    assert resp.status == 101, f"expected 101, got {resp.status_line} {resp.body[:300]!r}"
    assert resp.headers.get("sec-websocket-accept") == accept_for(key)
    ws.wait_connected()
    return ws


def assert_open(ws: RawWS) -> None:
    """The connection still answers an application ping."""
    ws.send(OP_TEXT, PING_JSON)
    assert ws.expect("pong") is None
