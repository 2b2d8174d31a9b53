"""The contract's rules for ids and content types (PROTOCOL.md section 2)."""
from __future__ import annotations

import enum
import re

MAX_USER_ID = 2**63 - 1
MSG_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")     # use with fullmatch


class ContentType(enum.IntEnum):
    TEXT = 1
    IMAGE = 2
    FILE = 3
    VOICE = 4


CONTENT_TYPES = frozenset(ContentType)   # a chat's contentType is one of these (never a bool)


def is_positive_id(v: object) -> bool:
    """A JSON integer from 1 to 2**63-1 (never a bool, float or string): a user id,
    a group id, a seq."""
    return type(v) is int and 1 <= v <= MAX_USER_ID


def is_user_id(v: object) -> bool:
    """A user id: a JSON integer from 1 to 2**63-1."""
    return is_positive_id(v)


def is_msg_id(v: object) -> bool:
    """A msgId: 1 to 64 characters of A-Z a-z 0-9 _ -."""
    return isinstance(v, str) and MSG_ID_PATTERN.fullmatch(v) is not None
