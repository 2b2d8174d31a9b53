"""Sync: a client catches up on conversations exactly, by seq (docs/protocol.md, "Sync").

A ``sync`` frame names, per conversation, the last seq the client holds
(``afterSeq``) and optionally where a gap ends (``beforeSeq``). The answer is
``sync_messages`` pages in seq order, then one ``sync_complete``. The work of
one frame is bounded (conversations, messages per page, messages in all); a
conversation cut short by the bound says ``hasMore`` and the client asks again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import gevent

from skyeim.gateway.backends.clients import BackendFailure, BackendRejected, MessageService
from skyeim.gateway.features.base import DeliveryRecording, GroupMembership, backend_error
from skyeim.gateway.frames.codec import (FrameError, bad_request, change_frame, data_object, encode,
                                         optional_msg_id, synced_data)
from skyeim.gateway.frames.registry import Echo, FrameRegistry, FrameType
from skyeim.gateway.transport.session import Outgoing, Session
from skyeim.protocol import MAX_USER_ID, is_positive_id, is_user_id

MAX_CONVERSATIONS = 100       # conversations in one sync frame
DEFAULT_PAGE = 50             # messages per sync_messages page (the contract's paging rule)
MAX_PAGE = 200
MAX_MESSAGES = 1000           # messages in all in the answer to one sync frame
LIVE_WAIT = 30.0              # s a sync sent before `connected` waits for it (answers follow it)


@dataclass(frozen=True, slots=True)
class Range:
    peer_id: int                  # 0 for a group's range
    after_seq: int                # the client holds everything up to it (0: nothing)
    before_seq: int | None        # exclusive end of a gap; None: to the newest
    group_id: int = 0             # extension: a group's messages (features/groups.py)


@dataclass(frozen=True, slots=True)
class Sync:
    kind = "sync"
    request_id: str | None        # echoed in every answer (and in an error)
    ranges: tuple[Range, ...]
    limit: int                    # messages per page
    changed_since: int | None = None  # extension: also tell of recalls/edits after this (ms)


def parse_sync(data, sender_id: int) -> Sync:
    data = data_object(data, "sync")
    request_id = optional_msg_id(data, "requestId")

    def bad(message: str) -> FrameError:
        return bad_request(message, request_id=request_id)

    limit = data.get("limit")
    if limit is None:
        limit = DEFAULT_PAGE
    elif type(limit) is not int or limit < 1:
        raise bad("limit must be a positive integer")
    convs = data.get("conversations")
    if not isinstance(convs, list) or not 1 <= len(convs) <= MAX_CONVERSATIONS:
        raise bad(f"conversations must be a list of 1 to {MAX_CONVERSATIONS} objects")
    ranges, seen = [], set()
    for i, c in enumerate(convs):
        if not isinstance(c, dict):
            raise bad(f"conversations[{i}] must be an object")
        peer, group = c.get("peerId"), c.get("groupId")
        if group is not None and peer is None:       # a group's range
            if not is_positive_id(group):
                raise bad(f"conversations[{i}].groupId must be an integer group id")
            key, peer = ("g", group), 0
        elif not is_user_id(peer) or peer == sender_id:
            raise bad(f"conversations[{i}].peerId must be the user id of the other user "
                      "(or give a groupId alone)")
        else:
            key, group = peer, 0
        if key in seen:
            raise bad(f"conversations[{i}] names its conversation twice")
        seen.add(key)
        after = c.get("afterSeq")
        if after is None:
            after = 0
        elif type(after) is not int or not 0 <= after <= MAX_USER_ID:
            raise bad(f"conversations[{i}].afterSeq must be an integer seq (0 = from the first)")
        before = c.get("beforeSeq")
        if before is not None and (type(before) is not int or not after < before <= MAX_USER_ID):
            raise bad(f"conversations[{i}].beforeSeq must be an integer seq above afterSeq")
        ranges.append(Range(peer, after, before, group))
    since = data.get("changedSince")
    if since is not None and (type(since) is not int or not 0 <= since <= MAX_USER_ID):
        raise bad("changedSince must be a time in ms (a sync_complete's serverTime)")
    return Sync(request_id, tuple(ranges), min(limit, MAX_PAGE), since)


class Syncer:
    """Answers sync frames from the Message service's conversation pages."""

    def __init__(self, *, messages: MessageService, membership: GroupMembership,
                 recorder: DeliveryRecording):
        self.messages, self.membership, self.recorder = messages, membership, recorder

    def register(self, frames: FrameRegistry) -> None:
        frames.add(FrameType("sync", parse_sync, handle=self.handle, echoes=Echo.REQUEST_ID))
        frames.add_server_types("sync_messages", "sync_complete")

    def handle(self, session: Session, sync: Sync) -> None:
        # Answers sent before `connected` would be held, and a long one would
        # overflow the hold (4002): wait until the connection is live (bounded).
        deadline = time.monotonic() + LIVE_WAIT
        while session.held is not None and not session.closing and time.monotonic() < deadline:
            gevent.sleep(0.01)
        uid, rid = session.user_id, sync.request_id
        started = int(time.time() * 1000)   # the next sync's changedSince
        for r in sync.ranges:         # every group named: a member's, before anything is answered
            if r.group_id:
                self.membership.member_ids(r.group_id, uid, request_id=rid)
        budget = MAX_MESSAGES
        done = []
        for r in sync.ranges:
            last, has_more = r.after_seq, True
            name = {"groupId": r.group_id} if r.group_id else {"peerId": r.peer_id}
            while budget > 0 and has_more:        # bounded by the budget: each page takes >= 1
                page = self._page(uid, r, last, min(sync.limit, budget), rid)
                messages = page.get("messages") or []
                has_more = bool(page.get("hasMore")) and bool(messages)
                if messages:
                    budget -= len(messages)
                    last = messages[-1]["seq"]
                    if not session.reply(encode("sync_messages", {
                            "requestId": rid, **name,
                            "messages": messages if r.group_id else
                            [synced_data(m) for m in messages],
                            "hasMore": has_more})):
                        return                    # the connection is going away
                    if not r.group_id:
                        self._record_delivery(uid, messages)
            if sync.changed_since is not None:
                self._changes(session, uid, r, sync.changed_since, rid)
            done.append({**name, "lastSeq": last, "hasMore": has_more})
        session.reply(encode("sync_complete", {"requestId": rid, "conversations": done,
                                               "serverTime": started}))

    def _changes(self, session: Session, uid: int, r: Range, since: int,
                 rid: str | None) -> None:
        """message_recalled / message_edited for what changed after ``since`` among the
        messages the client already held (seq <= afterSeq: the pages brought the rest
        as they are now); bounded to one page of changes per conversation or group."""
        after_seq = r.after_seq
        try:
            if r.group_id:
                page = self.messages.group_changes(r.group_id, since, MAX_PAGE)
                if page is None:
                    return    # a Message service without group recall and edit (9.1)
            else:
                page = self.messages.changes(uid, r.peer_id, since, MAX_PAGE)
        except BackendRejected as e:
            if e.status in (404, 405):
                return        # a Message service without recall and edit (PROTOCOL.md 9.1)
            raise backend_error(e, "message", request_id=rid) from None
        except BackendFailure as e:
            raise backend_error(e, "message", request_id=rid) from None
        for m in page.get("messages") or []:
            text = change_frame(m) if m.get("seq", 0) <= after_seq else None
            if text is not None and not session.reply(text):
                return

    def _page(self, uid: int, r: Range, after: int, limit: int, rid: str | None) -> dict:
        message = self.messages
        try:
            if r.group_id:
                return message.group_page(r.group_id, after, r.before_seq, limit)
            return message.conversation(uid, r.peer_id, after, r.before_seq, limit)
        except BackendFailure as e:
            raise backend_error(e, "message", request_id=rid) from None

    def _record_delivery(self, uid: int, messages: list[dict]) -> None:
        """Messages to this user not yet delivered count as delivered now (their
        senders get `ack delivered`), as at an unread push."""
        recorder = self.recorder
        for m in messages:
            if m.get("toUserId") == uid and m.get("status") == "sent":
                recorder.add(uid, Outgoing("", (m["fromUserId"], m["msgId"]), m["seq"]))
