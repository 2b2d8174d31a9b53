"""The Hub: which users are online here, and their live sessions.

A dict from user id to that user's sessions, guarded by one lock (the design
card's "lock-guarded hub dict"). Nothing inside the lock blocks or yields.
Frames are handed to a session's bounded send queue, never written here.

Alone, a Hub is the whole gateway; routing/cluster.py's ClusterHub has the same
interface over Redis, so nothing above knows whether it runs in a cluster:
``send_to_user`` reaches a user's connections on every node, ``broadcast``
tells every other node something (routing/messages.py).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Iterable, Protocol

from skyeim.gateway.routing.messages import Broadcast


class Sink(Protocol):
    user_id: int
    gen: int
    platform: str

    def send(self, item, wait: float = 0.0) -> bool: ...


def replaces(mode: str, old: Sink, new: Sink) -> bool:
    """Whether the login ``new`` closes the user's older connection ``old`` (4001), by
    WebSocket.MultiLogin (docs/protocol.md "Several devices per user")."""
    if mode == "kick":
        return True
    if mode == "one-per-platform":
        return old.platform == new.platform
    return False            # allow


MEMO_MAX = 100_000        # entries a lone gateway remembers (remember/recall); oldest go first


class Hub:
    def __init__(self) -> None:
        self._lock = threading.Lock()   # a gevent lock once monkey-patched
        self._sessions: dict[int, list[Sink]] = {}
        self._memo: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def register(self, session: Sink, mode: str = "kick") -> tuple[bool, list[Sink]]:
        """Add ``session``; returns (first connection of its user, sessions it replaced).

        The older sessions that ``mode`` (WebSocket.MultiLogin) replaces leave the
        hub at once: they get no more frames, and their later ``unregister``
        says nothing, so friends never see the user go offline.
        """
        with self._lock:
            older = self._sessions.get(session.user_id, [])
            first = not older
            replaced = [s for s in older if replaces(mode, s, session)]
            self._sessions[session.user_id] = [s for s in older if s not in replaced] + [session]
            return first, replaced

    def unregister(self, session: Sink) -> bool:
        """Remove ``session``; True when it was its user's last one (the user went offline)."""
        return self._remove(session) == 0

    def _remove(self, session: Sink) -> int | None:
        """Remove ``session``: its user's sessions left here, or None if it was not registered."""
        with self._lock:
            sessions = self._sessions.get(session.user_id)
            if not sessions or session not in sessions:
                return None
            rest = [s for s in sessions if s is not session]
            if rest:
                self._sessions[session.user_id] = rest
            else:
                del self._sessions[session.user_id]
            return len(rest)

    def take_older(self, user_id: int, gen: int, platform: str | None = None) -> list[Sink]:
        """Remove and return the sessions of ``user_id`` whose login ``gen`` is lower
        (silently: no offline), only those of ``platform`` if given; a newer one stays."""
        with self._lock:
            sessions = self._sessions.get(user_id, [])
            older = [s for s in sessions
                     if s.gen < gen and (platform is None or s.platform == platform)]
            rest = [s for s in sessions if s not in older]
            if rest:
                self._sessions[user_id] = rest
            else:
                self._sessions.pop(user_id, None)
            return older

    def local_count(self, user_id: int) -> int:
        return len(self._sessions.get(user_id, ()))

    def send_to_user(self, user_id: int, item, wait: float = 0.0) -> int:
        """Queue ``item`` on every session of ``user_id``; returns how many took it.

        ``wait``: seconds a full queue may take to drain (see Session.send)."""
        with self._lock:
            sessions = self._sessions.get(user_id)
            sessions = list(sessions) if sessions else ()
        return sum(1 for s in sessions if s.send(item, wait))

    def send_to_users(self, items: list[tuple[int, Any]], wait: float = 0.0,
                      exclude: Sink | None = None) -> list[int]:
        """send_to_user for each ``(user_id, item)``, in order (send_to_others when
        ``exclude`` is given); how many took each. A ClusterHub routes the whole list
        to other nodes in two Redis round trips."""
        if exclude is not None:
            return [Hub.send_to_others(self, uid, item, exclude) for uid, item in items]
        return [Hub.send_to_user(self, uid, item, wait) for uid, item in items]

    def send_to_others(self, user_id: int, item, exclude: Sink) -> int:
        """Queue ``item`` on every session of ``user_id`` but ``exclude`` (the user's other
        devices); returns how many took it."""
        with self._lock:
            sessions = [s for s in self._sessions.get(user_id, ()) if s is not exclude]
        return sum(1 for s in sessions if s.send(item))

    def send_among(self, user_ids: "frozenset[int]", item, exclude: Sink | None = None) -> int:
        """Queue ``item`` (one str, encoded once) on every local session of the users in
        ``user_ids`` but ``exclude``; walks the smaller of the group and the online users."""
        with self._lock:
            sessions = self._sessions
            users = (u for u in sessions if u in user_ids) if len(sessions) < len(user_ids) \
                else (u for u in user_ids if u in sessions)
            targets = [s for u in users for s in sessions[u] if s is not exclude]
        return sum(1 for s in targets if s.send(item))

    def send_to_everyone_here(self, item) -> int:
        """Queue ``item`` on every session in this process; how many took it."""
        with self._lock:
            targets = [s for sessions in self._sessions.values() for s in sessions]
        return sum(1 for s in targets if s.send(item))

    def sessions_here(self, user_id: int) -> list[Sink]:
        """``user_id``'s sessions in this process."""
        with self._lock:
            return list(self._sessions.get(user_id, ()))

    def local_connections(self) -> int:
        """Sessions in this process."""
        with self._lock:
            return sum(map(len, self._sessions.values()))

    def connection_count(self) -> int:
        """Live connections (on the whole cluster, in a cluster)."""
        return self.local_connections()

    def broadcast(self, message: Broadcast) -> None:
        """Tell every other node (a group frame to fan out, a changed member list);
        alone, there is nobody to tell."""

    def device_count(self, user_id: int) -> int:
        """Live connections of ``user_id`` (on every node, in a cluster)."""
        return self.local_count(user_id)

    def is_online(self, user_id: int) -> bool:
        return user_id in self._sessions

    def online_among(self, user_ids: Iterable[int]) -> list[int]:
        return [u for u in user_ids if u in self._sessions]

    def online_count(self) -> int:
        return len(self._sessions)

    def local_users(self) -> int:
        """Users with a session in this process (the whole gateway, when alone)."""
        return len(self._sessions)

    # -- a small memory shared by the whole gateway (the cluster's, in a cluster) ----------

    def remember(self, key: str, value: str, ttl: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` s (bounded: the oldest go first)."""
        with self._lock:
            self._memo[key] = (time.monotonic() + ttl, value)
            self._memo.move_to_end(key)
            while len(self._memo) > MEMO_MAX:
                self._memo.popitem(last=False)

    def recall(self, key: str) -> str | None:
        with self._lock:
            got = self._memo.get(key)
            if got is None:
                return None
            if got[0] < time.monotonic():
                del self._memo[key]
                return None
            return got[1]

    # A lone gateway has nothing to start, stop or lose.
    clustered = False

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def healthy(self) -> bool:
        return True
