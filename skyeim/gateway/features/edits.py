"""Recall, edit and delete-for-me of 1:1 messages (docs/protocol.md "Recall, edit, delete").

- `recall {msgId}`: the sender takes back one of its messages within
  Chat.RecallWindow seconds of its createdAt; both users' connections (every
  device, every node) get `message_recalled {msgId, fromUserId, toUserId, seq,
  recalledAt}`; history and sync keep the message's place with `recalled: true`
  and no content.
- `edit {msgId, content}`: within Chat.EditWindow; both sides get
  `message_edited {msgId, fromUserId, toUserId, seq, content, contentType, editedAt}`.
- `delete {peerId, msgIds}`: hides messages of that conversation (from either
  side) from the user's own history; the user's connections get
  `messages_deleted {peerId, msgIds}`; the peer sees nothing.

- `recall {msgId, groupId}` and `edit {msgId, groupId, content}`: the same for the
  sender's group message (group messages are a msgId key space of their own, hence
  the groupId); the frames, with `groupId` instead of `toUserId`, go to every live
  connection of every member on every node. The Message service's routes for it are
  optional (PROTOCOL.md 9.1): without them, `not_supported`.

All are idempotent and keyed by (fromUserId, msgId): a repeat answers the same
frame again. A device that was away learns of changes at its next sync
(features/sync.py, `changedSince`).
"""
from __future__ import annotations

from dataclasses import dataclass

from skyeim.gateway.backends.clients import BackendFailure, BackendRejected, MessageService
from skyeim.gateway.features.base import GroupBroadcast, backend_error
from skyeim.gateway.frames.codec import (FrameError, bad_request, chat_content, data_object,
                                         edited_frame, encode, recalled_frame)
from skyeim.gateway.frames.registry import Echo, FrameRegistry, FrameType
from skyeim.gateway.routing.hub import Hub
from skyeim.gateway.transport.session import Session
from skyeim.protocol import ErrorCode, is_msg_id, is_positive_id, is_user_id

MAX_DELETE_IDS = 200              # msgIds in one delete
# What the Message service's refusals of a recall or edit become (the same codes).
_REFUSALS = {ErrorCode.NOT_FOUND, ErrorCode.TOO_LATE, ErrorCode.RECALLED}


@dataclass(frozen=True, slots=True)
class Recall:
    kind = "recall"
    given_msg_id: str
    group_id: int = 0             # a group message's (0: a 1:1 message)


@dataclass(frozen=True, slots=True)
class Edit:
    kind = "edit"
    given_msg_id: str
    content: str
    group_id: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    kind = "delete"
    peer_id: int
    msg_ids: tuple[str, ...]
    given_msg_id: None = None


def _msg_id(data: dict, kind: str) -> str:
    msg_id = data.get("msgId")
    if not is_msg_id(msg_id):
        raise bad_request(f"{kind} needs the msgId of a message you sent")
    return msg_id


def _group_id(data: dict, msg_id: str) -> int:
    """The optional groupId: absent or null for a 1:1 message."""
    gid = data.get("groupId")
    if gid is None:
        return 0
    if not is_positive_id(gid):
        raise bad_request("groupId must be an integer group id", msg_id)
    return gid


def parse_recall(data, sender_id: int) -> Recall:
    data = data_object(data, "recall")
    msg_id = _msg_id(data, "recall")
    return Recall(msg_id, _group_id(data, msg_id))


def make_edit_parser(max_content_length: int):
    def parse_edit(data, sender_id: int) -> Edit:
        data = data_object(data, "edit")
        msg_id = _msg_id(data, "edit")
        return Edit(msg_id, chat_content(data, max_content_length, msg_id),
                    _group_id(data, msg_id))
    return parse_edit


def parse_delete(data, sender_id: int) -> Delete:
    data = data_object(data, "delete")
    peer = data.get("peerId")
    if not is_user_id(peer) or peer == sender_id:
        raise bad_request("peerId must be the user id of the other user")
    ids = data.get("msgIds")
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_DELETE_IDS \
            or not all(is_msg_id(i) for i in ids):
        raise bad_request(f"msgIds must be a list of 1 to {MAX_DELETE_IDS} msgIds")
    return Delete(peer, tuple(dict.fromkeys(ids)))


class MessageEdits:
    def __init__(self, *, messages: MessageService, hub: Hub, groups: GroupBroadcast,
                 recall_window_s: int, edit_window_s: int, max_content_length: int):
        self.messages, self.hub, self.groups = messages, hub, groups
        self.recall_window_ms = recall_window_s * 1000
        self.edit_window_ms = edit_window_s * 1000
        self.max_content_length = max_content_length

    def register(self, frames: FrameRegistry) -> None:
        frames.add(FrameType("recall", parse_recall, handle=self.recall, echoes=Echo.MSG_ID))
        frames.add(FrameType("edit", make_edit_parser(self.max_content_length), handle=self.edit,
                             echoes=Echo.MSG_ID))
        frames.add(FrameType("delete", parse_delete, handle=self.delete))
        frames.add_server_types("message_recalled", "message_edited", "messages_deleted")

    def recall(self, session: Session, frame: Recall) -> None:
        if frame.group_id:
            self._group_change(session, frame.group_id, self.messages.group_recall,
                               frame.given_msg_id, self.recall_window_ms)
            return
        mid = frame.given_msg_id
        m = self._change(mid, self.messages.recall, session.user_id, mid, self.recall_window_ms)
        self._to_both(m, recalled_frame(m))

    def edit(self, session: Session, frame: Edit) -> None:
        if frame.group_id:
            self._group_change(session, frame.group_id, self.messages.group_edit,
                               frame.given_msg_id, frame.content, self.edit_window_ms)
            return
        mid = frame.given_msg_id
        m = self._change(mid, self.messages.edit, session.user_id, mid, frame.content,
                         self.edit_window_ms)
        self._to_both(m, edited_frame(m))

    def delete(self, session: Session, frame: Delete) -> None:
        uid = session.user_id
        keys = [(sender, m) for m in frame.msg_ids for sender in (uid, frame.peer_id)]
        try:
            hidden = self.messages.hide(uid, frame.peer_id, keys)
        except BackendFailure as e:
            raise backend_error(e, "message") from None
        ids = list(dict.fromkeys(h["msgId"] for h in hidden))
        if ids:
            self.hub.send_to_user(uid, encode("messages_deleted",
                                              {"peerId": frame.peer_id, "msgIds": ids}))

    def _change(self, msg_id: str, call, *args) -> dict | None:
        try:
            return call(*args)
        except BackendRejected as e:
            if e.code in _REFUSALS:
                raise FrameError(ErrorCode(e.code), e.message, msg_id) from None
            raise backend_error(e, "message", msg_id) from None
        except BackendFailure as e:
            raise backend_error(e, "message", msg_id) from None

    def _group_change(self, session: Session, group_id: int, call, msg_id: str, *args) -> None:
        """A member's recall or edit of its group message, then the frame to every live
        connection of every member, on every node (the sender's own: the answer)."""
        members = self.groups.member_ids(group_id, session.user_id, msg_id)
        m = self._change(msg_id, call, group_id, session.user_id, msg_id, *args)
        if m is None:
            raise FrameError(ErrorCode.NOT_SUPPORTED, "this server's Message service cannot "
                             "recall or edit group messages", msg_id)
        text = recalled_frame(m) if m.get("recalled") else edited_frame(m)
        self.groups.fan_out(group_id, members, text)

    def _to_both(self, m: dict, text: str) -> None:
        """Every connection of both users, on every node (the sender's own included:
        it is the answer to the frame)."""
        self.hub.send_to_user(m["toUserId"], text)
        self.hub.send_to_user(m["fromUserId"], text)
