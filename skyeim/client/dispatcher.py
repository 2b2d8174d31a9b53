"""The dispatcher: hands each frame a Client yields to the callbacks registered
for it and to a bounded queue read by the iterator.

Callbacks run in the thread that dispatches (the Client's reader), outside
the dispatcher's lock, so a callback may register others or close the client.
The queue keeps at most ``max_queue`` frames; when full, the oldest is dropped
and counted in ``dropped``. Once the client has ended, the iterator yields what
is queued and then raises the error that ended it.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable

from .errors import NotConnected, SkyeIMError
from .frames import AnyFrame

log = logging.getLogger("skyeim.client")

POLL = 0.5           # s: the longest single wait in next(), so that Ctrl-C is seen promptly


class Dispatcher:
    def __init__(self, max_queue: int = 10000, name: str = "skyeim-client"):
        self.name = name
        self.dropped = 0
        self._cond = threading.Condition(threading.Lock())
        self._queue: collections.deque[AnyFrame] = collections.deque(maxlen=max(max_queue, 1))
        self._queueing = max_queue > 0
        self._handlers: dict[Any, list[Callable]] = {}
        self._started = False
        self._end: SkyeIMError | None = None

    # -- callbacks -------------------------------------------------------------------
    def on(self, key: Any, fn: Callable[[AnyFrame], Any]) -> None:
        """Call ``fn(frame)`` for frames whose ``type`` is ``key``, that are instances of
        ``key`` (a frame class), or for every frame (``"*"``)."""
        with self._cond:
            self._handlers.setdefault(key, []).append(fn)

    def off(self, key: Any, fn: Callable | None = None) -> None:
        """Remove one callback (or every callback of ``key``)."""
        with self._cond:
            if fn is None:
                self._handlers.pop(key, None)
            elif fn in self._handlers.get(key, []):
                self._handlers[key].remove(fn)

    def handlers_for(self, frame: AnyFrame) -> list[Callable]:
        with self._cond:
            return [fn for key, fns in self._handlers.items()
                    if key == "*" or key == frame.type or (isinstance(key, type)
                                                           and isinstance(frame, key))
                    for fn in fns]

    # -- frames in -------------------------------------------------------------------
    def dispatch(self, frame: AnyFrame) -> None:
        """Queue ``frame`` for the iterator, then call its callbacks (a callback's
        exception is logged and does not stop the others)."""
        if self._queueing:
            with self._cond:
                if len(self._queue) == self._queue.maxlen:
                    self.dropped += 1
                self._queue.append(frame)
                self._cond.notify_all()
        for fn in self.handlers_for(frame):
            try:
                fn(frame)
            except Exception:  # noqa: BLE001 - a callback's bug must not stop the reader
                log.exception("%s: callback %r failed on %s", self.name, fn, frame.type)

    def start(self) -> None:
        """The client is connecting: from now on ``next`` waits for frames."""
        with self._cond:
            self._started = True

    def end(self, error: SkyeIMError) -> None:
        """The client has ended with ``error``: ``next`` raises it once the queue is empty."""
        with self._cond:
            if self._end is None:
                self._end = error
            self._cond.notify_all()

    # -- frames out ------------------------------------------------------------------
    def next(self, timeout: float | None = None) -> AnyFrame:
        """The oldest queued frame. ``TimeoutError`` when none comes within ``timeout``;
        once the queue is empty, the error that ended the client."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if self._end is not None:
                    raise self._end
                if not self._started:
                    raise NotConnected("connect() first")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no frame within {timeout:g}s")
                self._cond.wait(POLL if remaining is None else min(remaining, POLL))
            return self._queue.popleft()
