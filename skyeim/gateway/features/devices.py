"""Several devices per user (WebSocket.MultiLogin).

The contract's v1 keeps one connection per user (``kick``). The extensions
(docs/protocol.md "Several devices per user"):

- ``allow``: every connection of a user is live; a chat reaches all of them, a
  chat the user sends is copied to the user's other devices, a `read` is
  relayed to them. ``MaxDevicesPerUser`` bounds the live connections.
- ``one-per-platform``: like ``allow``, but a new login replaces (4001) the
  user's connection of the same ``platform`` (query parameter), on any node.

Which older connection a login replaces is the hub's (routing/hub.py replaces).
"""
from __future__ import annotations

from skyeim.config import WebSocketConfig
from skyeim.gateway.frames.codec import encode, encode_chat
from skyeim.gateway.routing.hub import Hub
from skyeim.gateway.transport.session import Session


def own_read(peer_id: int, msg_ids: list[str], timestamp: int) -> str:
    """The `read` frame telling a user's other devices what the user read from ``peer_id``."""
    return encode("read", {"peerId": peer_id, "msgIds": msg_ids, "timestamp": timestamp,
                           "own": True})


class Devices:
    def __init__(self, ws_cfg: WebSocketConfig, hub: Hub):
        self.hub = hub
        self.mode = ws_cfg.multi_login
        self.multi = self.mode != "kick"
        self.max_per_user = ws_cfg.max_devices_per_user

    def too_many(self, user_id: int) -> bool:
        """The handshake's device limit (MultiLogin allow): the user's live connections,
        on every node, have reached MaxDevicesPerUser."""
        if self.mode != "allow" or self.max_per_user == 0:
            return False
        return self.hub.device_count(user_id) >= self.max_per_user

    def copy_sent(self, session: Session, stored: list[dict]) -> None:
        """The chats ``session``'s user sent (a burst, in order) go to the user's other
        devices too: one hub call (in a cluster, two Redis round trips for all)."""
        if self.multi and stored:
            uid = session.user_id
            self.hub.send_to_users([(uid, encode_chat(s)) for s in stored], exclude=session)

    def sync_read(self, session: Session, peer_id: int, result: dict) -> None:
        if self.multi and result.get("msgIds"):
            self.hub.send_to_others(
                session.user_id, own_read(peer_id, result["msgIds"], result["readAt"]), session)
