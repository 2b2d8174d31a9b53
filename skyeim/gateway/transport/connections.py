"""Admission and counting of accepted sockets (``WebSocket.MaxConnections``).

Chat connections and echo connections count alike, from their accept until
they are gone. The object also knows the live chat sessions and echo sockets,
which a graceful stop and token revocation walk.
"""
from __future__ import annotations

from typing import Any


class Connections:
    def __init__(self, max_connections: int, gauge: Any, fds: Any = None):
        """``max_connections``: 0 = no limit; ``gauge``: the live-connections metric;
        ``fds``: a skyeim.fds.FdBudget (no room when descriptors run short), or None."""
        self.limit = max_connections
        self.fds = fds
        self.count = 0                  # accepted sockets not yet closed
        self.stopping = False           # a graceful stop began: nobody else gets in
        self.sessions: set = set()      # every live chat session, in the hub or not yet
        self.echo_sockets: set = set()  # WebSocket.EchoPath connections (a test aid)
        self._gauge = gauge

    def has_room(self) -> bool:
        if self.stopping or (self.limit and self.count >= self.limit):
            return False
        return self.fds is None or not self.fds.exhausted()

    def opened(self) -> None:
        self.count += 1
        self._gauge.inc()
        if self.fds is not None:
            self.fds.admitted()

    def closed(self) -> None:
        self.count -= 1
        self._gauge.dec()
