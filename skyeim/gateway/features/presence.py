"""Presence: a user's friends hear `online` when its first connection (in the
cluster) comes up and `offline` when its last one is gone (PROTOCOL.md
section 1). Listeners (features/base.py PresenceListener) hear the same
changes.

Offline notifications run in a bounded pool; a user's offline notification
still in flight makes its quick reconnect's `online` wait for it, so friends
see offline then online, never online twice.
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import gevent
from gevent.pool import Pool

from skyeim.gateway.backends.clients import BackendFailure, FriendService
from skyeim.gateway.features.base import PresenceListener
from skyeim.gateway.frames.codec import encode
from skyeim.gateway.frames.registry import FrameRegistry
from skyeim.gateway.routing.hub import Hub

log = logging.getLogger(__name__)

PRESENCE_CONCURRENCY = 64     # offline notifications (friend list fetches) at once


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Presence:
    def __init__(self, hub: Hub, friends: FriendService,
                 listeners: Sequence[PresenceListener] = ()):
        self.hub, self.friends = hub, friends
        self.listeners = tuple(listeners)
        self.pool = Pool(PRESENCE_CONCURRENCY)          # notifications in flight
        # user id -> its offline notification in flight (see the module's docstring)
        self._going_offline: dict[int, gevent.Greenlet] = {}

    def register(self, frames: FrameRegistry) -> None:
        frames.add_server_types("online", "offline")

    def friends_or_empty(self, user_id: int) -> list[int]:
        try:
            return self.friends.friends(user_id)
        except BackendFailure as e:
            log.warning("user=%s friend list unavailable, presence skipped: %s", user_id, e)
            return []

    def online_friends(self, user_id: int) -> list[int]:
        return self.hub.online_among(self.friends_or_empty(user_id))

    def announce_online(self, user_id: int, online_friends: list[int]) -> None:
        """The user's first connection in the cluster is up: its online friends hear it,
        after the user's offline notification still in flight, if any."""
        for listener in self.listeners:
            listener.user_online(user_id)
        if not online_friends:
            return
        pending = self._going_offline.get(user_id)
        if pending is not None:
            pending.join(timeout=self.friends.timeout + 1)   # offline first
        text = encode("online", {"userId": user_id, "timestamp": now_ms()})
        for fid in online_friends:
            self.hub.send_to_user(fid, text)

    def report_offline(self, user_id: int) -> None:
        """The user's last connection is gone: tell its friends (in the pool)."""
        # registered before it starts (the pool may make us wait), so that a quick
        # reconnect's `online` always finds it and goes after it
        g = gevent.Greenlet(self._notify, user_id, "offline")
        self._going_offline[user_id] = g
        self.pool.start(g)

    def users_gone(self, user_ids: list[int]) -> None:
        """Users of a cluster node that died are offline now."""
        for uid in user_ids:
            self.report_offline(uid)

    def users_back(self, user_ids: list[int]) -> None:
        """Users this node holds were given up by the cluster and are back."""
        for uid in user_ids:
            self.pool.spawn(self._notify, uid, "online")

    def _notify(self, user_id: int, kind: str) -> None:
        try:
            for listener in self.listeners:
                (listener.user_offline if kind == "offline" else listener.user_online)(user_id)
            text = encode(kind, {"userId": user_id, "timestamp": now_ms()})
            for fid in self.hub.online_among(self.friends_or_empty(user_id)):
                self.hub.send_to_user(fid, text)
        finally:
            if kind == "offline" and self._going_offline.get(user_id) is gevent.getcurrent():
                del self._going_offline[user_id]

    def join(self, timeout: float) -> None:
        """Wait (bounded) for the notifications in flight: a graceful stop."""
        self.pool.join(timeout=timeout)
