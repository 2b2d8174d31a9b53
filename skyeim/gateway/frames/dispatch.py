"""The dispatcher: one connection's client frames, in the order they came.

For each text message: the per-connection rate limit, the JSON rules
(codec.decode), a lookup in the frame registry, the type's parser, then its
handler. A refused frame is answered with its ``error`` frame; the connection
stays open. Consecutive frames of a type with a batch handler (a client's
burst of chats, read in one pass) go to it in one call, in order; the frames
ahead of any other frame are handled first, so answers keep the order.
"""
from __future__ import annotations

import logging
from typing import Any, Protocol

from skyeim.gateway.frames.codec import FrameError, decode, encode_error
from skyeim.gateway.frames.registry import FrameRegistry, FrameType
from skyeim.protocol import ErrorCode, TokenBucket

log = logging.getLogger(__name__)

_BINARY = encode_error(ErrorCode.UNSUPPORTED_FRAME,
                       "binary frames are not supported; send JSON text")


class Client(Protocol):
    """What the dispatcher needs of a connection (transport.session.Session)."""

    user_id: int
    conn_id: int
    closing: bool
    stop_reading: bool
    rate: TokenBucket         # WebSocket.RateLimit

    def reply(self, item) -> bool: ...


class Dispatcher:
    def __init__(self, registry: FrameRegistry, frames_in: Any):
        """``frames_in``: the metric of client frames, by type (a labelled Counter)."""
        self.registry = registry
        registry.freeze()
        # each type with its counter, looked up once: one dict lookup per frame
        self._table = {name: (ft, frames_in.labels(name)) for name, ft in registry.types.items()}
        self._invalid = frames_in.labels("invalid")
        self._binary = frames_in.labels("binary")
        self._rate_limited = frames_in.labels("rate_limited")

    def handle_messages(self, session: Client, messages: list[str | bytes]) -> None:
        table = self._table
        batch: list = []                  # consecutive frames of batch_type
        batch_type: FrameType | None = None
        for message in messages:
            if session.closing or session.stop_reading:
                return                    # closing (4001/4002/4003...): the rest is not acted on
            error = None
            if not session.rate.take():
                error = self._refuse_over_rate(session, message)
            elif type(message) is not str:
                self._binary.inc()
                error = _BINARY
            else:
                try:
                    obj = decode(message)
                    entry = table.get(obj["type"])
                    if entry is None:
                        raise self.registry.unknown(obj["type"])
                    frame_type, counter = entry
                    frame = frame_type.parse(obj.get("data"), session.user_id)
                except FrameError as e:
                    self._invalid.inc()
                    log.debug("conn=%s user=%s error %s: %s", session.conn_id, session.user_id,
                              e.code, e.message)
                    error = e.encode()
                else:
                    counter.inc()
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug("conn=%s user=%s frame %s", session.conn_id, session.user_id,
                                  frame_type.name)
                    if frame_type.handle_batch is not None:
                        if batch and batch_type is not frame_type:
                            self._handle_batch(session, batch_type, batch)
                            batch = []
                        batch_type = frame_type
                        batch.append(frame)
                        continue
            if batch:
                self._handle_batch(session, batch_type, batch)
                batch = []
            if error is not None:
                session.reply(error)
            else:
                self._handle(session, frame_type, frame)
        if batch and not (session.closing or session.stop_reading):
            self._handle_batch(session, batch_type, batch)

    def _refuse_over_rate(self, session: Client, message: str | bytes) -> str:
        """The rate_limited error, echoing what the refused frame would have echoed."""
        self._rate_limited.inc()
        msg_id = request_id = None
        if isinstance(message, str):
            try:
                frame_type, frame = self.registry.parse(message, session.user_id)
                msg_id, request_id = frame_type.echo_ids(frame)
            except FrameError as e:
                msg_id, request_id = e.msg_id, e.request_id
        return encode_error(ErrorCode.RATE_LIMITED, "too many frames; slow down", msg_id,
                            request_id)

    def _handle(self, session: Client, frame_type: FrameType, frame) -> None:
        try:
            frame_type.handle(session, frame)
        except FrameError as e:
            log.debug("conn=%s user=%s error %s: %s", session.conn_id, session.user_id, e.code,
                      e.message)
            session.reply(e.encode())
        except Exception:
            log.exception("conn=%s user=%s frame handling failed", session.conn_id, session.user_id)
            session.reply(encode_error(ErrorCode.INTERNAL, "internal error",
                                       *frame_type.echo_ids(frame)))

    def _handle_batch(self, session: Client, frame_type: FrameType, frames: list) -> None:
        try:
            frame_type.handle_batch(session, frames)
        except Exception:                 # a batch handler answers each frame itself: a bug
            log.exception("conn=%s user=%s %s frames failed", session.conn_id, session.user_id,
                          frame_type.name)
            for frame in frames:
                session.reply(encode_error(ErrorCode.INTERNAL, "internal error",
                                           *frame_type.echo_ids(frame)))
