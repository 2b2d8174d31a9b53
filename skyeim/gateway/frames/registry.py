"""The one table of client frame types.

Each feature module registers the frame types it handles: the ``type``
string, a parser for ``data``, the handler, and which id an error about such a
frame echoes. The dispatcher (dispatch.py) looks a frame's type up here and
knows nothing else about it; adding a frame type touches only the module that
registers it. Server frame types are declared too, so that a client sending
one hears "sent by the server only".
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from skyeim.gateway.frames.codec import FrameError, decode
from skyeim.protocol import ErrorCode


class Echo(enum.Enum):
    """What an ``error`` about a frame carries besides its code (PROTOCOL.md section 4)."""

    NOTHING = "nothing"         # msgId null
    MSG_ID = "msgId"            # the client's valid msgId (frame.given_msg_id), else null
    REQUEST_ID = "requestId"    # the frame's requestId (frame.request_id), an extension


@dataclass(frozen=True, slots=True)
class FrameType:
    """A client frame type: ``parse(data, sender_id)`` returns the frame or raises
    FrameError; ``handle(session, frame)`` acts on one; or ``handle_batch(session,
    frames)`` acts on consecutive frames of this type read in one pass (chats are
    stored in one call)."""

    name: str
    parse: Callable[[Any, int], Any]
    handle: Callable[[Any, Any], None] | None = None
    handle_batch: Callable[[Any, list], None] | None = None
    echoes: Echo = Echo.NOTHING

    def __post_init__(self) -> None:
        if (self.handle is None) == (self.handle_batch is None):
            raise ValueError(f"frame type {self.name!r}: give handle or handle_batch")

    def echo_ids(self, frame) -> tuple[str | None, str | None]:
        """(msgId, requestId) for an error about ``frame``."""
        if self.echoes is Echo.MSG_ID:
            return frame.given_msg_id, None
        if self.echoes is Echo.REQUEST_ID:
            return None, frame.request_id
        return None, None


class FrameRegistry:
    def __init__(self) -> None:
        self.types: dict[str, FrameType] = {}
        self.server_types: set[str] = {"error"}      # the dispatcher's own answer
        self.frozen = False

    def add(self, frame_type: FrameType) -> None:
        self._check_open(frame_type.name)
        if frame_type.name in self.types:
            raise ValueError(f"frame type {frame_type.name!r} is registered twice")
        self.types[frame_type.name] = frame_type

    def add_server_types(self, *names: str) -> None:
        """Types only the server sends (a client sending one is answered unknown_type)."""
        for name in names:
            self._check_open(name)
        self.server_types.update(names)

    def freeze(self) -> None:
        """No more types: the dispatcher has taken its copy of the table."""
        self.frozen = True

    def _check_open(self, name: str) -> None:
        if self.frozen:
            raise RuntimeError(f"frame type {name!r} registered after the dispatcher was built")

    def __iter__(self) -> Iterator[FrameType]:
        return iter(self.types.values())

    def unknown(self, kind: str) -> FrameError:
        """The error for a type no client may send."""
        if kind in self.server_types:
            return FrameError(ErrorCode.UNKNOWN_TYPE, f"{kind!r} is sent by the server only")
        return FrameError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind[:64]!r}")

    def lookup(self, kind: str) -> FrameType:
        frame_type = self.types.get(kind)
        if frame_type is None:
            raise self.unknown(kind)
        return frame_type

    def parse(self, text: str, sender_id: int) -> tuple[FrameType, Any]:
        """The type and the parsed frame of a text message; else FrameError."""
        obj = decode(text)
        frame_type = self.lookup(obj["type"])
        return frame_type, frame_type.parse(obj.get("data"), sender_id)
