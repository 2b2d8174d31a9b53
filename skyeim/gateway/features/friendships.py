"""Friendship changes reach live connections (PROTOCOL.md 9.5).

A friendship made or ended through the gateway (``/api/friends``; the server API
calls the same methods) is stored by the Friend service, then each of the two
users' live connections, on every node (``Hub.send_to_user``), gets
``friend_added {userId, username, online}`` about the other user, or
``friend_removed {userId}``. Presence follows by itself: `online`/`offline` go to
the friends the Friend service lists at that moment, so they start and stop with
the friendship, and ``online`` in ``friend_added`` is the other user's state now.

The frames follow every successful call, also an idempotent one (a friendship
that already existed, or was already gone): a client treats them as "is a friend
now" / "is no friend now".
"""
from __future__ import annotations

import logging
from typing import Sequence

import gevent

from skyeim.gateway.backends.clients import AuthService, BackendFailure, FriendService
from skyeim.gateway.features.base import FriendshipListener
from skyeim.gateway.frames.codec import encode
from skyeim.gateway.frames.registry import FrameRegistry
from skyeim.gateway.routing.hub import Hub

log = logging.getLogger(__name__)

# s the usernames may take; then friend_added goes with username null (the 2 s of 9.5)
NAME_WAIT = 1.0


class Friendships:
    def __init__(self, *, friends: FriendService, auth: AuthService, hub: Hub,
                 listeners: Sequence[FriendshipListener] = ()):
        self.friends, self.auth, self.hub = friends, auth, hub
        self.listeners = tuple(listeners)

    def register(self, frames: FrameRegistry) -> None:
        frames.add_server_types("friend_added", "friend_removed")

    def add(self, user_id: int, friend_id: int) -> None:
        """Befriend the two (Friend service; raises its BackendFailure), then tell them."""
        self.friends.add(user_id, friend_id)
        self.announce_added(user_id, friend_id)
        self._tell_listeners(user_id, friend_id, True)

    def remove(self, user_id: int, friend_id: int) -> None:
        """End the friendship (Friend service; raises its BackendFailure), then tell them."""
        self.friends.remove(user_id, friend_id)
        self.announce_removed(user_id, friend_id)
        self._tell_listeners(user_id, friend_id, False)

    def _tell_listeners(self, user_id: int, friend_id: int, added: bool) -> None:
        for listener in self.listeners:
            try:
                listener.friendship_changed(user_id, friend_id, added)
            except Exception:       # a listener's bug must not fail the caller's request
                log.exception("friendship listener %r failed", listener)

    def announce_added(self, a: int, b: int, names: dict[int, str] | None = None) -> None:
        """``friend_added`` to both users' connections; ``names``: usernames already known."""
        names = dict(names or {})
        missing = [u for u in (a, b) if u not in names]
        if missing:
            names.update(self._usernames(missing))
        online = set(self.hub.online_among([a, b]))
        for me, other in ((a, b), (b, a)):
            self.hub.send_to_user(me, encode("friend_added", {
                "userId": other, "username": names.get(other), "online": other in online}))

    def announce_removed(self, a: int, b: int) -> None:
        for me, other in ((a, b), (b, a)):
            self.hub.send_to_user(me, encode("friend_removed", {"userId": other}))

    def _usernames(self, ids: list[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        try:
            with gevent.Timeout(NAME_WAIT):
                for u in self.auth.users_by_id(ids):
                    if isinstance(u, dict) and isinstance(u.get("username"), str):
                        found[u.get("userId")] = u["username"]
        except (gevent.Timeout, *BackendFailure) as e:
            log.warning("friend_added without usernames of %s: %s", ids,
                        "the auth service is slow" if isinstance(e, gevent.Timeout) else e)
        return found
