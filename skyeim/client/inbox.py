"""The inbox: decides which received messages are new to the client (each
message is yielded once, whether it came live, as backlog or in a sync page)
and which ``sync`` frames to send, for chats (sync.py's ``Conversations``) and
groups (groups.py's ``GroupSeqs``). No I/O and no lock: the Client calls it
under its own lock and sends the frames it returns.
"""
from __future__ import annotations

from typing import Any, Callable

from .frames import (Ack, AnyFrame, ChatMessage, Connected, ErrorFrame, GroupMessage,
                     GroupUnread, SyncComplete)
from .groups import GroupSeqs
from .sync import Conversations


def _by_seq(messages: Any) -> list[dict]:
    msgs = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    return sorted(msgs, key=lambda m: m.get("seq") if type(m.get("seq")) is int else 0)


class Inbox:
    """``sync``: whether chats are synced and deduplicated (groups always are).
    ``own(msg_id)``: whether this client sent that chat (it is in its outbox)."""

    def __init__(self, sync: bool = True, own: Callable[[str], bool] = lambda _: False):
        self.sync = sync
        self.conversations = Conversations()
        self.groups = GroupSeqs()
        self._own = own

    def admit(self, frame: AnyFrame, me: int | None) -> bool:
        """Whether a live frame is to be yielded (False: this message was seen already)."""
        if isinstance(frame, ChatMessage):
            return not self.sync or self._new_chat(frame, me)
        if isinstance(frame, GroupMessage):
            return self.groups.message(frame.group_id, frame.seq)
        if isinstance(frame, Ack) and frame.group_id is not None and frame.status == "sent":
            self.groups.message(frame.group_id, frame.seq)    # my own: never yielded from a page
        return True

    def takes_page(self, data: Any) -> bool:
        """Whether a ``sync_messages`` frame is read here (else it passes as a generic Frame)."""
        return isinstance(data, dict) and ("groupId" in data or self.sync)

    def page(self, data: Any, me: int | None) -> list[AnyFrame]:
        """The new messages of a ``sync_messages`` page, as frames, in seq order."""
        if not isinstance(data, dict):
            return []
        if "groupId" in data:
            frames = (GroupMessage.from_data(m) for m in _by_seq(data.get("messages")))
            return [f for f in frames if self.groups.message(f.group_id, f.seq)]
        chats = (ChatMessage.from_data(m) for m in _by_seq(data.get("messages")))
        return [f for f in chats if self._new_chat(f, me)]

    def sent(self, me: int | None, peer: int, msg_id: str, seq: int | None) -> None:
        """My chat to ``peer`` was stored as ``seq`` (its ack ``sent``)."""
        self.conversations.own(me, peer, msg_id, seq)

    def after(self, frame: AnyFrame, live: bool) -> list[dict]:
        """Sync frames to send after ``frame``: a catch-up after `connected`, the next
        round after `sync_complete`, a range request after a chat beyond a gap."""
        if not self.sync or not live:
            return []                 # not live: the catch-up after `connected` covers any gap
        if isinstance(frame, Connected):
            return self.conversations.catch_up()
        if isinstance(frame, SyncComplete):
            return (self.conversations.complete(frame.request_id, frame.conversations,
                                                frame.server_time)
                    + self.groups.complete(frame.request_id, frame.conversations,
                                         frame.server_time))
        if isinstance(frame, GroupUnread):
            return self.groups.on_unread(frame.groups)
        if isinstance(frame, ErrorFrame) and frame.request_id:
            self.conversations.failed(frame.request_id)
            self.groups.failed(frame.request_id)
            return []
        if isinstance(frame, (ChatMessage, Ack)):
            return self.conversations.gaps()
        return []

    def _new_chat(self, m: ChatMessage, me: int | None) -> bool:
        if m.from_user_id == me and m.msg_id and self._own(m.msg_id):
            self.conversations.own(me, m.to_user_id or 0, m.msg_id, m.seq)
            return False              # our own, sent from this client
        return self.conversations.message(me, m.from_user_id, m.to_user_id, m.msg_id, m.seq)
