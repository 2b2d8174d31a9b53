"""Read receipts (PROTOCOL.md section 3): `read` {peerId, msgIds?} marks the
peer's messages to the reader as read; the peer's connections get `read`
{peerId, msgIds, timestamp} with the ids newly marked, and the reader's other
devices hear it too (features/devices.py)."""
from __future__ import annotations

from dataclasses import dataclass

from skyeim.gateway.backends.clients import BackendFailure, MessageService
from skyeim.gateway.features.base import OwnDevices, backend_error
from skyeim.gateway.frames.codec import bad_request, data_object, encode
from skyeim.gateway.frames.registry import FrameRegistry, FrameType
from skyeim.gateway.routing.hub import Hub
from skyeim.gateway.transport.session import Session
from skyeim.protocol import is_msg_id, is_user_id

MAX_READ_IDS = 1000               # msgIds in one read receipt


@dataclass(frozen=True, slots=True)
class Read:
    kind = "read"
    peer_id: int
    msg_ids: tuple[str, ...]      # empty = every unread message from peer_id


def parse_read(data, sender_id: int) -> Read:
    data = data_object(data, "read")
    peer = data.get("peerId")
    if not is_user_id(peer) or peer == sender_id:
        raise bad_request("peerId must be the user id of the other user")
    ids = data.get("msgIds")
    if ids is None:
        ids = []
    if not isinstance(ids, list) or not all(is_msg_id(i) for i in ids):
        raise bad_request("msgIds must be a list of msgIds")
    if len(ids) > MAX_READ_IDS:
        raise bad_request(f"at most {MAX_READ_IDS} msgIds in one read")
    return Read(peer, tuple(dict.fromkeys(ids)))


class ReadReceipts:
    def __init__(self, *, messages: MessageService, hub: Hub, own_devices: OwnDevices):
        self.messages, self.hub, self.own_devices = messages, hub, own_devices

    def register(self, frames: FrameRegistry) -> None:
        frames.add(FrameType("read", parse_read, handle=self.handle))

    def handle(self, session: Session, read: Read) -> None:
        try:
            result = self.messages.mark_read(session.user_id, read.peer_id, list(read.msg_ids))
        except BackendFailure as e:
            raise backend_error(e, "message") from None
        if result.get("msgIds"):
            self.hub.send_to_user(read.peer_id, encode("read", {
                "peerId": session.user_id, "msgIds": result["msgIds"],
                "timestamp": result["readAt"]}))
        self.own_devices.sync_read(session, read.peer_id, result)
