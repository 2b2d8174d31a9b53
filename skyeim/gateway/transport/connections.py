"""Admission and counting of accepted sockets (``WebSocket.MaxConnections``).

Chat connections and echo connections count alike, from their accept until
they are gone. The object also knows the live chat sessions and echo sockets,
which a graceful stop and token revocation walk.
"""
from __future__ import annotations

from typing import Any


class Connections:
    def __init__(self, max_connections: int, gauge: Any):
        """``max_connections``: 0 = no limit; ``gauge``: the live-connections metric."""
        self.limit = max_connections
        self.count = 0                  # accepted sockets not yet closed
        self.stopping = False           # a graceful stop began: nobody else gets in
        self.sessions: set = set()      # every live chat session, in the hub or not yet
        self.echo_sockets: set = set()  # WebSocket.EchoPath connections (a test aid)
        self._gauge = gauge

    def has_room(self) -> bool:
        return not self.stopping and (self.limit == 0 or self.count < self.limit)

    def opened(self) -> None:
        self.count += 1
        self._gauge.inc()

    def closed(self) -> None:
        self.count -= 1
        self._gauge.dec()
