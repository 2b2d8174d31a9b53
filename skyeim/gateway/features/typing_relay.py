"""Ephemeral `typing` signals (docs/protocol.md "Several devices per user, and
typing"): {toUserId | groupId, state}, relayed to every live connection of the
peer (or of the group's other members), never stored, never acked, under a
per-connection rate of their own (WebSocket.TypingRate): over it, a signal is
just dropped."""
from __future__ import annotations

import time
from dataclasses import dataclass

from skyeim.gateway.backends.clients import FriendService
from skyeim.gateway.features.base import BlockCheck, GroupTyping
from skyeim.gateway.frames.codec import FrameError, bad_request, data_object, encode
from skyeim.gateway.frames.registry import FrameRegistry, FrameType
from skyeim.gateway.routing.hub import Hub
from skyeim.gateway.transport.session import Session
from skyeim.metrics import GatewayMetrics
from skyeim.protocol import ErrorCode, is_positive_id, is_user_id

TYPING_STATES = ("typing", "paused")


@dataclass(frozen=True, slots=True)
class Typing:
    kind = "typing"
    to_user_id: int | None        # a peer, or
    state: str
    group_id: int | None = None   # a group (exactly one of the two)


def parse_typing(data, sender_id: int) -> Typing:
    data = data_object(data, "typing")
    to, group = data.get("toUserId"), data.get("groupId")
    if group is not None:
        if to is not None or not is_positive_id(group):
            raise bad_request("typing needs either toUserId or groupId (a positive integer)")
    elif not is_user_id(to) or to == sender_id:
        raise bad_request("toUserId must be the user id of another user")
    state = data.get("state")
    if state is None:
        state = "typing"
    if state not in TYPING_STATES:
        raise bad_request('state must be "typing" or "paused"')
    return Typing(to, state, group)


class TypingRelay:
    def __init__(self, *, hub: Hub, friends: FriendService, groups: GroupTyping,
                 metrics: GatewayMetrics, require_friendship: bool,
                 blocks: BlockCheck | None = None):
        self.hub, self.friends, self.groups = hub, friends, groups
        self.blocks = blocks          # a block between the two drops the signal silently
        self.dropped = metrics.frames_in.labels("typing_dropped")
        self.require_friendship = require_friendship

    def register(self, frames: FrameRegistry) -> None:
        frames.add(FrameType("typing", parse_typing, handle=self.handle))

    def handle(self, session: Session, typing: Typing) -> None:
        """Relay to every device of the peer, if online; never stored, never acked."""
        if not session.typing.take():
            self.dropped.inc()
            return                                  # ephemeral: over the rate it is just dropped
        if typing.group_id is not None:             # to the group's other online members
            self.groups.relay_typing(session, typing.group_id, typing.state)
            return
        if self.require_friendship:
            try:
                friends = self.friends.friends(session.user_id)
            except Exception:                       # best effort: no signal rather than an error
                return
            if typing.to_user_id not in friends:
                raise FrameError(ErrorCode.NOT_FRIENDS, "you can only signal friends")
        if self.blocks is not None:
            try:
                if self.blocks.blocked_peers(session.user_id, {typing.to_user_id}):
                    self.dropped.inc()
                    return                          # dropped silently: the block is not revealed
            except Exception:                       # best effort, as above
                return
        self.hub.send_to_user(typing.to_user_id, encode("typing", {
            "fromUserId": session.user_id, "state": typing.state,
            "timestamp": time.time_ns() // 1_000_000}))
