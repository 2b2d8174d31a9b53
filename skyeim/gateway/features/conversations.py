"""The conversation list (docs/protocol.md "Conversation list").

- ``conversations`` {limit?, before?, requestId?} (a client frame): answered with
  ``conversations`` {items, nextCursor, requestId?}, one page of the caller's 1:1
  and group conversations, pinned first, then newest first. A client that wants
  the list at connect sends it after ``connected``; a v1 client never sees it.
- The REST API (rest/conversations.py) pages the same list and sets the muted and
  pinned flags through ``page`` and ``set_flags`` here; a flag change reaches
  every live connection of the user (every node) as ``conversation_updated``
  {peerId | groupId, muted, pinned}.

The Message service holds the list (its 1:1 rows, written in the sending
transaction) and the flags; the user's groups come from the Friend service and
the peers' usernames from the Auth service. A Message service without the
endpoints (PROTOCOL.md 9.1: they are optional) gets ``not_supported``.
"""
from __future__ import annotations

from dataclasses import dataclass

from skyeim.gateway.backends.clients import (AuthService, BackendFailure, BackendRejected,
                                             FriendService, MessageService)
from skyeim.gateway.features.base import GroupMembership, backend_error
from skyeim.gateway.frames.codec import (FrameError, bad_request, data_object, encode,
                                         optional_msg_id)
from skyeim.gateway.frames.registry import Echo, FrameRegistry, FrameType
from skyeim.gateway.routing.hub import Hub
from skyeim.gateway.transport.session import Session
from skyeim.protocol import ErrorCode

DEFAULT_PAGE = 50
MAX_PAGE = 200
MAX_CURSOR = 80                 # characters: a cursor is four integers and dots
_MISSING_STATUSES = (404, 405, 501)     # a service without the optional endpoint


@dataclass(frozen=True, slots=True)
class ListConversations:
    kind = "conversations"
    request_id: str | None
    limit: int
    before: str | None


def parse_conversations(data, sender_id: int) -> ListConversations:
    data = {} if data is None else data_object(data, "conversations")
    rid = optional_msg_id(data, "requestId")
    limit = data.get("limit", DEFAULT_PAGE)
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
        raise bad_request(f"limit must be an integer from 1 to {MAX_PAGE}", request_id=rid)
    before = data.get("before")
    if before is not None and (not isinstance(before, str) or len(before) > MAX_CURSOR):
        raise bad_request("before must be a nextCursor of an earlier page", request_id=rid)
    return ListConversations(rid, limit, before or None)


class NotSupported(Exception):
    """The Message service lacks the conversation endpoints."""


class Conversations:
    def __init__(self, *, messages: MessageService, friends: FriendService, auth: AuthService,
                 membership: GroupMembership, hub: Hub):
        self.messages, self.friends, self.auth, self.hub = messages, friends, auth, hub
        self.membership = membership

    def register(self, frames: FrameRegistry) -> None:
        frames.add(FrameType("conversations", parse_conversations, handle=self.handle,
                             echoes=Echo.REQUEST_ID))
        frames.add_server_types("conversation_updated")

    # -- what the frame and the REST API share ---------------------------------------------

    def page(self, user_id: int, cursor: str | None, limit: int) -> dict:
        """{items, nextCursor}; raises BackendFailure or NotSupported."""
        mine = self.friends.groups_of(user_id)
        names = {g["groupId"]: g.get("name") for g in mine}
        try:
            answer = self.messages.conversations(
                user_id, [{"groupId": g["groupId"], "readSeq": g.get("readSeq", 0),
                           "createdAt": g.get("createdAt", 0)} for g in mine], cursor, limit)
        except BackendRejected as e:
            if e.status in _MISSING_STATUSES and e.code != ErrorCode.BAD_REQUEST:
                raise NotSupported() from None
            raise
        items = answer.get("items") or []
        peers = [i["peerId"] for i in items if i.get("kind") == "chat"]
        users = {u["userId"]: u["username"] for u in self.auth.users_by_id(peers)} if peers else {}
        for item in items:
            if item.get("kind") == "chat":
                item["username"] = users.get(item["peerId"])
            else:
                item["name"] = names.get(item.get("groupId"))
        return {"items": items, "nextCursor": answer.get("nextCursor")}

    def set_flags(self, user_id: int, target: dict, flags: dict) -> dict:
        """Mute/pin one conversation of ``user_id``; ``target``: {peerId} or {groupId}
        (the caller must be a member: FrameError forbidden). Raises BackendFailure or
        NotSupported."""
        if "groupId" in target:
            self.membership.member_ids(target["groupId"], user_id)
        try:
            now = self.messages.conversation_settings(user_id, target, flags)
        except BackendRejected as e:
            if e.status in _MISSING_STATUSES and e.code != ErrorCode.BAD_REQUEST:
                raise NotSupported() from None
            raise
        answer = {**target, "muted": bool(now.get("muted")), "pinned": bool(now.get("pinned"))}
        self.hub.send_to_user(user_id, encode("conversation_updated", answer))
        return answer

    # -- the frame --------------------------------------------------------------------------

    def handle(self, session: Session, frame: ListConversations) -> None:
        rid = frame.request_id
        try:
            answer = self.page(session.user_id, frame.before, frame.limit)
        except NotSupported:
            raise FrameError(ErrorCode.NOT_SUPPORTED, "this server's Message service has no "
                             "conversation list", request_id=rid) from None
        except BackendFailure as e:
            raise backend_error(e, "message", request_id=rid) from None
        if rid is not None:
            answer["requestId"] = rid
        session.reply(encode("conversations", answer))
