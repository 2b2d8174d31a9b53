"""Presence: a user's friends hear `online` when its first connection (in the
cluster) comes up and `offline` when its last one is gone (PROTOCOL.md
section 1). Listeners (features/base.py PresenceListener) hear the same
changes.

Offline notifications run in a bounded pool; a user's offline notification
still in flight makes its quick reconnect's `online` wait for it, so friends
see offline then online, never online twice.

Repair: when the Friend service cannot give a user's friend list (it is down or
restarting), that user's `online` or `offline` cannot be told, and a user who
connects then gets no `onlineFriends`. Such users are remembered (at most
REPAIR_MAX_USERS) and, every REPAIR_INTERVAL seconds while any are owed, their
presence is told again from what the hub says now: each online friend gets the
user's current `online` or `offline`, and an online user gets `online` for each
of its online friends. So presence heals once the Friend service is back, at
the price of a repeated `online` to a friend that already knew it.
"""
from __future__ import annotations

import collections
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
REPAIR_INTERVAL = 2.0         # s between repair rounds while presence is owed
REPAIR_BATCH = 200            # users repaired per round (each a friend list fetch)
REPAIR_MAX_USERS = 100_000    # users remembered as owed; beyond, the oldest are forgotten


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
        # users whose presence could not be told (see the module's docstring), oldest first
        self._owed: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._repairer: gevent.Greenlet | None = None

    def register(self, frames: FrameRegistry) -> None:
        frames.add_server_types("online", "offline")

    def friends_or_empty(self, user_id: int) -> list[int]:
        """The user's friends; [] when the Friend service fails (the user's presence is
        then owed and repaired later)."""
        try:
            return self.friends.friends(user_id)
        except BackendFailure as e:
            log.warning("user=%s friend list unavailable, presence owed: %s", user_id, e)
            self._owe(user_id)
            return []

    # -- repair --------------------------------------------------------------------

    def _owe(self, user_id: int) -> None:
        self._owed[user_id] = None
        self._owed.move_to_end(user_id)
        while len(self._owed) > REPAIR_MAX_USERS:
            self._owed.popitem(last=False)
        if self._repairer is None or self._repairer.dead:
            self._repairer = gevent.spawn(self._repair_loop)

    def _repair_loop(self) -> None:
        """Repair rounds every REPAIR_INTERVAL s until nothing is owed."""
        while self._owed:
            gevent.sleep(REPAIR_INTERVAL)
            self.repair_round()
        self._repairer = None

    def repair_round(self) -> int:
        """Tell the presence of up to REPAIR_BATCH owed users as it is now; stops at the
        first friend list the Friend service still cannot give. Returns how many."""
        done = 0
        for user_id in list(self._owed)[:REPAIR_BATCH]:
            try:
                friends = self.friends.friends(user_id)
            except BackendFailure as e:
                log.info("presence repair waits for the Friend service (%d users owed): %s",
                         len(self._owed), e)
                break
            self._owed.pop(user_id, None)
            online = bool(self.hub.online_among([user_id]))
            now = now_ms()
            online_friends = self.hub.online_among(friends)
            text = encode("online" if online else "offline", {"userId": user_id, "timestamp": now})
            for fid in online_friends:
                self.hub.send_to_user(fid, text)
            if online:
                for fid in online_friends:
                    self.hub.send_to_user(user_id, encode("online", {"userId": fid, "timestamp": now}))
            done += 1
        if done:
            log.info("presence repaired for %d users (%d still owed)", done, len(self._owed))
        return done

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
