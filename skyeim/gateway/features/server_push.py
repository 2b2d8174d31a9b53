"""What the team's backend does to live connections through the server API
(PROTOCOL.md 9.2): transient ``notice`` frames to listed users or to everyone,
and closing a user's connections with 4003. In a cluster both reach every
node: a user's frames through the hub (``send_to_user``), the notice to
everyone and the disconnect as a broadcast (routing/messages.py ``Everyone``,
``Disconnect``) that each node carries out for its own connections
(``from_other_node``).

Input is checked by the caller (gateway/rest/server_api.py); a notice is never
stored and never acked.
"""
from __future__ import annotations

import logging
import time

import gevent

from skyeim.gateway.frames.codec import encode
from skyeim.gateway.frames.registry import FrameRegistry
from skyeim.gateway.routing.hub import Hub
from skyeim.gateway.routing.messages import Disconnect, Everyone
from skyeim.protocol import CloseCode

log = logging.getLogger(__name__)

DISCONNECT_REASON = "disconnected by the server"


def encode_notice(event: str, data) -> str:
    return encode("notice", {"event": event, "data": data,
                             "timestamp": time.time_ns() // 1_000_000})


class ServerPush:
    def __init__(self, hub: Hub):
        self.hub = hub

    def register(self, frames: FrameRegistry) -> None:
        frames.add_server_types("notice")

    def notice_to_users(self, user_ids: list[int], event: str, data) -> int:
        """``notice`` to every live connection of ``user_ids`` (every node); how many
        connections it was queued to (in a cluster, those of other nodes as Redis counts
        them)."""
        text = encode_notice(event, data)
        total = 0
        for uid in user_ids:
            took = self.hub.send_to_user(uid, text)
            if took and self.hub.clustered:    # other nodes answer a publish, not a count
                took = max(took, self.hub.device_count(uid))
            total += took
        return total

    def notice_to_everyone(self, event: str, data) -> int:
        """``notice`` to every live connection of the cluster; how many (other nodes'
        as of their last heartbeat)."""
        text = encode_notice(event, data)
        here = self.hub.send_to_everyone_here(text)
        if not self.hub.clustered:
            return here
        self.hub.broadcast(Everyone(text))
        return here + max(0, self.hub.connection_count() - self.hub.local_connections())

    def disconnect(self, user_id: int) -> int:
        """Close every connection of ``user_id`` on every node with 4003; how many there were."""
        count = self.hub.device_count(user_id)
        self.hub.broadcast(Disconnect(user_id))
        self._close_here(user_id)
        return count

    def from_other_node(self, msg: Everyone | Disconnect) -> None:
        """What another node's server API asked of every node (routing/messages.py)."""
        if isinstance(msg, Everyone):
            self.hub.send_to_everyone_here(msg.text)
        else:
            self._close_here(msg.user_id)

    def _close_here(self, user_id: int) -> None:
        for session in self.hub.sessions_here(user_id):
            log.info("conn=%s user=%s disconnected by the server API: closing 4003",
                     getattr(session, "conn_id", "?"), user_id)
            gevent.spawn(session.close, CloseCode.TOKEN_EXPIRED, DISCONNECT_REASON)
