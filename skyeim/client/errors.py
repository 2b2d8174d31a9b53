"""Exceptions of the SkyeIM client SDK. Everything raised on purpose is a ``SkyeIMError``."""
from __future__ import annotations

import json
from typing import Any

from skyeim.protocol import CloseCode, ErrorCode


class SkyeIMError(Exception):
    """Base class of every error the SDK raises on purpose."""


# -- refused WebSocket handshakes (PROTOCOL.md section 1) ----------------------------------

class HandshakeRefused(SkyeIMError):
    """The gateway answered the upgrade with plain HTTP ``status`` and ``{code, message}``."""

    def __init__(self, status: int, code: str, message: str = ""):
        super().__init__(f"handshake refused: {status} {code}" + (f": {message}" if message else ""))
        self.status, self.code, self.message = status, code, message


class Unauthorized(HandshakeRefused):
    """401 ``unauthorized``: the token is missing, invalid or expired."""


class ForbiddenOrigin(HandshakeRefused):
    """403 ``forbidden_origin``: the Origin header is not in ``AllowedOrigins``."""


class Overloaded(HandshakeRefused):
    """503 ``overloaded``: the gateway is full or shutting down (retry later)."""


class TooManyDevices(HandshakeRefused):
    """409 ``too_many_devices``: the user has WebSocket.MaxDevicesPerUser live connections
    (MultiLogin allow). Final: not retried by itself; close another device first."""


_REFUSALS = {401: Unauthorized, 403: ForbiddenOrigin, 409: TooManyDevices, 503: Overloaded}
_DEFAULT_CODES = {400: ErrorCode.NOT_WEBSOCKET, 401: ErrorCode.UNAUTHORIZED,
                  403: ErrorCode.FORBIDDEN_ORIGIN, 409: ErrorCode.TOO_MANY_DEVICES,
                  503: ErrorCode.OVERLOADED}


def handshake_refused(status: int, body: bytes | None) -> HandshakeRefused:
    """The typed exception for a refused handshake, from its status and JSON body."""
    code, message = _DEFAULT_CODES.get(status, f"http_{status}"), ""
    try:
        obj = json.loads(body or b"")
        if isinstance(obj, dict):
            code = obj.get("code") if isinstance(obj.get("code"), str) else code
            message = obj.get("message") if isinstance(obj.get("message"), str) else ""
    except ValueError:
        message = (body or b"")[:200].decode("utf-8", "replace")
    return _REFUSALS.get(status, HandshakeRefused)(status, code, message)


class ConnectFailed(SkyeIMError):
    """The gateway could not be reached (refused, timed out, DNS, TLS ...)."""


# -- the end of a connection (PROTOCOL.md section 4) ---------------------------------------

class ConnectionClosed(SkyeIMError):
    """The connection ended for good (no automatic reconnect): ``code`` is the
    server's close code, 1006 when the TCP connection ended without one."""

    def __init__(self, code: int | None, reason: str = "", message: str | None = None):
        super().__init__(message or f"connection closed (code {code}"
                         + (f", {reason!r})" if reason else ")"))
        self.code, self.reason = code, reason


class Replaced(ConnectionClosed):
    """4001: a newer login of the same user replaced this connection. Not reconnected."""


class TokenExpired(ConnectionClosed):
    """4003: the token expired or was revoked; needs a new token (``token_provider``)."""


class ReconnectFailed(ConnectionClosed):
    """Reconnecting gave up after ``attempts`` attempts; ``last_error`` is the last failure."""

    def __init__(self, attempts: int, last_error: BaseException | None):
        super().__init__(CloseCode.ABNORMAL, "",
                         f"reconnect failed after {attempts} attempts: {last_error}")
        self.attempts, self.last_error = attempts, last_error


class ClientClosed(ConnectionClosed):
    """The client was closed by its owner (``Client.close()``)."""

    def __init__(self) -> None:
        super().__init__(CloseCode.NORMAL, "", "the client is closed")


class NotConnected(SkyeIMError):
    """The operation needs a live connection and there is none right now."""


class TokenRefused(SkyeIMError):
    """The gateway refused an ``auth`` frame: ``unauthorized`` (an invalid token) or
    ``forbidden`` (a token for another user). The connection stays open."""

    def __init__(self, code: str, message: str = ""):
        super().__init__(f"token refused: {code}" + (f": {message}" if message else ""))
        self.code, self.message = code, message


# -- sending -------------------------------------------------------------------------------

class ChatError(SkyeIMError):
    """The gateway answered a chat with an ``error`` frame (``code`` as in section 4)."""

    def __init__(self, msg_id: str, code: str, message: str = ""):
        super().__init__(f"chat {msg_id} refused: {code}" + (f": {message}" if message else ""))
        self.msg_id, self.code, self.message = msg_id, code, message


class AckTimeout(SkyeIMError, TimeoutError):
    """The awaited ack did not come in time. The chat stays in the outbox (it is
    still resent after a reconnect); ``result`` is what is known so far."""

    def __init__(self, msg_id: str, wanted: str, result: Any):
        super().__init__(f"no {wanted!r} ack for {msg_id} in time (status: {result.status})")
        self.msg_id, self.wanted, self.result = msg_id, wanted, result


class OutboxFull(SkyeIMError):
    """Too many chats are waiting for their ``sent`` ack (``max_outbox``)."""


# -- the REST API (PROTOCOL.md section 7) --------------------------------------------------

class ApiError(SkyeIMError):
    """An HTTP call answered ``status`` with ``{code, message}`` (or could not be made:
    ``status`` None, ``code`` ``"unreachable"``)."""

    def __init__(self, status: int | None, code: str, message: str = ""):
        where = f"{status} " if status is not None else ""
        super().__init__(f"{where}{code}" + (f": {message}" if message else ""))
        self.status, self.code, self.message = status, code, message


class BadRequest(ApiError):
    """400 ``bad_request``."""


class AuthError(ApiError):
    """401 ``unauthorized``: wrong credentials, or a missing/invalid token."""


class NotFound(ApiError):
    """404 ``not_found``."""


class Conflict(ApiError):
    """409 ``conflict`` (e.g. the username is taken)."""


class ServiceUnavailable(ApiError):
    """5xx (``unavailable``) or the server could not be reached."""


def api_error(status: int | None, code: str, message: str = "") -> ApiError:
    cls = {400: BadRequest, 401: AuthError, 404: NotFound, 409: Conflict}.get(status or 0)
    if cls is None:
        cls = ServiceUnavailable if status is None or status >= 500 else ApiError
    return cls(status, code, message)
