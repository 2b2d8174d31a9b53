"""Group chat in the gateway (docs/protocol.md "Groups").

- ``groupchat`` {groupId, msgId?, content, contentType?}: the sender must be a
  member; the message is stored once (a per-group seq), the sender gets
  ``ack sent`` (with ``groupId``), and one ``groupchat`` text, encoded once, is
  queued to every live connection of every online member but the sending one
  (the sender's other devices get it as their copy). No ``delivered`` acks.
- ``group_read`` {groupId, seq}: moves the member's "read up to seq" cursor
  (monotonic, capped at the group's last seq); the reader's other devices and,
  in groups of at most ``Groups.ReadReceiptMaxMembers``, the online members get
  ``group_read`` {groupId, userId, seq}.
- After ``connected``, a member of any group gets one ``group_unread`` frame:
  {groups: [{groupId, name, lastSeq, readSeq}]}; it fetches what it lacks with
  ``sync`` conversations {groupId, afterSeq} (features/sync.py).

- ``groupchat`` may carry ``mentions`` [userId] (members only, deduplicated, at most
  ``Groups.MaxMentions``): stored with the message, delivered in the frame; a
  member's ``group_unread`` entry counts them (``mentions``) since its readSeq.
- Administration (docs/protocol.md "Group administration"): the REST API's role,
  kick, mute, rename and dismiss go through here; each is pushed to the members'
  live connections on every node as ``group_changed`` {groupId, change, byUserId,
  userId?, role?, until?, name?}. A muted member's ``groupchat`` gets ``muted``.
  Invites and leaves are announced the same way (change ``join`` with ``userIds``,
  ``leave`` with ``userId``).

Member lists are cached (bounded LRU, short TTL, dropped on an invite or a
leave through any node), so a message to a 10,000-member group fetches no ids.
In a cluster, a group frame is published once on a channel every node hears;
each node fans it out to its own members.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

from gevent.event import AsyncResult

from skyeim.config import GroupsConfig
from skyeim.gateway.backends.clients import (BackendFailure, BackendRejected, FriendService,
                                             MessageService)
from skyeim.gateway.features.base import ChatScreen, backend_error
from skyeim.gateway.frames.codec import (FrameError, bad_request, chat_content, content_type,
                                         data_object, encode, optional_msg_id)
from skyeim.gateway.frames.registry import Echo, FrameRegistry, FrameType
from skyeim.gateway.routing.hub import Hub
from skyeim.gateway.routing.messages import GroupChanged, GroupFrame
from skyeim.gateway.transport.session import Session
from skyeim.metrics import GatewayMetrics
from skyeim.protocol import ErrorCode, is_positive_id, is_user_id

log = logging.getLogger(__name__)

FETCH_WAIT = 10.0     # s a caller waits for another greenlet's fetch of the same member list


@dataclass(frozen=True, slots=True)
class GroupChat:
    kind = "groupchat"
    group_id: int
    msg_id: str
    content: str
    content_type: int
    given_msg_id: str | None
    mentions: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class GroupRead:
    kind = "group_read"
    group_id: int
    seq: int


def parse_groupchat(data, sender_id: int, max_content_length: int,
                    max_mentions: int = 50) -> GroupChat:
    data = data_object(data, "groupchat")
    msg_id = optional_msg_id(data)
    gid = data.get("groupId")
    if not is_positive_id(gid):
        raise bad_request("groupId must be an integer group id", msg_id)
    # the 1:1 chat's rules for content and contentType
    content = chat_content(data, max_content_length, msg_id)
    ctype = content_type(data, msg_id)
    mentions = data.get("mentions")
    if mentions is None:
        mentions = []
    if (not isinstance(mentions, list) or len(mentions) > max_mentions
            or not all(is_user_id(u) for u in mentions)):
        raise bad_request(f"mentions must be a list of at most {max_mentions} user ids", msg_id)
    return GroupChat(gid, msg_id if msg_id is not None else str(uuid.uuid4()), content, ctype,
                     msg_id, tuple(dict.fromkeys(mentions)))


def parse_group_read(data, sender_id: int) -> GroupRead:
    data = data_object(data, "group_read")
    gid, seq = data.get("groupId"), data.get("seq")
    if not is_positive_id(gid):
        raise bad_request("groupId must be an integer group id")
    if not is_positive_id(seq):
        raise bad_request("seq must be an integer seq (1 or more)")
    return GroupRead(gid, seq)


@dataclass(frozen=True, slots=True)
class MemberList:
    ids: frozenset[int]
    muted: dict[int, int]           # user id -> muted until (ms), as fetched


class MemberCache:
    """Group id -> frozenset of member ids (and who is muted until when): bounded LRU,
    short TTL, one fetch at a time per group."""

    def __init__(self, fetch, size: int, ttl_ms: int):
        self.fetch, self.size, self.ttl = fetch, size, ttl_ms / 1000.0
        self._lists: OrderedDict[int, tuple[float, MemberList]] = OrderedDict()
        self._fetching: dict[int, AsyncResult] = {}

    def get(self, group_id: int) -> frozenset[int]:
        """Raises BackendUnavailable, or BackendRejected (404: no such group)."""
        return self.get_list(group_id).ids

    def get_list(self, group_id: int) -> MemberList:
        hit = self._lists.get(group_id)
        if hit is not None and hit[0] > time.monotonic():
            self._lists.move_to_end(group_id)
            return hit[1]
        pending = self._fetching.get(group_id)
        if pending is not None:          # a burst of senders to a cold group: one fetch
            return pending.get(timeout=FETCH_WAIT)
        pending = self._fetching[group_id] = AsyncResult()
        try:
            fetched = self.fetch(group_id)
            members = MemberList(frozenset(m["userId"] for m in fetched),
                                 {m["userId"]: m["mutedUntil"] for m in fetched
                                  if m.get("mutedUntil")})
            if self.ttl > 0:
                self._lists[group_id] = (time.monotonic() + self.ttl, members)
                self._lists.move_to_end(group_id)
                while len(self._lists) > self.size:
                    self._lists.popitem(last=False)
            pending.set(members)
            return members
        except BaseException as e:
            pending.set_exception(e)
            raise
        finally:
            del self._fetching[group_id]

    def drop(self, group_id: int) -> None:
        self._lists.pop(group_id, None)


class Groups:
    """The gateway's group flows (frames, and the REST API's membership checks)."""

    def __init__(self, *, cfg: GroupsConfig, messages: MessageService, friends: FriendService,
                 hub: Hub, metrics: GatewayMetrics, max_content_length: int,
                 screens: Sequence[ChatScreen] = ()):
        self.messages, self.friends, self.hub = messages, friends, hub
        self.fanout_latency = metrics.group_fanout
        self.read_receipt_max = cfg.read_receipt_max_members
        self.max_content_length = max_content_length
        self.max_mentions = cfg.max_mentions
        self.screens = tuple(screens)
        self.members = MemberCache(friends.members, cfg.members_cache_size,
                                   cfg.members_cache_ttl_ms)

    def register(self, frames: FrameRegistry) -> None:
        frames.add(FrameType("groupchat", self.parse_chat, handle=self.handle_chat,
                             echoes=Echo.MSG_ID))
        frames.add(FrameType("group_read", parse_group_read, handle=self.handle_read))
        frames.add_server_types("group_unread", "group_changed")

    def parse_chat(self, data, sender_id: int) -> GroupChat:
        return parse_groupchat(data, sender_id, self.max_content_length, self.max_mentions)

    # -- membership ---------------------------------------------------------------------

    def member_ids(self, group_id: int, user_id: int, msg_id: str | None = None,
                   request_id: str | None = None) -> frozenset[int]:
        """The group's members, when ``user_id`` is one; else FrameError forbidden."""
        return self.member_list(group_id, user_id, msg_id, request_id).ids

    def member_list(self, group_id: int, user_id: int, msg_id: str | None = None,
                    request_id: str | None = None) -> MemberList:
        try:
            members = self.members.get_list(group_id)
        except BackendFailure as e:
            if not (isinstance(e, BackendRejected) and e.status == 404):
                raise backend_error(e, "friend", msg_id, request_id) from None
            members = MemberList(frozenset(), {})
        if user_id not in members.ids:
            # an unknown group and someone else's group look alike
            raise FrameError(ErrorCode.FORBIDDEN, "you are not a member of this group", msg_id,
                             request_id)
        return members

    def changed(self, group_id: int) -> None:
        """An invite or a leave went through this gateway: every node re-reads the list."""
        self.members.drop(group_id)
        self.hub.broadcast(GroupChanged(group_id))

    # -- frames ---------------------------------------------------------------------------

    def handle_chat(self, session: Session, chat: GroupChat) -> None:
        uid, err_id = session.user_id, chat.given_msg_id
        found = self.member_list(chat.group_id, uid, err_id)
        members = found.ids
        until = found.muted.get(uid, 0)
        if until > time.time() * 1000:
            raise FrameError(ErrorCode.MUTED, f"you are muted in this group until {until} "
                             "(ms since the epoch)", err_id)
        if not members.issuperset(chat.mentions):
            raise bad_request("mentions must name members of the group", err_id)
        draft = {"groupId": chat.group_id, "fromUserId": uid, "msgId": chat.msg_id,
                 "content": chat.content, "contentType": chat.content_type}
        for screen in self.screens:
            draft = screen.screen([draft], [err_id])[0]
            if isinstance(draft, FrameError):
                raise draft
        try:
            stored = self.messages.group_send(chat.group_id, uid, chat.msg_id, draft["content"],
                                              draft["contentType"], list(chat.mentions))
        except BackendFailure as e:
            raise backend_error(e, "message", err_id) from None
        ack = {"msgId": chat.msg_id, "status": "sent", "timestamp": stored["createdAt"],
               "seq": stored["seq"], "groupId": chat.group_id}
        if stored.get("duplicate"):
            ack["duplicate"] = True
        session.reply(encode("ack", ack))
        if stored.get("duplicate"):
            return           # members who missed the first fan-out find it by sync
        frame = {k: stored[k] for k in (
            "groupId", "msgId", "fromUserId", "content", "contentType", "createdAt", "seq")}
        if stored.get("mentions"):
            frame["mentions"] = stored["mentions"]
        text = encode("groupchat", frame)
        self.fan_out(chat.group_id, members, text, exclude=session)

    def fan_out(self, group_id: int, members: frozenset[int], text: str, exclude=None,
                not_user: int | None = None, also: frozenset[int] = frozenset()) -> int:
        """The one encoded ``text`` to every local connection of a member, and one publish
        for the other nodes; returns the local connections that took it. ``not_user``:
        a member left out on every node (a typing signal skips its sender's devices)."""
        t0 = time.perf_counter()
        if not_user is not None:
            members = members - {not_user}
        n = self.hub.send_among(members | also, text, exclude)
        self.hub.broadcast(GroupFrame(group_id, text, not_user, also=tuple(sorted(also))))
        self.fanout_latency.observe(time.perf_counter() - t0)
        return n

    def relay_typing(self, session: Session, group_id: int, state: str) -> None:
        """A member is typing in the group: every other member's live connections hear it
        (never stored; a non-member gets forbidden)."""
        members = self.member_ids(group_id, session.user_id)
        self.fan_out(group_id, members, encode("typing", {
            "fromUserId": session.user_id, "groupId": group_id, "state": state,
            "timestamp": time.time_ns() // 1_000_000}), not_user=session.user_id)

    def from_other_node(self, msg: GroupFrame | GroupChanged) -> None:
        """What another node broadcast about a group (routing/messages.py)."""
        gid = msg.group_id
        if isinstance(msg, GroupChanged):
            self.members.drop(gid)
            return
        try:
            members = self.members.get(gid)
        except BackendFailure as e:
            if not (msg.also and isinstance(e, BackendRejected) and e.status == 404):
                log.warning("group=%s fan-out from another node skipped (%s): members sync",
                            gid, e)
                return
            members = frozenset()       # a dismissed group: ``also`` lists who it had
        if msg.not_user is not None:
            members = members - {msg.not_user}
        self.hub.send_among(members | frozenset(msg.also), msg.text)

    def handle_read(self, session: Session, read: GroupRead) -> None:
        uid, gid = session.user_id, read.group_id
        members = self.member_ids(gid, uid)
        try:
            last = self.messages.group_last([gid]).get(gid, 0)
        except BackendFailure as e:
            raise backend_error(e, "message") from None
        try:
            result = self.friends.group_read(gid, uid, min(read.seq, last))
        except BackendFailure as e:
            raise backend_error(e, "friend") from None
        if not result.get("moved"):
            return
        text = encode("group_read", {"groupId": gid, "userId": uid, "seq": result["readSeq"]})
        if len(members) <= self.read_receipt_max:
            self.fan_out(gid, members, text, exclude=session)
        else:       # a big group: n readers times n members would swamp it
            self.hub.send_to_others(uid, text, session)

    def after_connected(self, session: Session) -> None:
        """One `group_unread` frame for a member of any group (none for anyone else)."""
        try:
            mine = self.friends.groups_of(session.user_id)
            if not mine:
                return
            last = self.messages.group_last([g["groupId"] for g in mine])
        except BackendFailure as e:
            log.warning("user=%s group_unread skipped: %s", session.user_id, e)
            return
        try:
            mentions = self.messages.group_mentions(session.user_id, {
                g["groupId"]: g["readSeq"] for g in mine
                if last.get(g["groupId"], 0) > g["readSeq"]})
        except BackendFailure as e:         # the counts are extra: the frame goes without
            log.warning("user=%s group_unread without mentions: %s", session.user_id, e)
            mentions = {}
        except Exception:           # a malformed answer must not cost the live connection
            log.exception("user=%s group_unread failed", session.user_id)
            return
        session.send(encode("group_unread", {"groups": [
            {"groupId": g["groupId"], "name": g["name"], "lastSeq": last.get(g["groupId"], 0),
             "readSeq": g["readSeq"],
             **({"mentions": mentions[g["groupId"]]} if mentions.get(g["groupId"]) else {})}
            for g in mine]}))

    # -- membership changes and administration (the REST API calls these) -----------------

    def joined(self, group_id: int, by_user: int, added: list[int]) -> None:
        """An invite added ``added``: ``group_changed`` {change: "join", userIds} to every
        member on every node, the new ones included."""
        self.changed(group_id)
        if added:
            self._announce(group_id, {"groupId": group_id, "change": "join", "byUserId": by_user,
                                      "userIds": list(added)}, frozenset(added))

    def left(self, group_id: int, user_id: int, result: dict) -> None:
        """``user_id`` left: ``group_changed`` {change: "leave", userId, ownerId} to the
        remaining members and to the leaver's own connections (its other devices)."""
        self.changed(group_id)
        if result.get("left"):
            frame = {"groupId": group_id, "change": "leave", "byUserId": user_id,
                     "userId": user_id}
            if result.get("ownerId") is not None:     # an owner's leave hands the group on
                frame["ownerId"] = result["ownerId"]
            self._announce(group_id, frame, frozenset([user_id]))

    def _announce(self, group_id: int, frame: dict, also: frozenset[int]) -> None:
        try:
            members = self.members.get(group_id)
        except BackendFailure:
            members = frozenset()     # emptied (the last member left), or unreadable
        self.fan_out(group_id, members, encode("group_changed", frame), also=also)


    def administer(self, group_id: int, by_user: int, change: str, **fields) -> dict:
        """One administration call to the Friend service, then ``group_changed`` to every
        member on every node (a kicked member and a dismissed group's members included).
        Raises BackendRejected (403: a role not allowed) or BackendUnavailable."""
        action = {"role": "role", "kick": "kick", "mute": "mute", "unmute": "mute",
                  "rename": "rename", "dismiss": "dismiss"}[change]
        result = self.friends.group_admin(group_id, action, by_user, **fields)
        self.changed(group_id)
        frame = {"groupId": group_id, "change": change, "byUserId": by_user}
        also: frozenset[int] = frozenset()
        if change in ("role", "kick", "mute", "unmute"):
            frame["userId"] = fields["userId"]
        if change == "role":
            frame["role"] = result.get("role", fields["role"])
            if not result.get("changed", True):
                return result                  # nothing changed: nothing to announce
        elif change == "kick":
            also = frozenset([fields["userId"]])
        elif change in ("mute", "unmute"):
            frame["until"] = result.get("mutedUntil", 0)
        elif change == "rename":
            frame["name"] = fields["name"]
        elif change == "dismiss":
            also = frozenset(result.get("memberIds") or ())
        self._announce(group_id, frame, also)   # dismissed: ``also`` still hears
        return result
