"""Application frames: parsing and validating what clients send, encoding what we send.

No I/O here: ``parse`` turns a text message into a typed frame or raises
FrameError with the contract's error code; the ``encode_*`` functions build the
JSON text of server frames (each encoded once, even when fanned out).
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

import orjson

from skyeim.tokens import is_user_id

MSG_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CONTENT_TYPES = (1, 2, 3, 4)      # text, image, file, voice
MAX_READ_IDS = 1000               # msgIds in one read receipt
SERVER_TYPES = frozenset({"connected", "pong", "ack", "online", "offline", "error",
                          "token_expiring", "sync_messages", "sync_complete", "group_unread"})


class FrameError(Exception):
    """A client frame the gateway refuses; answered with an ``error`` frame."""

    def __init__(self, code: str, message: str, msg_id: str | None = None,
                 request_id: str | None = None):
        super().__init__(message)
        self.code, self.message, self.msg_id = code, message, msg_id
        self.request_id = request_id      # a sync frame's, echoed in the error


@dataclass(frozen=True, slots=True)
class Ping:
    kind = "ping"


@dataclass(frozen=True, slots=True)
class Chat:
    kind = "chat"
    msg_id: str                   # the client's, or one the server made
    to_user_id: int
    content: str
    content_type: int
    given_msg_id: str | None      # the client's only: what an error frame may echo


@dataclass(frozen=True, slots=True)
class Read:
    kind = "read"
    peer_id: int
    msg_ids: tuple[str, ...]      # empty = every unread message from peer_id


@dataclass(frozen=True, slots=True)
class Auth:
    kind = "auth"
    token: str


@dataclass(frozen=True, slots=True)
class Typing:
    kind = "typing"               # an extension: skyeim/gateway/devices.py
    to_user_id: int | None        # a peer, or
    state: str
    group_id: int | None = None   # a group (exactly one of the two)


ClientFrame = Ping | Chat | Read | Auth | Typing


def _bounded_int(digits: str):
    # an integer too long to be any id is still valid JSON: let validation refuse it
    # (bad_request) instead of Python's int-size guard turning it into bad_json
    return int(digits) if len(digits) <= 40 else float("inf")


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")     # json.loads would accept NaN and Infinity


_decode = json.JSONDecoder(parse_int=_bounded_int, parse_constant=_not_json).decode


def parse(text: str, sender_id: int, max_content_length: int) -> ClientFrame:
    try:
        obj = _decode(text)
    except RecursionError:
        raise FrameError("bad_request", "JSON nested too deeply") from None
    except ValueError:
        raise FrameError("bad_json", "the frame is not valid JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise FrameError("bad_request", 'a frame is a JSON object with a string "type"')
    kind, data = obj["type"], obj.get("data")
    if kind == "ping":
        return Ping()
    if kind == "chat":
        return _parse_chat(data, sender_id, max_content_length)
    if kind == "read":
        return _parse_read(data, sender_id)
    if kind == "auth":
        if not isinstance(data, dict) or not isinstance(data.get("token"), str):
            raise FrameError("bad_request", 'auth needs data {"token": "<JWT>"}')
        return Auth(data["token"])
    if kind == "sync":
        from skyeim.gateway.features import sync     # (which builds on this module)
        return sync.parse(data, sender_id)
    if kind == "typing":
        from skyeim.gateway.features.devices import parse_typing
        return parse_typing(data, sender_id)
    if kind == "groupchat":
        from skyeim.gateway.features import groups     # an extension: skyeim/gateway/groups.py
        return groups.parse_groupchat(data, max_content_length)
    if kind == "group_read":
        from skyeim.gateway.features import groups
        return groups.parse_group_read(data)
    if kind in SERVER_TYPES:
        raise FrameError("unknown_type", f"{kind!r} is sent by the server only")
    raise FrameError("unknown_type", f"unknown frame type {kind[:64]!r}")


def _parse_chat(data, sender_id: int, max_content_length: int) -> Chat:
    if not isinstance(data, dict):
        raise FrameError("bad_request", "chat needs a data object")
    msg_id = data.get("msgId")    # errors echo it only when the client sent a valid one
    if msg_id is not None and not is_msg_id(msg_id):
        raise FrameError("bad_request", "msgId must be 1 to 64 characters of A-Z a-z 0-9 _ -")
    to = data.get("toUserId")
    if not is_user_id(to):
        raise FrameError("bad_request", "toUserId must be an integer user id", msg_id)
    if to == sender_id:
        raise FrameError("bad_request", "a chat to oneself is not allowed", msg_id)
    content = data.get("content")
    if not isinstance(content, str) or not content:
        raise FrameError("bad_request", "content must be a non-empty string", msg_id)
    if len(content) > max_content_length:
        raise FrameError("bad_request",
                         f"content is longer than {max_content_length} characters", msg_id)
    if not _encodable(content):
        raise FrameError("bad_request", "content holds an unpaired surrogate", msg_id)
    ctype = data.get("contentType")
    if ctype is None:
        ctype = 1
    elif type(ctype) is not int or ctype not in CONTENT_TYPES:
        raise FrameError("bad_request", "contentType must be 1, 2, 3 or 4", msg_id)
    return Chat(msg_id if msg_id is not None else str(uuid.uuid4()), to, content, ctype, msg_id)


def _parse_read(data, sender_id: int) -> Read:
    if not isinstance(data, dict):
        raise FrameError("bad_request", "read needs a data object")
    peer = data.get("peerId")
    if not is_user_id(peer) or peer == sender_id:
        raise FrameError("bad_request", "peerId must be the user id of the other user")
    ids = data.get("msgIds")
    if ids is None:
        ids = []
    if not isinstance(ids, list) or not all(is_msg_id(i) for i in ids):
        raise FrameError("bad_request", "msgIds must be a list of msgIds")
    if len(ids) > MAX_READ_IDS:
        raise FrameError("bad_request", f"at most {MAX_READ_IDS} msgIds in one read")
    return Read(peer, tuple(dict.fromkeys(ids)))


def is_msg_id(v: object) -> bool:
    return isinstance(v, str) and MSG_ID.fullmatch(v) is not None


def _encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# ---------------------------------------------------------------------------
# Server frames: compact JSON, non-ASCII content as UTF-8 (not \u escapes).
# orjson, because the stdlib encoder was 8% of the gateway's CPU at the chat
# peak (docs/performance.md); every string it is given was checked to be
# valid Unicode when its frame came in.

def encode(kind: str, data) -> str:
    return orjson.dumps({"type": kind, "data": data}).decode("utf-8")


def chat_data(m: dict) -> dict:
    """The ChatMessage of a stored message (as the Message service returns it)."""
    return {"msgId": m["msgId"], "fromUserId": m["fromUserId"], "toUserId": m["toUserId"],
            "content": m["content"], "contentType": m["contentType"],
            "createdAt": m["createdAt"], "seq": m["seq"]}


def encode_chat(m: dict) -> str:
    return encode("chat", chat_data(m))


def encode_ack(msg_id: str, status: str, timestamp: int, seq: int,
               duplicate: bool = False) -> str:
    data = {"msgId": msg_id, "status": status, "timestamp": timestamp, "seq": seq}
    if duplicate:
        data["duplicate"] = True
    return encode("ack", data)


def encode_error(code: str, message: str, msg_id: str | None = None,
                 request_id: str | None = None) -> str:
    data = {"msgId": msg_id, "code": code, "message": message}
    if request_id is not None:            # extension: the sync frame's requestId
        data["requestId"] = request_id
    return encode("error", data)


PONG = encode("pong", None)
