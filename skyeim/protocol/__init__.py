"""What the gateway, the services and the client SDK share of the wire contract
(../shared/PROTOCOL.md): close and error codes, the id rules, content types,
the handshake's platforms and the token bucket behind every per-connection
rate. Pure Python, no I/O, no imports from the rest of skyeim: it is the
bottom layer, and the SDK installs with it alone.
"""
from skyeim.protocol.codes import CloseCode, ErrorCode
from skyeim.protocol.ids import (CONTENT_TYPES, MAX_USER_ID, MSG_ID_PATTERN, ContentType,
                                 is_msg_id, is_positive_id, is_user_id)
from skyeim.protocol.platforms import PLATFORMS, UNKNOWN_PLATFORM, parse_platform
from skyeim.protocol.ratelimit import TokenBucket

__all__ = ["CloseCode", "ErrorCode", "ContentType", "CONTENT_TYPES", "MAX_USER_ID", "MSG_ID_PATTERN",
           "PLATFORMS", "TokenBucket", "UNKNOWN_PLATFORM", "is_msg_id", "is_positive_id",
           "is_user_id", "parse_platform"]
