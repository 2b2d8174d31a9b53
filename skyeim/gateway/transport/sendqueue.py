"""SendQueue: a connection's bounded queue of outgoing frames (Session.queue).

gevent's Queue keeps three deques (items, waiting getters, waiting putters):
about 3.7 KB for each idle connection. Here the items are a list, the one
reader (the connection's write pump) waits on an Event, and an Event for
producers waiting for room exists only once one had to wait
(docs/performance.md, idle memory round 3). It raises gevent's own Full and
Empty, as gevent's Queue does.
"""
from __future__ import annotations

import time

from gevent.event import Event
from gevent.queue import Empty, Full

__all__ = ["SendQueue", "Empty", "Full"]


class SendQueue:
    """FIFO of at most ``maxsize`` items; one consumer, any number of producers."""

    __slots__ = ("maxsize", "items", "ready", "room")

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.items: list = []
        self.ready = Event()              # set while items is not empty
        self.room: Event | None = None    # set when an item was taken (producers that wait)

    def qsize(self) -> int:
        return len(self.items)

    def put_nowait(self, item) -> None:
        if len(self.items) >= self.maxsize:
            raise Full
        self.items.append(item)
        self.ready.set()

    def put(self, item, timeout: float) -> None:
        """Append, waiting up to ``timeout`` s for room; raises Full after that."""
        if len(self.items) >= self.maxsize:
            deadline = time.monotonic() + timeout
            while len(self.items) >= self.maxsize:   # bounded: the deadline
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Full
                if self.room is None:
                    self.room = Event()
                self.room.clear()
                self.room.wait(left)
        self.put_nowait(item)

    def get_nowait(self):
        items = self.items
        if not items:
            raise Empty
        item = items.pop(0)
        if not items:
            self.ready.clear()
        if self.room is not None:
            self.room.set()
        return item

    def get(self, timeout: float):
        """The first item, waiting up to ``timeout`` s for one; raises Empty after that."""
        if not self.items:
            self.ready.wait(timeout)
        return self.get_nowait()
