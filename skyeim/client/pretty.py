"""Human-readable lines for frames: ``listen --pretty`` prints ``describe(frame)``
for every frame the server can send (and a generic line for a type it does not
know: never an exception); ``chat`` prints ``chat_line`` for one conversation.
"""
from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from skyeim.protocol import ContentType

from .frames import (Ack, AnyFrame, ChatMessage, Connected, Conversation, ErrorFrame, Frame,
                     FriendAdded, FriendRequest, FriendRequestAnswered, FriendRequests,
                     FriendRemoved, GroupChanged, GroupMessage, GroupRead, GroupUnread, Notice,
                     Pong, Presence,
                     MessageEdited, MessageRecalled, MessagesDeleted, ReadReceipt, SyncComplete,
                     TokenExpiring, Typing)

MAX_SHOWN = 10           # conversations or groups named in one line


def fmt_ms(ms: int | None) -> str:
    """A local time for ms since the epoch ("-" when absent)."""
    if ms is None:
        return "-"
    try:
        return _dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def _json(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def _content(content_type: int | None, content: str | None) -> str:
    if content_type in (None, ContentType.TEXT) or content_type not in set(ContentType):
        return f"{content}"
    return f"({ContentType(content_type).name.lower()}) {content}"


def _some(items: list[str]) -> str:
    more = f", +{len(items) - MAX_SHOWN} more" if len(items) > MAX_SHOWN else ""
    return ", ".join(items[:MAX_SHOWN]) + more


def _target(d: dict) -> str:
    return f"group {d.get('groupId')}" if "groupId" in d else f"user {d.get('peerId')}"


def _sync_page(data: Any) -> str:
    d = data if isinstance(data, dict) else {}
    msgs = d.get("messages") if isinstance(d.get("messages"), list) else []
    seqs = [m.get("seq") for m in msgs if isinstance(m, dict) and type(m.get("seq")) is int]
    span = f" #{min(seqs)}-#{max(seqs)}" if seqs else ""
    more = ", more follow" if d.get("hasMore") is True else ""
    return (f"sync   {len(msgs)} messages{span} with {_target(d)} "
            f"(request {d.get('requestId')}{more})")


def _describe_chat(f: ChatMessage) -> str:
    status = f" ({f.status})" if f.status else ""
    if f.recalled or f.deleted:
        what = "(recalled)" if f.recalled else "(deleted for me)"
    else:
        what = _content(f.content_type, f.content) + (" (edited)" if f.edited else "")
    return f"chat   #{f.seq} from {f.from_user_id} to {f.to_user_id} [{f.msg_id}]{status} {what}"


def _describe_ack(f: Ack) -> str:
    group = f" group={f.group_id}" if f.group_id is not None else ""
    dup = " (duplicate)" if f.duplicate else ""
    return f"ack    {f.status} {f.msg_id} seq={f.seq}{group}{dup}"


def _describe_read(f: ReadReceipt) -> str:
    ids = _some(list(f.msg_ids)) or "(none)"
    if f.own:
        return f"read   on another device, from {f.peer_id}: {ids}"
    return f"read   by {f.peer_id}: {ids}"


def _describe_error(f: ErrorFrame) -> str:
    rid = f" (request {f.request_id})" if f.request_id else ""
    return f"error  {f.code} {f.msg_id or ''}: {f.message}{rid}"


def _describe_sync_complete(f: SyncComplete) -> str:
    parts = [f"{_target(c)} up to #{c.get('lastSeq')}" + (" (more)" if c.get("hasMore") else "")
             for c in f.conversations]
    return f"synced {len(parts)} conversations (request {f.request_id}): {_some(parts) or '-'}"


def _describe_typing(f: Typing) -> str:
    where = f" in group {f.group_id}" if f.group_id is not None else ""
    return f"typing user {f.from_user_id}{where}: {f.state or 'typing'}"


def _describe_group_unread(f: GroupUnread) -> str:
    parts = []
    for g in f.groups:
        last, read = g.get("lastSeq"), g.get("readSeq")
        unread = last - read if type(last) is int and type(read) is int else "?"
        mentions = f" ({g['mentions']} @me)" if type(g.get("mentions")) is int else ""
        parts.append(f"{g.get('groupId')} {_json(g.get('name'))} {unread} unread{mentions}")
    return f"groups {len(parts)}: {_some(parts) or '-'}"


def _describe_group_changed(f: GroupChanged) -> str:
    what = {"role": f"user {f.user_id} is now {f.role}", "kick": f"user {f.user_id} removed",
            "mute": f"user {f.user_id} muted until {fmt_ms(f.until)}" if f.until else "",
            "unmute": f"user {f.user_id} unmuted", "rename": f"renamed {_json(f.name)}",
            "dismiss": "dismissed", "join": f"users {list(f.user_ids)} joined",
            "leave": f"user {f.user_id} left" + (f" (owner now {f.owner_id})"
                                                  if f.owner_id is not None else "")
            }.get(f.change or "", f.change or "?")
    return f"group {f.group_id} changed by user {f.by_user_id}: {what}"


def _where(f: MessageRecalled | MessageEdited) -> str:
    """A changed message's conversation: the peer, or ``group N``."""
    return f"group {f.group_id}" if f.group_id is not None else str(f.to_user_id)


def _describe_friend_added(f: FriendAdded) -> str:
    name = f.username if f.username is not None else "?"
    return f"friend added: user {f.user_id} ({name}, {'online' if f.online else 'offline'})"


# frame class -> its line; Presence prints its own type (online / offline)
_LINES: dict[type, Any] = {
    ChatMessage: _describe_chat,
    Ack: _describe_ack,
    ReadReceipt: _describe_read,
    Presence: lambda f: f"{f.type:<6} user {f.user_id}",
    Connected: lambda f: (f"connected as {f.user_id}; {f.online_count} online; friends online: "
                          f"{list(f.online_friends)}; {f.unread_pushed} unread pushed"),
    ErrorFrame: _describe_error,
    TokenExpiring: lambda f: f"token expires at {fmt_ms(f.expires_at)}",
    Pong: lambda f: "pong",
    SyncComplete: _describe_sync_complete,
    Typing: _describe_typing,
    GroupMessage: lambda f: (f"group  #{f.seq} in {f.group_id} from {f.from_user_id} "
                             f"[{f.msg_id}] {_content(f.content_type, f.content)}"),
    GroupRead: lambda f: f"group_read user {f.user_id} read group {f.group_id} up to #{f.seq}",
    GroupUnread: _describe_group_unread,
    GroupChanged: _describe_group_changed,
    Notice: lambda f: f"notice {f.event}: {_json(f.data)}",
    FriendAdded: _describe_friend_added,
    FriendRemoved: lambda f: f"friend removed: user {f.user_id}",
    MessageRecalled: lambda f: (f"recall #{f.seq} from {f.from_user_id} to {_where(f)} "
                                f"[{f.msg_id}] recalled"),
    MessageEdited: lambda f: (f"edit   #{f.seq} from {f.from_user_id} to {_where(f)} "
                              f"[{f.msg_id}] {_content(f.content_type, f.content)}"),
    MessagesDeleted: lambda f: f"deleted for me, with {f.peer_id}: {_some(list(f.msg_ids))}",
    FriendRequest: lambda f: f"friend request from user {f.from_user_id} ({f.username or '?'})",
    FriendRequestAnswered: lambda f: (f"friend request {'accepted' if f.accepted else 'declined'}"
                                      f" by user {f.user_id}"),
    FriendRequests: lambda f: ("friend requests pending: " + _some(
        [f"{r.from_user_id} ({r.username or '?'})" for r in f.requests])),
}


def describe(frame: AnyFrame) -> str:
    """One human-readable line for any frame (a generic one for an unknown type)."""
    line = _LINES.get(type(frame))
    if line is not None:
        return line(frame)
    if isinstance(frame, Frame) and frame.type == "sync_messages":
        return _sync_page(frame.data)
    return f"{frame.type} {_json(getattr(frame, 'data', None))}"


def chat_line(frame: AnyFrame, peer: int, names: dict[int, str]) -> str | None:
    """The line ``chat`` prints for a frame of the conversation with ``peer`` (None:
    nothing to show, e.g. a pong); frames of other conversations get ``describe``."""
    who = names.get(peer, str(peer))
    # a chat on my connection is from me or to me: with the peer at one end, it is ours
    if isinstance(frame, ChatMessage) and peer in (frame.from_user_id, frame.to_user_id):
        sender = who if frame.from_user_id == peer else "me"
        return (f"[{fmt_ms(frame.created_at)[11:]}] #{frame.seq} {sender}: "
                f"{_content(frame.content_type, frame.content)}")
    if isinstance(frame, Ack):
        return f"  ({frame.status} #{frame.seq})" if frame.status == "delivered" else None
    if isinstance(frame, ReadReceipt) and frame.peer_id == peer and not frame.own:
        return f"  ({who} read {len(frame.msg_ids)})"
    if isinstance(frame, Presence) and frame.user_id == peer:
        return f"* {who} is {frame.type}"
    if isinstance(frame, Typing) and frame.from_user_id == peer and frame.group_id is None:
        return f"* {who} is typing" if frame.state != "paused" else None
    if isinstance(frame, (Pong, SyncComplete, Connected)):
        return None
    return describe(frame)


def conversation_line(c: Conversation) -> str:
    """One line of the conversation list: flags, who, unread, the last message."""
    flags = ("*" if c.pinned else " ") + ("m" if c.muted else " ")
    if c.kind == "group":
        who = f"group {c.group_id} {c.name or '?'}"
    else:
        who = f"user {c.peer_id} {c.username or '?'}"
    last = c.last_message
    text = "(no messages)" if last is None else \
        f"{fmt_ms(last.created_at)} {last.from_user_id}: {_content(last.content_type, last.content)}"
    return f"{flags} {who}\tunread {c.unread}\t{text}"
