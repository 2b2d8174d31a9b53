"""Black-box harness for the SkyeIM WebSocket gateway (PROTOCOL.md).

A ``System`` is a real gateway process (``python wsserver.py --standalone -f
DIR/ws.yaml``, or the three services plus the gateway as separate processes)
with its four YAML files, SQLite databases and log in a temporary directory.
Tests talk to it only through its public surface: the WebSocket at ``/ws``,
the client REST API under ``/api``, ``/healthz`` and ``/readyz`` -- plus, for
fast seeding, the Message service's own HTTP endpoint (section 6).

``Client`` wraps websocket-client's ``websocket.WebSocket`` on a real socket.
It reads frames itself (``WebSocket.recv_frame``), so it sees every protocol
ping, answers it only when ``auto_pong`` is on, and records the close code that
the server put into its close frame. Every wait is a bounded receive.
"""
from __future__ import annotations

import base64
import collections
import contextlib
import copy
import http.client
import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import jwt
import requests
import websocket
import yaml
from websocket import ABNF

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
START_TIMEOUT = 40.0          # s for /readyz to answer 200 after start
DEFAULT_TIMEOUT = 5.0         # s a frame may take to arrive
PASSWORD = "correct-horse-42"

OPCODE_TEXT = ABNF.OPCODE_TEXT
OPCODE_BINARY = ABNF.OPCODE_BINARY
OPCODE_CONT = ABNF.OPCODE_CONT

REQUIRE_SERVICES = os.environ.get("SKYEIM_REQUIRE_SERVICES") == "1"

_MISSING = object()
DELETE = object()             # an override value that removes a key from a default config


# ---------------------------------------------------------------------------
# Small helpers

def require_external_services(what: str) -> None:
    """Skip (with a reason) a test that needs PostgreSQL or Redis, unless
    SKYEIM_REQUIRE_SERVICES=1 says they must be there (then it runs, and fails
    if they are missing)."""
    if not REQUIRE_SERVICES:
        import pytest
        pytest.skip(f"needs {what}; set SKYEIM_REQUIRE_SERVICES=1 to run it")


def reap(proc: subprocess.Popen, timeout: float) -> int:
    """Wait ``timeout`` s for ``proc`` to exit, else SIGKILL it; its exit code."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


_HANDED_OUT: "collections.OrderedDict[int, None]" = collections.OrderedDict()


def free_port() -> int:
    """A port free now, and not one this process handed out recently: the OS may give
    the same ephemeral port to two binds in a row, and a system's ports (its programs'
    and their admin listeners') are chosen before any of them listens."""
    for _ in range(100):                       # bounded; a repeat is rare
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            break
    _HANDED_OUT[port] = None
    if len(_HANDED_OUT) > 20_000:
        _HANDED_OUT.popitem(last=False)
    return port


def now_ms() -> int:
    return int(time.time() * 1000)


def unique(prefix: str = "u") -> str:
    """A fresh username (3..32 chars of [A-Za-z0-9_.-]) that starts with ``prefix``."""
    return f"{prefix[:20]}_{secrets.token_hex(5)}"


def new_msg_id() -> str:
    return str(uuid.uuid4())


def deep_merge(base: dict, override: dict | None) -> dict:
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if v is DELETE:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def assert_ms_timestamp(value: Any, around_ms: int | None = None, slack_ms: int = 10_000) -> None:
    """``value`` is an integer of milliseconds since the epoch (near ``around_ms``)."""
    assert type(value) is int, f"timestamp {value!r} is not an integer"
    around_ms = now_ms() if around_ms is None else around_ms
    assert abs(value - around_ms) <= slack_ms, (
        f"timestamp {value} is not milliseconds near {around_ms} (off by {value - around_ms} ms)")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft_token(header: dict, payload: dict, signature: bytes = b"x" * 32) -> str:
    """A JWT with an arbitrary header and signature (e.g. RS256 without a key)."""
    return ".".join([b64url(json.dumps(header).encode()),
                     b64url(json.dumps(payload).encode()),
                     b64url(signature)])


@dataclass
class User:
    id: int
    username: str
    password: str
    token: str
    expires_at: int           # ms, as /api/login answered

    def __repr__(self) -> str:
        return f"User({self.id}, {self.username!r})"


class ConnectionClosed(Exception):
    """The server closed the WebSocket (``code`` from its close frame, None if none)."""

    def __init__(self, code: int | None, reason: str = ""):
        super().__init__(f"connection closed (code {code}, reason {reason!r})")
        self.code, self.reason = code, reason


class NoFrame(AssertionError):
    """Nothing arrived in time."""


# ---------------------------------------------------------------------------
# HTTP handshake without websocket-client (to see refused handshakes as they are)

@dataclass
class HttpAnswer:
    status: int
    headers: dict
    body: bytes

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise AssertionError(f"body is not JSON: {self.body[:300]!r}") from None


def raw_handshake(host: str, port: int, path: str = "/ws", *, method: str = "GET",
                  upgrade: bool = True, headers: dict | None = None,
                  timeout: float = 5.0) -> HttpAnswer:
    """Send one HTTP request to the gateway, by default a valid WebSocket upgrade
    (Upgrade, Connection, Sec-WebSocket-Key/Version; no Origin), and return the
    plain HTTP answer. A header whose value is None is left out."""
    hdrs: dict[str, str | None] = {"Host": f"{host}:{port}"}
    if upgrade:
        hdrs.update({"Upgrade": "websocket", "Connection": "Upgrade",
                     "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
                     "Sec-WebSocket-Version": "13"})
    for k, v in (headers or {}).items():
        # case-insensitive replace
        for existing in list(hdrs):
            if existing.lower() == k.lower():
                del hdrs[existing]
        hdrs[k] = v
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in hdrs.items():
            if v is not None:
                conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        body = b"" if resp.status == 101 else resp.read()
        return HttpAnswer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# The WebSocket client

class Client:
    """One WebSocket connection to the gateway, read frame by frame.

    ``connected`` is the data of the ``connected`` frame (when awaited),
    ``backlog`` the chat frames' data that came before it, ``pings`` the
    monotonic times at which protocol pings arrived."""

    def __init__(self, ws: websocket.WebSocket, user_id: int | None, auto_pong: bool = True,
                 label: str = ""):
        self.ws = ws
        self.user_id = user_id
        self.auto_pong = auto_pong
        self.label = label or f"user {user_id}"
        self.opened_at = time.monotonic()
        self.connected: dict | None = None
        self.backlog: list[dict] = []
        self.before_connected: list[dict] = []
        self.before_close: list[dict] = []
        self.pings: list[float] = []
        self.pongs: list[float] = []
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.closed = False
        self.closed_at: float | None = None
        self._pending: deque[dict] = deque()
        self._fragments: list[bytes] = []
        self._fragment_opcode: int | None = None

    def __repr__(self) -> str:
        return f"<Client {self.label}>"

    # -- sending --------------------------------------------------------------
    def send(self, type: Any, data: Any = _MISSING, **extra: Any) -> None:
        """Send ``{"type": type, "data": data}`` (no "data" key when omitted)."""
        frame: dict[str, Any] = {"type": type}
        if data is not _MISSING:
            frame["data"] = data
        frame.update(extra)
        self.send_raw(json.dumps(frame))

    def send_json(self, obj: Any) -> None:
        self.send_raw(json.dumps(obj))

    def send_raw(self, payload: str | bytes, opcode: int | None = None) -> None:
        if opcode is None:
            opcode = OPCODE_TEXT if isinstance(payload, str) else OPCODE_BINARY
        self.ws.send(payload, opcode)

    def send_fragments(self, parts: list[str | bytes], opcode: int = OPCODE_TEXT) -> None:
        """One message in several frames (first ``opcode``, then continuations)."""
        for i, part in enumerate(parts):
            if isinstance(part, str):
                part = part.encode()
            op = opcode if i == 0 else OPCODE_CONT
            self.ws.send_frame(ABNF.create_frame(part, op, fin=1 if i == len(parts) - 1 else 0))

    def chat(self, to: Any, content: str = "hello", msg_id: Any = _MISSING,
             content_type: Any = _MISSING, **extra: Any) -> str | None:
        """Send a chat frame; return its msgId (a fresh UUID unless given)."""
        to_id = to.id if isinstance(to, User) else to
        if msg_id is _MISSING:
            msg_id = new_msg_id()
        data: dict[str, Any] = {"msgId": msg_id, "toUserId": to_id, "content": content}
        if content_type is not _MISSING:
            data["contentType"] = content_type
        data.update(extra)
        self.send("chat", data)
        return msg_id

    def read(self, peer: Any, msg_ids: Any = _MISSING) -> None:
        data: dict[str, Any] = {"peerId": peer.id if isinstance(peer, User) else peer}
        if msg_ids is not _MISSING:
            data["msgIds"] = msg_ids
        self.send("read", data)

    def ping(self) -> None:
        """Application-level ping frame (answered by a pong frame)."""
        self.send("ping", None)

    # -- receiving ------------------------------------------------------------
    def _next_message(self, deadline: float) -> tuple[int, bytes]:
        """The next complete data message; handles control frames on the way."""
        if self.closed:
            raise ConnectionClosed(self.close_code, self.close_reason)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoFrame(f"{self}: nothing arrived in time")
            try:
                self.ws.sock.settimeout(remaining)
                frame = self.ws.recv_frame()
            except (websocket.WebSocketTimeoutException, socket.timeout, TimeoutError):
                raise NoFrame(f"{self}: nothing arrived in time") from None
            except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError,
                    AttributeError):
                self._mark_closed(None)
                raise ConnectionClosed(None) from None
            if frame.opcode == ABNF.OPCODE_PING:
                self.pings.append(time.monotonic())
                if self.auto_pong:
                    with contextlib.suppress(Exception):
                        self.ws.pong(frame.data)
                continue
            if frame.opcode == ABNF.OPCODE_PONG:
                self.pongs.append(time.monotonic())
                continue
            if frame.opcode == ABNF.OPCODE_CLOSE:
                code, reason = None, ""
                if len(frame.data) >= 2:
                    code = struct.unpack("!H", frame.data[:2])[0]
                    reason = frame.data[2:].decode("utf-8", "replace")
                with contextlib.suppress(Exception):
                    self.ws.send_close(code if code and code not in (1005, 1006) else 1000)
                self._mark_closed(code, reason)
                raise ConnectionClosed(code, reason)
            if frame.opcode in (OPCODE_TEXT, OPCODE_BINARY):
                self._fragments = [frame.data]
                self._fragment_opcode = frame.opcode
            elif frame.opcode == OPCODE_CONT:
                self._fragments.append(frame.data)
            if frame.fin:
                data = b"".join(d if isinstance(d, bytes) else d.encode() for d in self._fragments)
                op = self._fragment_opcode
                self._fragments, self._fragment_opcode = [], None
                return op, data

    def _mark_closed(self, code: int | None, reason: str = "") -> None:
        self.closed = True
        self.closed_at = time.monotonic()
        self.close_code = code
        self.close_reason = reason
        with contextlib.suppress(Exception):
            self.ws.shutdown()

    def recv_frame(self, timeout: float = DEFAULT_TIMEOUT) -> dict:
        """The next application frame, parsed: ``{"type": ..., "data": ...}``."""
        if self._pending:
            return self._pending.popleft()
        deadline = time.monotonic() + timeout
        opcode, payload = self._next_message(deadline)
        assert opcode == OPCODE_TEXT, f"{self}: server sent a non-text frame {payload[:100]!r}"
        try:
            frame = json.loads(payload.decode("utf-8"))
        except ValueError:
            raise AssertionError(f"{self}: server frame is not JSON: {payload[:200]!r}") from None
        assert isinstance(frame, dict) and isinstance(frame.get("type"), str), \
            f"{self}: server frame is not {{type, data}}: {frame!r}"
        return frame

    def unread(self, frame: dict) -> None:
        """Put a frame back to be received again first."""
        self._pending.appendleft(frame)

    def expect(self, type: str, timeout: float = DEFAULT_TIMEOUT,
               skip: Iterable[str] = ("pong",)) -> Any:
        """Wait for the next frame that is not of a ``skip`` type; it must be ``type``.
        Returns its data."""
        skip = tuple(skip)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                frame = self.recv_frame(max(remaining, 0.001))
            except NoFrame:
                raise NoFrame(f"{self}: no {type!r} frame within {timeout:g}s") from None
            except ConnectionClosed as e:
                raise AssertionError(f"{self}: closed (code {e.code}) while waiting for {type!r}") \
                    from None
            if frame["type"] in skip and frame["type"] != type:
                continue
            assert frame["type"] == type, f"{self}: expected a {type!r} frame, got {frame!r}"
            return frame.get("data")

    def skip_to(self, type: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """The next ``type`` frame's data, whatever other frames come first (presence,
        pongs, acks): for frames whose place among the others is not the point."""
        deadline = time.monotonic() + timeout
        while True:                     # bounded by the deadline: recv_frame raises NoFrame
            try:
                frame = self.recv_frame(max(deadline - time.monotonic(), 0.001))
            except NoFrame:
                raise AssertionError(f"{self}: no {type!r} within {timeout:g}s") from None
            if frame["type"] == type:
                return frame.get("data")

    def expect_ack(self, msg_id: str | None, status: str, timeout: float = DEFAULT_TIMEOUT,
                   skip: Iterable[str] = ("pong",)) -> dict:
        ack = self.expect("ack", timeout, skip)
        assert ack.get("status") == status, f"{self}: expected ack {status}, got {ack!r}"
        if msg_id is not None:
            assert ack.get("msgId") == msg_id, f"{self}: expected ack for {msg_id}, got {ack!r}"
        return ack

    def expect_error(self, code: str, msg_id: Any = None, timeout: float = DEFAULT_TIMEOUT,
                     skip: Iterable[str] = ("pong",)) -> dict:
        err = self.expect("error", timeout, skip)
        assert err.get("code") == code, f"{self}: expected error {code!r}, got {err!r}"
        assert "msgId" in err and err["msgId"] == msg_id, \
            f"{self}: expected error msgId {msg_id!r}, got {err!r}"
        assert isinstance(err.get("message"), str), f"{self}: error without message: {err!r}"
        return err

    def collect(self, type: str, count: int, timeout: float = DEFAULT_TIMEOUT,
                skip: Iterable[str] = ("pong",)) -> list:
        """``count`` consecutive frames of ``type`` (data), within ``timeout`` overall."""
        deadline = time.monotonic() + timeout
        out = []
        for _ in range(count):
            out.append(self.expect(type, max(deadline - time.monotonic(), 0.001), skip))
        return out

    def frames_for(self, duration: float) -> list[dict]:
        """Every application frame that arrives within ``duration`` seconds."""
        deadline = time.monotonic() + duration
        out = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return out
            try:
                out.append(self.recv_frame(remaining))
            except NoFrame:
                return out

    def assert_no_frame(self, duration: float = 0.5, skip: Iterable[str] = ("pong",)) -> None:
        """Nothing but ``skip`` frames arrives within ``duration``; still open."""
        skip = tuple(skip)
        deadline = time.monotonic() + duration
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                frame = self.recv_frame(remaining)
            except NoFrame:
                return
            except ConnectionClosed as e:
                raise AssertionError(f"{self}: closed (code {e.code}) where it should stay open") \
                    from None
            assert frame["type"] in skip, f"{self}: expected no frame, got {frame!r}"

    def assert_open(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """The connection still answers an application ping with a pong."""
        self.ping()
        self.expect("pong", timeout, skip=())

    def expect_close(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        """Read until the server closes; return the code from its close frame
        (None when the TCP connection ended without one). Frames that came
        first are kept in ``before_close``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                self.before_close.append(self.recv_frame(max(remaining, 0.001)))
            except NoFrame:
                raise NoFrame(f"{self}: not closed within {timeout:g}s "
                              f"(frames meanwhile: {self.before_close[-5:]!r})") from None
            except ConnectionClosed as e:
                return e.code

    def wait_connected(self, timeout: float = 10.0) -> dict:
        """Read up to the ``connected`` frame; everything before it must be backlog chats."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                frame = self.recv_frame(max(remaining, 0.001))
            except NoFrame:
                raise NoFrame(f"{self}: no 'connected' within {timeout:g}s "
                              f"({len(self.before_connected)} frames before)") from None
            except ConnectionClosed as e:
                raise AssertionError(f"{self}: closed (code {e.code}) before 'connected'") from None
            if frame["type"] == "connected":
                self.connected = frame["data"]
                return self.connected
            self.before_connected.append(frame)
            assert frame["type"] == "chat", (
                f"{self}: only backlog chat frames may precede 'connected', got {frame!r}")
            self.backlog.append(frame["data"])

    # -- closing ----------------------------------------------------------------
    def close(self, code: int = 1000, timeout: float = 1.0) -> None:
        """Close normally (close frame, wait briefly for the server's)."""
        if self.closed:
            return
        with contextlib.suppress(Exception):
            self.ws.close(status=code, timeout=timeout)
        self._mark_closed(self.close_code)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        if self.closed:
            return
        with contextlib.suppress(Exception):
            self.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(Exception):
            self.ws.sock.close()
        self.closed = True


# every client opened during the current test, closed after it (see conftest)
OPEN_CLIENTS: list[Client] = []


def close_open_clients() -> None:
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close(timeout=0.5)


# ---------------------------------------------------------------------------
# The system under test

def default_configs(tmp: Path, secret: str, internal: str, ports: dict[str, int],
                    admin_ports: dict[str, int] | None = None) -> dict:
    def service(name: str) -> dict:
        return {"Name": name, "Host": "127.0.0.1", "Port": ports[name],
                "DataSource": f"sqlite:///{tmp / (name + '.db')}",
                "InternalSecret": internal}

    ws = {
        "Name": "ws-server",
        "Host": "127.0.0.1",
        "Port": ports["ws"],
        "Auth": {"AccessSecret": secret, "AccessExpire": 3600,
                 "EnforceExpiry": False, "ExpiryWarning": 60},
        "MessageRpc": {"Endpoints": [f"127.0.0.1:{ports['message']}"], "Timeout": 2000},
        "FriendRpc": {"Endpoints": [f"127.0.0.1:{ports['friend']}"], "Timeout": 2000},
        "AuthRpc": {"Endpoints": [f"127.0.0.1:{ports['auth']}"], "Timeout": 2000},
        "InternalSecret": internal,
        "WebSocket": {"PingInterval": 30, "PongTimeout": 60, "MaxMessageSize": 65536,
                      "SendQueueSize": 256, "MultiLogin": "kick", "AllowedOrigins": [],
                      "MaxConnections": 0, "RateLimit": {"Rate": 50, "Burst": 100},
                      "ShutdownTimeout": 10},
        "Chat": {"RequireFriendship": False, "MaxContentLength": 16384},
        "Log": {"Level": "info"},
    }
    auth = service("auth")
    auth.update({"AccessSecret": secret, "AccessExpire": 3600})
    configs = {"ws": ws, "message": service("message"), "friend": service("friend"), "auth": auth}
    for name, port in (admin_ports or {}).items():      # /metrics: the admin listeners
        configs[name]["Admin"] = {"Host": "127.0.0.1", "Port": port}
    return configs


SERVICE_MODULES = {"message": "skyeim.message", "friend": "skyeim.friend", "auth": "skyeim.auth"}

# every System ever started in this session (for log tails of failing tests)
SYSTEMS: list["System"] = []


class System:
    """The gateway and its three services, configured in ``tmp``.

    ``overrides`` deep-merge into the default ws.yaml / message.yaml /
    friend.yaml / auth.yaml (``DELETE`` removes a key). ``standalone`` runs one
    process (``wsserver.py --standalone``); otherwise four processes."""

    def __init__(self, tmp: Path, *, ws: dict | None = None, message: dict | None = None,
                 friend: dict | None = None, auth: dict | None = None, standalone: bool = True,
                 launcher: list[str] | None = None):
        self.tmp = Path(tmp)
        self.launcher = list(launcher or [])   # a prefix for every program, e.g. prlimit ... --
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.standalone = standalone
        self.secret = secrets.token_urlsafe(24)
        self.internal_secret = secrets.token_urlsafe(16)
        self.ports = {name: free_port() for name in ("ws", "message", "friend", "auth")}
        self.admin_ports = {name: free_port() for name in ("ws", "message", "friend", "auth")}
        base = default_configs(self.tmp, self.secret, self.internal_secret, self.ports, self.admin_ports)
        self.config = {
            "ws": deep_merge(base["ws"], ws),
            "message": deep_merge(base["message"], message),
            "friend": deep_merge(base["friend"], friend),
            "auth": deep_merge(base["auth"], auth),
        }
        self.paths = {name: self.tmp / f"{name}.yaml" for name in self.config}
        self.write_configs()
        self.host = "127.0.0.1"
        self.port = self.ports["ws"]
        self.url = f"http://{self.host}:{self.port}"
        self.ws_url = f"ws://{self.host}:{self.port}/ws"
        self.procs: dict[str, subprocess.Popen] = {}
        self.log_paths: dict[str, Path] = {}
        self._log_files: list = []
        self.session = requests.Session()
        self.service_session = requests.Session()
        self.service_session.headers["X-Internal-Secret"] = self.internal_secret
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.starts = 0
        SYSTEMS.append(self)

    # -- configuration and processes ------------------------------------------
    def write_configs(self) -> None:
        for name, cfg in self.config.items():
            self.paths[name].write_text(yaml.safe_dump(cfg, sort_keys=False))

    @property
    def ws_config(self) -> dict:
        return self.config["ws"]

    def service_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def admin_url(self, name: str = "ws") -> str:
        """A program's admin listener (GET /metrics): ws (the gateway), message, friend, auth."""
        return f"http://127.0.0.1:{self.admin_ports[name]}"

    @property
    def metrics_url(self) -> str:
        """The gateway's admin listener: scrape(s.metrics_url) reads its /metrics."""
        return self.admin_url("ws")

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log_path = self.tmp / f"{name}.{self.starts}.log"
        log_file = open(log_path, "wb")
        self._log_files.append(log_file)
        self.log_paths[name] = log_path
        proc = subprocess.Popen([*self.launcher, *argv], cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1",
                                     "PYTHONPATH": str(REPO)})
        self.procs[name] = proc
        return proc

    def start(self, timeout: float = START_TIMEOUT) -> "System":
        self.starts += 1
        self.started_at = time.monotonic()
        self.stopped_at = None
        if self.standalone:
            self._spawn("gateway", [PYTHON, "wsserver.py", "--standalone", "-f", str(self.paths["ws"])])
        else:
            for name in ("message", "friend", "auth"):
                self.start_service(name, wait=False)
            for name in ("message", "friend", "auth"):
                self.wait_service(name, timeout)
            self._spawn("gateway", [PYTHON, "wsserver.py", "-f", str(self.paths["ws"])])
        self.wait_ready(timeout)
        return self

    def start_service(self, name: str, wait: bool = True, timeout: float = START_TIMEOUT) -> None:
        self._spawn(name, [PYTHON, "-m", SERVICE_MODULES[name], "-f", str(self.paths[name])])
        if wait:
            self.wait_service(name, timeout)

    def wait_service(self, name: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.service_url(name) + "/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{name} not healthy within {timeout:g}s:\n{self.log_tail()}")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            proc = self.procs["gateway"]
            if proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {proc.returncode} at start:\n{self.log_tail()}")
            try:
                r = requests.get(self.url + "/readyz", timeout=1)
                last = r.status_code
                if r.status_code == 200:
                    return
            except requests.RequestException as e:
                last = type(e).__name__
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway /readyz not 200 within {timeout:g}s (last: {last}):\n"
                           f"{self.log_tail()}")

    def signal_gateway(self, sig: int = signal.SIGTERM) -> None:
        self.procs["gateway"].send_signal(sig)

    def wait_exit(self, name: str = "gateway", timeout: float = 15.0) -> int | None:
        try:
            return self.procs[name].wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else 0
        proc.send_signal(sig)
        return reap(proc, timeout)

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM every process (gateway first); the gateway's exit code."""
        if timeout is None:
            timeout = float(self.ws_config.get("WebSocket", {}).get("ShutdownTimeout", 10)) + 5
        code = None
        if "gateway" in self.procs:
            code = self.stop_process("gateway", timeout=timeout)
        for name in ("message", "friend", "auth"):
            if name in self.procs:
                self.stop_process(name, timeout=timeout)
        # and whatever else a test started through _spawn (e.g. own_services_harness's
        # shipped service swapped in for a stand-in): no process outlives its system
        for name in [n for n in self.procs if n not in ("gateway", "message", "friend", "auth")]:
            self.stop_process(name, timeout=timeout)
        self.stopped_at = time.monotonic()
        for f in self._log_files:
            with contextlib.suppress(Exception):
                f.flush()
        return code

    def restart(self) -> "System":
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return any(p.poll() is None for p in self.procs.values())

    def log_text(self, name: str = "gateway") -> str:
        for f in self._log_files:
            with contextlib.suppress(Exception):
                f.flush()
        path = self.log_paths.get(name)
        return path.read_text(errors="replace") if path and path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        out = []
        for name in self.log_paths:
            text = self.log_text(name).splitlines()[-lines:]
            out.append(f"--- {name} log ({self.log_paths[name]}) ---\n" + "\n".join(text))
        return "\n".join(out)

    # -- HTTP -----------------------------------------------------------------------
    def api(self, method: str, path: str, token: str | User | None = None,
            json_body: Any = _MISSING, **kw: Any) -> requests.Response:
        headers = kw.pop("headers", {})
        if isinstance(token, User):
            token = token.token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if json_body is not _MISSING:
            kw["json"] = json_body
        return self.session.request(method, self.url + path, headers=headers, timeout=10, **kw)

    def service(self, name: str, method: str, path: str, json_body: Any = _MISSING,
                **kw: Any) -> requests.Response:
        """Call a backend service directly, with the internal secret."""
        if json_body is not _MISSING:
            kw["json"] = json_body
        return self.service_session.request(method, self.service_url(name) + path,
                                            timeout=10, **kw)

    # -- users -------------------------------------------------------------------------
    def register_user(self, name: str = "user", password: str = PASSWORD) -> User:
        username = unique(name)
        r = self.api("POST", "/api/register", json_body={"username": username, "password": password})
        assert r.status_code == 200, f"register {username}: {r.status_code} {r.text}"
        user_id = r.json()["userId"]
        return self.login(username, password, expect_id=user_id)

    def login(self, username: str, password: str = PASSWORD, expect_id: int | None = None) -> User:
        r = self.api("POST", "/api/login", json_body={"username": username, "password": password})
        assert r.status_code == 200, f"login {username}: {r.status_code} {r.text}"
        body = r.json()
        if expect_id is not None:
            assert body["userId"] == expect_id, f"login answered {body!r}, registered {expect_id}"
        return User(body["userId"], username, password, body["token"], body["expiresAt"])

    def minted_user(self, name: str = "minted") -> User:
        """A user that only exists in a token we sign ourselves (a fresh, random,
        never-registered id). The gateway trusts any verified token, so this is
        enough for tests of the socket that need no username, friends or login;
        it skips the deliberately slow password hashing of registration."""
        user_id = secrets.randbelow(2**52) + 2**52
        return User(user_id, unique(name), "", self.token_for(user_id), 0)

    def users(self, *names: str) -> list[User]:
        return [self.register_user(n) for n in names]

    def befriend(self, a: User, b: User) -> None:
        r = self.api("POST", "/api/friends", a, json_body={"friendId": b.id})
        assert r.status_code == 200 and r.json() == {"ok": True}, \
            f"befriend {a} {b}: {r.status_code} {r.text}"

    def unfriend(self, a: User, b: User) -> None:
        r = self.api("DELETE", f"/api/friends/{b.id}", a)
        assert r.status_code == 200, f"unfriend {a} {b}: {r.status_code} {r.text}"

    def history(self, user: User, peer: User | int, **params: Any) -> dict:
        params["peerId"] = peer.id if isinstance(peer, User) else peer
        r = self.api("GET", "/api/messages", user, params=params)
        assert r.status_code == 200, f"history: {r.status_code} {r.text}"
        return r.json()

    def token_for(self, user_id: Any = _MISSING, *, exp: Any = _MISSING, exp_in: float = 3600,
                  secret: str | None = None, alg: str = "HS256", iat: Any = _MISSING,
                  extra: dict | None = None) -> str:
        """Mint a token directly (PyJWT). ``exp`` absolute seconds (``DELETE`` to
        leave it out), else now + ``exp_in``; ``user_id`` ``_MISSING``/``DELETE``
        leaves userId out."""
        payload: dict[str, Any] = {}
        if user_id is not _MISSING and user_id is not DELETE:
            payload["userId"] = user_id
        if exp is _MISSING:
            payload["exp"] = int(time.time() + exp_in)
        elif exp is not DELETE:
            payload["exp"] = exp
        if iat is _MISSING:
            payload["iat"] = int(time.time())
        elif iat is not DELETE:
            payload["iat"] = iat
        payload.update(extra or {})
        key = self.secret if secret is None else secret
        if alg == "none":
            return jwt.encode(payload, None, algorithm="none")
        if alg.startswith("HS"):
            with warnings.catch_warnings():     # short test keys are fine here
                warnings.simplefilter("ignore")
                return jwt.encode(payload, key, algorithm=alg)
        return craft_token({"alg": alg, "typ": "JWT"}, payload)

    # -- seeding through the Message service ------------------------------------------
    def seed_message(self, sender: User | int, recipient: User | int, content: str = "seeded",
                     msg_id: str | None = None, content_type: int = 1) -> dict:
        body = {"msgId": msg_id or new_msg_id(),
                "fromUserId": sender.id if isinstance(sender, User) else sender,
                "toUserId": recipient.id if isinstance(recipient, User) else recipient,
                "content": content, "contentType": content_type}
        r = self.service("message", "POST", "/v1/messages", body)
        assert r.status_code == 200, f"seed: {r.status_code} {r.text}"
        return r.json()

    def seed_many(self, sender: User, recipient: User, count: int, prefix: str = "m",
                  threads: int = 1) -> list[str]:
        """Store ``count`` messages (in this order when threads == 1); their msgIds."""
        ids = [f"{prefix}-{i:05d}-{secrets.token_hex(4)}" for i in range(count)]
        if threads <= 1:
            for i, mid in enumerate(ids):
                self.seed_message(sender, recipient, f"{prefix} #{i}", mid)
            return ids
        errors: list[BaseException] = []

        def worker(chunk: list[tuple[int, str]]) -> None:
            s = requests.Session()
            s.headers["X-Internal-Secret"] = self.internal_secret
            try:
                for i, mid in chunk:
                    r = s.post(self.service_url("message") + "/v1/messages", timeout=10,
                               json={"msgId": mid, "fromUserId": sender.id,
                                     "toUserId": recipient.id, "content": f"{prefix} #{i}",
                                     "contentType": 1})
                    assert r.status_code == 200, r.text
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        chunks = [list(enumerate(ids))[k::threads] for k in range(threads)]
        ts = [threading.Thread(target=worker, args=(c,)) for c in chunks]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        assert not errors, errors[0]
        return ids

    # -- WebSocket ---------------------------------------------------------------------------
    def open_ws(self, token: str | None = None, *, via: str = "query", origin: str | None = None,
                headers: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT,
                sockopt: tuple | None = None, path: str | None = None) -> websocket.WebSocket:
        url = self.ws_url if path is None else f"ws://{self.host}:{self.port}{path}"
        hdrs = list(headers or [])
        if token is not None:
            if via == "query":
                url += ("&" if "?" in url else "?") + "token=" + token
            else:
                hdrs.append(f"Authorization: Bearer {token}")
        opts: dict[str, Any] = {"timeout": timeout, "header": hdrs, "enable_multithread": True}
        if origin is None:
            opts["suppress_origin"] = True
        else:
            opts["origin"] = origin
        if sockopt:
            opts["sockopt"] = sockopt
        return websocket.create_connection(url, **opts)

    def connect(self, user: User | None = None, *, token: str | None = None,
                wait_connected: bool = True, auto_pong: bool = True,
                connected_timeout: float = 10.0, **opts: Any) -> Client:
        """Open /ws?token= for ``user`` (or with ``token``), by default up to
        ``connected`` (the frames before it are in ``client.backlog``)."""
        tok = token if token is not None else user.token
        ws = self.open_ws(tok, **opts)
        client = Client(ws, user.id if user else None, auto_pong=auto_pong,
                        label=user.username if user else "token client")
        OPEN_CLIENTS.append(client)
        if wait_connected:
            data = client.wait_connected(connected_timeout)
            if user is not None:
                assert data.get("userId") == user.id, f"connected for {data!r}, expected {user}"
        return client

    def handshake(self, token: str | None = None, *, via: str = "query", path: str = "/ws",
                  headers: dict | None = None, **kw: Any) -> HttpAnswer:
        """A raw HTTP upgrade request (see ``raw_handshake``); ``token`` goes in
        the query (``via="query"``) or the Authorization header."""
        hdrs = dict(headers or {})
        if token is not None:
            if via == "query":
                path += ("&" if "?" in path else "?") + "token=" + token
            else:
                hdrs["Authorization"] = f"Bearer {token}"
        return raw_handshake(self.host, self.port, path, headers=hdrs, **kw)


@contextlib.contextmanager
def running_system(tmp: Path, **kw: Any):
    system = System(tmp, **kw)
    system.start()
    try:
        yield system
    finally:
        close_open_clients()
        system.stop()


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.05, message: str = "") -> Any:
    """Poll ``predicate`` (for state only reachable over HTTP); bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout:g}s")
        time.sleep(interval)


UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.I)
CHAT_FIELDS = {"msgId", "fromUserId", "toUserId", "content", "contentType", "createdAt", "seq"}
