"""Friendship changes made through the gateway reach both users' live
connections (PROTOCOL.md 9.5): ``friend_added {userId, username, online}`` (the
other user; ``username`` null when the Auth service is down) and
``friend_removed {userId}``, on every node (the hub's ``send_to_user``).

Presence follows by itself: the presence feature asks the Friend service for
the current list at each online/offline.
"""
from __future__ import annotations

import logging

from skyeim.gateway.backends.clients import AuthService, BackendFailure, FriendService
from skyeim.gateway.frames.codec import encode
from skyeim.gateway.frames.registry import FrameRegistry
from skyeim.gateway.routing.hub import Hub

log = logging.getLogger(__name__)


class Friendships:
    def __init__(self, *, friends: FriendService, auth: AuthService, hub: Hub):
        self.friends, self.auth, self.hub = friends, auth, hub

    def register(self, frames: FrameRegistry) -> None:
        frames.add_server_types("friend_added", "friend_removed")

    def add(self, user_id: int, friend_id: int) -> None:
        """The Friend service's add, then ``friend_added`` to both users' connections."""
        self.friends.add(user_id, friend_id)
        self.announce_added(user_id, friend_id)

    def remove(self, user_id: int, friend_id: int) -> None:
        """The Friend service's remove, then ``friend_removed`` to both users' connections."""
        self.friends.remove(user_id, friend_id)
        self.announce_removed(user_id, friend_id)

    def announce_added(self, a: int, b: int) -> None:
        try:
            names = {u["userId"]: u.get("username") for u in self.auth.users_by_id([a, b])}
        except BackendFailure as e:
            log.warning("friend_added %s-%s without usernames: %s", a, b, e)
            names = {}
        online = set(self.hub.online_among([a, b]))
        for me, other in ((a, b), (b, a)):
            self.hub.send_to_user(me, encode("friend_added", {
                "userId": other, "username": names.get(other), "online": other in online}))

    def announce_removed(self, a: int, b: int) -> None:
        for me, other in ((a, b), (b, a)):
            self.hub.send_to_user(me, encode("friend_removed", {"userId": other}))
