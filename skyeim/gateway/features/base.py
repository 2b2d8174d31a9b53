"""What the features share: the capabilities one feature lends another (as
Protocols, so that no feature imports another), the events other parts may
observe, and the one mapping from a backend failure to an error frame."""
from __future__ import annotations

from typing import Protocol, Sequence

from skyeim.gateway.backends.clients import BackendRejected, BackendUnavailable
from skyeim.gateway.frames.codec import FrameError
from skyeim.gateway.transport.session import Outgoing, Session
from skyeim.protocol import ErrorCode
from skyeim.tokens import Claims


def backend_error(e: BaseException, service: str, msg_id: str | None = None,
                  request_id: str | None = None) -> FrameError:
    """The error frame for a failed backend call, echoing ``msg_id`` / ``request_id``:
    unavailable when the service is down or slow (the client retries), bad_request
    when it refused the client's data (400), forbidden for a 403, internal otherwise
    (a refusal that is the gateway's fault, or an unexpected error)."""
    if isinstance(e, BackendUnavailable):
        return FrameError(ErrorCode.UNAVAILABLE, f"the {service} service is unavailable; retry",
                          msg_id, request_id)
    if isinstance(e, BackendRejected):
        code = _REJECTIONS.get(e.status, ErrorCode.INTERNAL)
        return FrameError(code, e.message, msg_id, request_id)
    return FrameError(ErrorCode.INTERNAL, "internal error", msg_id, request_id)


_REJECTIONS = {400: ErrorCode.BAD_REQUEST, 403: ErrorCode.FORBIDDEN}


# -- capabilities a feature lends another ----------------------------------------------

class DeliveryRecording(Protocol):
    """features/delivery.py: record chats as delivered, ack their senders."""

    def add(self, recipient: int, item: Outgoing) -> None: ...


class GroupMembership(Protocol):
    """features/groups.py: a group's members, when ``user_id`` is one (else FrameError
    forbidden, or the backend's error), echoing ``msg_id`` / ``request_id``."""

    def member_ids(self, group_id: int, user_id: int, msg_id: str | None = None,
                   request_id: str | None = None) -> frozenset[int]: ...


class GroupBroadcast(Protocol):
    """features/groups.py: one encoded frame to every live connection of a group's
    members, on every node (a member's recall or edit of its message)."""

    def member_ids(self, group_id: int, user_id: int, msg_id: str | None = None,
                   request_id: str | None = None) -> frozenset[int]: ...

    def fan_out(self, group_id: int, members: frozenset[int], text: str, exclude=None,
                not_user: int | None = None, also: frozenset[int] = frozenset()) -> int: ...


class GroupTyping(Protocol):
    """features/groups.py: a typing signal to a group's other online members."""

    def relay_typing(self, session: Session, group_id: int, state: str) -> None: ...


class OwnDevices(Protocol):
    """features/devices.py: what a user does on one device, shown on the user's others."""

    def copy_sent(self, session: Session, stored: list[dict]) -> None: ...

    def sync_read(self, session: Session, peer_id: int, result: dict) -> None: ...


class FriendPresence(Protocol):
    """features/presence.py: friends' online/offline frames, for the connection life."""

    def online_friends(self, user_id: int) -> list[int]: ...

    def announce_online(self, user_id: int, online_friends: list[int]) -> None: ...

    def report_offline(self, user_id: int) -> None: ...


class TokenTracking(Protocol):
    """features/revocation.py: which token generation a session runs on, and the
    gateway's whole token check (signature, expiry, not revoked)."""

    def verify(self, token: str) -> Claims: ...

    def track(self, session: Session, gen: int) -> None: ...


class FriendshipChanges(Protocol):
    """features/friendships.py: befriend / unfriend through the Friend service, with
    ``friend_added`` / ``friend_removed`` to both users (PROTOCOL.md 9.5)."""

    def add(self, user_id: int, friend_id: int) -> None: ...

    def remove(self, user_id: int, friend_id: int) -> None: ...


class BlockCheck(Protocol):
    """features/relations.py: which of ``peers`` stand in a block with ``user_id``
    (either way); raises BackendUnavailable when that cannot be known."""

    def blocked_peers(self, user_id: int, peers: set[int]) -> set[int]: ...


class AfterConnected(Protocol):
    """Something a connection gets right after `connected` (groups: `group_unread`)."""

    def after_connected(self, session: Session) -> None: ...


# -- events: seams for what observes the gateway (webhooks, PROTOCOL.md 9.3) ----------------

class PresenceListener(Protocol):
    """A user's first live connection in the cluster (online) and its last one gone
    (offline); a MultiLogin replacement is neither."""

    def user_online(self, user_id: int) -> None: ...

    def user_offline(self, user_id: int) -> None: ...


class ChatListener(Protocol):
    """A 1:1 chat was stored (not a duplicate) and handed to the recipient's
    connections; ``connections``: how many took it (0: the recipient is offline)."""

    def chat_stored(self, message: dict, connections: int) -> None: ...


class FriendshipListener(Protocol):
    """A friendship made or ended through the gateway (features/friendships.py), after
    the Friend service stored it (webhooks friend.added / friend.removed, PROTOCOL.md 9.3)."""

    def friendship_changed(self, user_id: int, friend_id: int, added: bool) -> None: ...


class ChatScreen(Protocol):
    """A step between a chat's validation and its storing (the before-send hook,
    PROTOCOL.md 9.4): for each draft ({fromUserId, toUserId | groupId, msgId, content,
    contentType}), the draft to store (its content perhaps replaced) or the FrameError
    (rejected, unavailable) that refuses it, echoing the draft's msgId."""

    def screen(self, drafts: list[dict],
               msg_ids: Sequence[str | None]) -> list[dict | FrameError]: ...
