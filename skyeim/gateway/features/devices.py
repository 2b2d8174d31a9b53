"""Several devices per user (WebSocket.MultiLogin) and ephemeral `typing` signals.

The contract's v1 keeps one connection per user (``kick``). The extensions
(docs/protocol.md "Several devices per user"):

- ``allow``: every connection of a user is live; a chat reaches all of them, a
  chat the user sends is copied to the user's other devices, a `read` is
  relayed to them. ``MaxDevicesPerUser`` bounds the live connections.
- ``one-per-platform``: like ``allow``, but a new login replaces (4001) the
  user's connection of the same ``platform`` (query parameter), on any node.

Typing frames are relayed, never stored, under a separate per-connection rate.
"""
from __future__ import annotations

import time

from skyeim.gateway.frames import codec as frames

PLATFORMS = frozenset({"web", "ios", "android", "desktop"})
UNKNOWN_PLATFORM = "unknown"      # a client that names none (every v1 client)
TYPING_STATES = ("typing", "paused")


def parse_platform(value: str | None) -> str | None:
    """The `platform` query parameter: a platform, "unknown" when absent, None when invalid."""
    if value is None or value == "":
        return UNKNOWN_PLATFORM
    return value if value in PLATFORMS else None


def replaces(mode: str, old, new) -> bool:
    """Whether the login ``new`` closes the user's older connection ``old`` (4001)."""
    if mode == "kick":
        return True
    if mode == "one-per-platform":
        return old.platform == new.platform
    return False            # allow


class TypingBucket:
    """A token bucket for one connection's `typing` frames (WebSocket.TypingRate)."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.at = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def parse_typing(data, sender_id: int) -> "frames.Typing":
    if not isinstance(data, dict):
        raise frames.FrameError("bad_request", "typing needs a data object")
    to, group = data.get("toUserId"), data.get("groupId")
    if group is not None:
        if to is not None or not frames.is_user_id(group):
            raise frames.FrameError("bad_request",
                                    "typing needs either toUserId or groupId (a positive integer)")
    elif not frames.is_user_id(to) or to == sender_id:
        raise frames.FrameError("bad_request", "toUserId must be the user id of another user")
    state = data.get("state")
    if state is None:
        state = "typing"
    if state not in TYPING_STATES:
        raise frames.FrameError("bad_request", 'state must be "typing" or "paused"')
    return frames.Typing(to, state, group)


def own_read(peer_id: int, msg_ids: list[str], timestamp: int) -> str:
    """The `read` frame telling a user's other devices what the user read from ``peer_id``."""
    return frames.encode("read", {"peerId": peer_id, "msgIds": msg_ids, "timestamp": timestamp,
                                  "own": True})


class Devices:
    """The gateway's multi-device and typing flows (called from Gateway)."""

    def __init__(self, gateway):
        self.gateway = gateway
        ws_cfg = gateway.cfg.web_socket
        self.mode = ws_cfg.multi_login
        self.multi = self.mode != "kick"

    def too_many(self, user_id: int) -> bool:
        """The handshake's device limit (MultiLogin allow): the user's live connections,
        on every node, have reached MaxDevicesPerUser."""
        limit = self.gateway.cfg.web_socket.max_devices_per_user
        if self.mode != "allow" or limit == 0:
            return False
        return self.gateway.hub.device_count(user_id) >= limit

    def copy_sent(self, session, stored: dict) -> None:
        """A chat ``session``'s user sent goes to the user's other devices too."""
        if self.multi:
            self.gateway.hub.send_to_others(session.user_id, frames.encode_chat(stored), session)

    def sync_read(self, session, peer_id: int, result: dict) -> None:
        if self.multi and result.get("msgIds"):
            self.gateway.hub.send_to_others(
                session.user_id, own_read(peer_id, result["msgIds"], result["readAt"]), session)

    def relay_typing(self, session, typing: "frames.Typing") -> None:
        """Relay to every device of the peer, if online; never stored, never acked."""
        gateway = self.gateway
        if not session.typing.take():
            gateway.metrics.frame_in("typing_dropped")
            return                                  # ephemeral: over the rate it is just dropped
        if typing.group_id is not None:             # to the group's other online members
            gateway.groups.relay_typing(session, typing.group_id, typing.state)
            return
        if gateway.cfg.chat.require_friendship:
            try:
                friends = gateway.backends.friend.friends(session.user_id)
            except Exception:                       # best effort: no signal rather than an error
                return
            if typing.to_user_id not in friends:
                raise frames.FrameError("not_friends", "you can only signal friends")
        gateway.hub.send_to_user(typing.to_user_id, frames.encode("typing", {
            "fromUserId": session.user_id, "state": typing.state,
            "timestamp": time.time_ns() // 1_000_000}))
