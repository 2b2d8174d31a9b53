"""Frames on the wire: reading a client frame's JSON, the field rules several
frame types share, and encoding what the server sends.

No I/O and no feature here: ``decode`` turns a text message into its JSON
object or raises FrameError with the contract's error code; each frame type's
parser (in its feature module, see registry.py) checks its own ``data``; the
``encode_*`` functions build the JSON text of server frames (each encoded
once, even when fanned out).
"""
from __future__ import annotations

import json

import orjson

from skyeim.protocol import CONTENT_TYPES, ContentType, ErrorCode, is_msg_id


class FrameError(Exception):
    """A client frame the gateway refuses; answered with an ``error`` frame."""

    def __init__(self, code: ErrorCode, message: str, msg_id: str | None = None,
                 request_id: str | None = None):
        super().__init__(message)
        self.code, self.message, self.msg_id = code, message, msg_id
        self.request_id = request_id      # a sync frame's, echoed in the error

    def encode(self) -> str:
        """The ``error`` frame that answers it."""
        return encode_error(self.code, self.message, self.msg_id, self.request_id)


def bad_request(message: str, msg_id: str | None = None,
                request_id: str | None = None) -> FrameError:
    return FrameError(ErrorCode.BAD_REQUEST, message, msg_id, request_id)


def _bounded_int(digits: str):
    # an integer too long to be any id is still valid JSON: let validation refuse it
    # (bad_request) instead of Python's int-size guard turning it into bad_json
    return int(digits) if len(digits) <= 40 else float("inf")


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")     # json.loads would accept NaN and Infinity


_decode = json.JSONDecoder(parse_int=_bounded_int, parse_constant=_not_json).decode


def decode(text: str) -> dict:
    """The frame's JSON object, which has a string ``type``; else FrameError."""
    try:
        obj = _decode(text)
    except RecursionError:
        raise bad_request("JSON nested too deeply") from None
    except ValueError:
        raise FrameError(ErrorCode.BAD_JSON, "the frame is not valid JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise bad_request('a frame is a JSON object with a string "type"')
    return obj


# -- field rules shared by several frame types --------------------------------------

def data_object(data, kind: str) -> dict:
    """A frame's ``data``, which must be an object."""
    if not isinstance(data, dict):
        raise bad_request(f"{kind} needs a data object")
    return data


def optional_msg_id(data: dict, field: str = "msgId") -> str | None:
    """The client's msgId (or a sync's requestId): absent, or 1 to 64 of A-Z a-z 0-9 _ -.
    Errors echo it only once it is known to be valid."""
    value = data.get(field)
    if value is not None and not is_msg_id(value):
        raise bad_request(f"{field} must be 1 to 64 characters of A-Z a-z 0-9 _ -")
    return value


def chat_content(data: dict, max_length: int, msg_id: str | None) -> str:
    """A chat's (or group chat's) ``content``: a non-empty string of valid Unicode."""
    content = data.get("content")
    if not isinstance(content, str) or not content:
        raise bad_request("content must be a non-empty string", msg_id)
    if len(content) > max_length:
        raise bad_request(f"content is longer than {max_length} characters", msg_id)
    if not _encodable(content):
        raise bad_request("content holds an unpaired surrogate", msg_id)
    return content


def content_type(data: dict, msg_id: str | None) -> int:
    """A chat's ``contentType``: 1 (text, the default), 2, 3 or 4."""
    ctype = data.get("contentType")
    if ctype is None:
        return ContentType.TEXT.value
    if type(ctype) is not int or ctype not in CONTENT_TYPES:
        raise bad_request("contentType must be 1, 2, 3 or 4", msg_id)
    return ctype


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


# recall and edit (features/edits.py, and a sync's changes in features/sync.py)

def _where(m: dict) -> dict:
    """A 1:1 message's {toUserId}, or a group message's {groupId} (no toUserId)."""
    if "groupId" in m:
        return {"groupId": m["groupId"]}
    return {"toUserId": m["toUserId"]}


def recalled_frame(m: dict) -> str:
    return encode("message_recalled", {
        "msgId": m["msgId"], "fromUserId": m["fromUserId"], **_where(m),
        "seq": m["seq"], "recalledAt": m.get("recalledAt")})


def edited_frame(m: dict) -> str:
    return encode("message_edited", {
        "msgId": m["msgId"], "fromUserId": m["fromUserId"], **_where(m),
        "seq": m["seq"], "content": m["content"], "contentType": m["contentType"],
        "editedAt": m.get("editedAt")})


def change_frame(m: dict) -> str | None:
    """The frame that tells a device about a changed message (None: unchanged)."""
    if m.get("recalled"):
        return recalled_frame(m)
    if m.get("edited"):
        return edited_frame(m)
    return None


# what a stored message may say besides its ChatMessage (recall, edit, delete for me)
_MARKERS = ("recalled", "recalledAt", "edited", "editedAt", "deleted")


def synced_data(m: dict) -> dict:
    """A sync page's entry: the ChatMessage, its status, and its markers."""
    out = {**chat_data(m), "status": m.get("status")}
    for key in _MARKERS:
        if key in m:
            out[key] = m[key]
    return out


def encode_chat(m: dict) -> str:
    return encode("chat", chat_data(m))


def encode_ack(msg_id: str, status: str, timestamp: int, seq: int,
               duplicate: bool = False) -> str:
    data = {"msgId": msg_id, "status": status, "timestamp": timestamp, "seq": seq}
    if duplicate:
        data["duplicate"] = True
    return encode("ack", data)


def encode_error(code: ErrorCode, message: str, msg_id: str | None = None,
                 request_id: str | None = None) -> str:
    data = {"msgId": msg_id, "code": code, "message": message}   # orjson writes an enum's value
    if request_id is not None:            # extension: the sync frame's requestId
        data["requestId"] = request_id
    return encode("error", data)


PONG = encode("pong", None)
