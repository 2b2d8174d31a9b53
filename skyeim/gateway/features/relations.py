"""Friend requests and blocking (docs/protocol.md "Friend requests and blocking").

With ``Friends.RequireAcceptance`` a befriending is a request: the other side
hears ``friend_request {fromUserId, username, createdAt}`` live (every node)
and, at each connect, ``friend_requests {requests}`` after ``connected`` while
any are pending; accepting is befriending (Friendships.add: ``friend_added`` to
both), and the requester hears ``friend_request_answered {userId, accepted}``.
A request to someone who requested you first is an accept.

A block (either way) keeps two users apart: blocking unfriends them
(Friendships.remove), their requests go, neither can befriend or request the
other, a chat between them is refused ``not_friends`` (the block is not
revealed), typing is dropped, and presence never passes (it only goes to
friends). The chat hot path asks ``blocked_peers``: one batched Friend service
call per burst for the pairs not cached (an LRU of ``Friends.BlockCacheSize``
pairs, trusted ``Friends.BlockCacheTtlMs``; a block made through this gateway
updates it at once, one made on another node is seen within the TTL).

A Friend service without these optional endpoints (PROTOCOL.md 9.1): the REST
calls answer 501 ``not_supported``, and nobody is blocked.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict

from skyeim.config import FriendsConfig
from skyeim.gateway.backends.clients import (AuthService, BackendFailure, BackendRejected,
                                             FriendService)
from skyeim.gateway.features.base import FriendshipChanges
from skyeim.gateway.frames.codec import encode
from skyeim.gateway.frames.registry import FrameRegistry
from skyeim.gateway.routing.hub import Hub
from skyeim.gateway.transport.session import Session

log = logging.getLogger(__name__)

class Unsupported(Exception):
    """The Friend service has no friend requests / blocks (PROTOCOL.md 9.1)."""


class RelationError(Exception):
    """A refusal for the caller: (HTTP status, message)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _absent(e: BackendRejected) -> bool:
    """The service answered as one without the route (404 / 405 of an unknown path)."""
    return e.status in (404, 405)


class Relations:
    def __init__(self, *, cfg: FriendsConfig, friends: FriendService, auth: AuthService, hub: Hub,
                 friendships: FriendshipChanges):
        self.friends, self.auth, self.hub, self.friendships = friends, auth, hub, friendships
        self.require_acceptance = cfg.require_acceptance
        self.cache_size = cfg.block_cache_size
        self.cache_ttl = cfg.block_cache_ttl_ms / 1000.0
        # (low, high) user ids -> (blocked, trusted until, monotonic)
        self._cache: OrderedDict[tuple[int, int], tuple[bool, float]] = OrderedDict()
        self._check_failures = 0

    def register(self, frames: FrameRegistry) -> None:
        frames.add_server_types("friend_request", "friend_request_answered", "friend_requests")

    # -- calls to the service ------------------------------------------------------------

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except BackendRejected as e:
            if _absent(e):
                raise Unsupported("the Friend service does not support friend requests "
                                  "and blocks") from None
            raise

    def _names(self, ids: list[int]) -> dict[int, str | None]:
        try:
            return {u["userId"]: u.get("username") for u in self.auth.users_by_id(ids)}
        except BackendFailure as e:
            log.warning("usernames unavailable: %s", e)
            return {}

    # -- requests --------------------------------------------------------------------------

    def befriend(self, user_id: int, target: int) -> dict:
        """POST /api/friends: befriend at once, or (RequireAcceptance) request."""
        if not self.require_acceptance:
            try:
                self.friendships.add(user_id, target)
            except BackendRejected as e:
                if e.status != 409:
                    raise
                if any(b["userId"] == target for b in self._call(self.friends.blocks, user_id)):
                    raise RelationError(409, "you blocked this user: unblock them first") from None
                return {"ok": True}       # they blocked the caller: nothing happens, unrevealed
            return {"ok": True}
        answer = self._call(self.friends.request, user_id, target)
        status = answer.get("status")
        if status == "blocking":
            raise RelationError(409, "you blocked this user: unblock them first")
        if status == "blocked":           # dropped silently: the caller sees a pending request
            return {"ok": True, "status": "requested"}
        if status == "friends":
            return {"ok": True, "status": "friends"}
        if status == "mutual":            # they asked first: this is the accept
            self._accept(user_id, target)
            return {"ok": True, "status": "friends"}
        if answer.get("new"):
            name = self._names([user_id]).get(user_id)
            self.hub.send_to_user(target, encode("friend_request", {
                "fromUserId": user_id, "username": name, "createdAt": answer.get("createdAt")}))
        return {"ok": True, "status": "requested"}

    def accept(self, user_id: int, from_id: int) -> None:
        if not self._call(self.friends.request_pending, from_id, user_id):
            raise RelationError(404, "no pending friend request from this user")
        self._accept(user_id, from_id)

    def _accept(self, user_id: int, from_id: int) -> None:
        self.friendships.add(user_id, from_id)         # clears the requests between them
        self.hub.send_to_user(from_id, encode("friend_request_answered",
                                              {"userId": user_id, "accepted": True}))

    def decline(self, user_id: int, from_id: int) -> None:
        if not self._call(self.friends.decline, user_id, from_id):
            raise RelationError(404, "no pending friend request from this user")
        self.hub.send_to_user(from_id, encode("friend_request_answered",
                                              {"userId": user_id, "accepted": False}))

    def requests(self, user_id: int) -> dict:
        """{incoming: [{userId, username, createdAt}], outgoing: [...]}."""
        found = self._call(self.friends.requests, user_id)
        incoming, outgoing = found.get("incoming", []), found.get("outgoing", [])
        names = self._names(list({r["userId"] for r in incoming + outgoing}))
        return {side: [{"userId": r["userId"], "username": names.get(r["userId"]),
                        "createdAt": r["createdAt"]} for r in rows]
                for side, rows in (("incoming", incoming), ("outgoing", outgoing))}

    def after_connected(self, session: Session) -> None:
        """Pending incoming requests, after `connected`, when there are any."""
        if not self.require_acceptance:
            return
        try:
            incoming = self._call(self.friends.requests, session.user_id).get("incoming", [])
        except (Unsupported, *BackendFailure) as e:
            log.info("conn=%s user=%s pending friend requests not pushed: %s",
                     session.conn_id, session.user_id, e)
            return
        if not incoming:
            return
        names = self._names([r["userId"] for r in incoming])
        session.reply(encode("friend_requests", {"requests": [
            {"fromUserId": r["userId"], "username": names.get(r["userId"]),
             "createdAt": r["createdAt"]} for r in incoming]}))

    # -- blocks ----------------------------------------------------------------------------

    def block(self, user_id: int, target: int) -> None:
        answer = self._call(self.friends.block, user_id, target)
        self._remember(user_id, target, True)
        if answer.get("wereFriends"):
            self.friendships.remove(user_id, target)    # friend_removed to both

    def unblock(self, user_id: int, target: int) -> None:
        self._call(self.friends.unblock, user_id, target)
        self._cache.pop(_pair(user_id, target), None)   # the other side may block too: ask

    def blocks(self, user_id: int) -> list[dict]:
        found = self._call(self.friends.blocks, user_id)
        names = self._names([b["userId"] for b in found])
        return [{"userId": b["userId"], "username": names.get(b["userId"]),
                 "createdAt": b["createdAt"]} for b in found]

    def blocked_peers(self, user_id: int, peers: set[int]) -> set[int]:
        """Which of ``peers`` stand in a block with ``user_id`` (either way): the cache,
        then one service call for the rest. Raises BackendUnavailable/Rejected."""
        now = time.monotonic()
        blocked, unknown = set(), []
        for peer in peers:
            hit = self._cache.get(_pair(user_id, peer))
            if hit is not None and hit[1] > now:
                if hit[0]:
                    blocked.add(peer)
            else:
                unknown.append(peer)
        if not unknown:
            return blocked
        try:
            found = self.friends.blocked_pairs([(user_id, p) for p in unknown])
        except BackendFailure as e:
            # The Friend service is down: chats go on as they always have without it
            # (PROTOCOL.md: only presence and RequireFriendship need it), checked against
            # the last answers known, stale or not; a pair never checked passes.
            self._check_failures += 1
            if self._check_failures % 100 == 1:
                log.warning("block check unavailable (%s): using the last known blocks "
                            "(%d times so far)", e, self._check_failures)
            return blocked | {p for p in unknown if (self._cache.get(_pair(user_id, p)) or (False,))[0]}
        if found is None:               # a Friend service without blocks (9.1)
            return blocked
        for peer, is_blocked in zip(unknown, found):
            self._remember(user_id, peer, is_blocked)
            if is_blocked:
                blocked.add(peer)
        return blocked

    def _remember(self, a: int, b: int, blocked: bool) -> None:
        if self.cache_ttl <= 0:
            return
        key = _pair(a, b)
        self._cache[key] = (blocked, time.monotonic() + self.cache_ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


def _pair(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)
