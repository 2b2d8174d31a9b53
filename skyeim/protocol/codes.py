"""Close codes and error codes: the one home for both (PROTOCOL.md section 4).

The gateway closes with a ``CloseCode`` and answers with an ``ErrorCode``; the
SDK and the web page (static/app.js, checked by tests/test_codes.py) read the
same values. Both enums compare equal to their plain values (``CloseCode.REPLACED
== 4001``, ``ErrorCode.BAD_REQUEST == "bad_request"``), so JSON and logs carry
the bare number or string.
"""
from __future__ import annotations

import enum


class CloseCode(enum.IntEnum):
    """WebSocket close codes the gateway sends (and 1006, which nobody sends)."""

    NORMAL = 1000
    GOING_AWAY = 1001            # the gateway is shutting down: reconnect
    PROTOCOL_ERROR = 1002        # RFC 6455 framing violated
    ABNORMAL = 1006              # never sent: the TCP connection dropped without a close frame
    INVALID_DATA = 1007          # a text message that is not UTF-8
    TOO_BIG = 1009               # a message over WebSocket.MaxMessageSize
    INTERNAL = 1011              # an unexpected error on the server
    REPLACED = 4001              # a newer login of the same user: do not reconnect by yourself
    TOO_SLOW = 4002              # the send queue overflowed: nothing lost, reconnect
    TOKEN_EXPIRED = 4003         # expired, revoked, or disconnected by the server API: new token
    HEARTBEAT_TIMEOUT = 4004     # nothing heard for WebSocket.PongTimeout

    @property
    def reconnect(self) -> bool:
        """Whether a client should reconnect by itself after this close: a shutdown,
        a dropped connection, a server error, a full send queue or a missed
        heartbeat. Not after 4001 (another login took over), 4003 (a new token
        first) or a close the same frames would earn again (1000, 1002, 1007, 1009)."""
        return self in _RECONNECT


_RECONNECT = frozenset({CloseCode.GOING_AWAY, CloseCode.ABNORMAL, CloseCode.INTERNAL,
                        CloseCode.TOO_SLOW, CloseCode.HEARTBEAT_TIMEOUT})


class ErrorCode(enum.StrEnum):
    """The ``code`` of an ``error`` frame or of an HTTP error body ``{code, message}``."""

    # error frames (PROTOCOL.md section 4)
    BAD_JSON = "bad_json"
    BAD_REQUEST = "bad_request"
    UNKNOWN_TYPE = "unknown_type"
    UNSUPPORTED_FRAME = "unsupported_frame"
    NOT_FRIENDS = "not_friends"
    RATE_LIMITED = "rate_limited"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    REJECTED = "rejected"                 # the before-send hook refused the chat (9.4)
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    # refused handshakes (section 1) and HTTP answers (sections 6, 7, 9)
    NOT_WEBSOCKET = "not_websocket"
    FORBIDDEN_ORIGIN = "forbidden_origin"
    OVERLOADED = "overloaded"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    TOO_MANY_DEVICES = "too_many_devices"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    DB_LOCKED = "db_locked"
    DB_FULL = "db_full"
    TOO_MANY_MEMBERS = "too_many_members"   # a group at its member cap (docs/protocol.md "Groups")
    UNSUPPORTED_TYPE = "unsupported_type"   # an upload whose sniffed type Files.AllowedTypes lacks (415)
    NOT_SUPPORTED = "not_supported"         # a service lacks an optional endpoint (PROTOCOL 9.1)
    ERROR = "error"                         # an HTTP error status that has no code of its own
    # recall and edit (docs/protocol.md "Recall, edit, delete")
    TOO_LATE = "too_late"                   # past Chat.RecallWindow / Chat.EditWindow
    RECALLED = "recalled"                   # an edit of a recalled message
    # group administration (docs/protocol.md "Group administration")
    MUTED = "muted"                         # a muted member's groupchat
