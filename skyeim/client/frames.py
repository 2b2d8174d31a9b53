"""Typed server frames (PROTOCOL.md section 2), parsed from raw ``{"type", "data"}`` dicts.

``parse_frame`` never fails on a well-formed ``{"type": str, ...}`` object:
a known type becomes its dataclass (missing fields are ``None``, unknown
fields are ignored); an unknown type, or a known one whose ``data`` has the
wrong shape, becomes a generic ``Frame`` -- so a client keeps working when the
server adds frame types or fields. Every frame keeps the original dict in
``raw``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar


def _int(v: Any) -> int | None:
    return v if type(v) is int else None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


@dataclass(frozen=True)
class Frame:
    """A frame of a type this SDK does not know (or with unexpected ``data``)."""
    type: str
    data: Any = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ChatMessage:
    msg_id: str | None
    from_user_id: int | None
    to_user_id: int | None
    content: str | None
    content_type: int = 1
    created_at: int | None = None        # ms since the epoch
    seq: int | None = None
    status: str | None = None            # only in history and sync: sent, delivered or read
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    # extension (docs/protocol.md "Recall, edit, delete"), in history and sync only
    recalled: bool = False               # the sender took it back: content is ""
    edited: bool = False                 # content is the edited one
    deleted: bool = False                # this user deleted it for themselves: content is ""
    type: ClassVar[str] = "chat"

    @classmethod
    def from_data(cls, d: dict, raw: dict | None = None) -> "ChatMessage":
        ct = d.get("contentType")
        return cls(_str(d.get("msgId")), _int(d.get("fromUserId")), _int(d.get("toUserId")),
                   _str(d.get("content")), ct if type(ct) is int else 1,
                   _int(d.get("createdAt")), _int(d.get("seq")), _str(d.get("status")),
                   raw if raw is not None else {"type": "chat", "data": d},
                   d.get("recalled") is True, d.get("edited") is True, d.get("deleted") is True)


@dataclass(frozen=True)
class Ack:
    msg_id: str | None
    status: str | None                   # "sent" or "delivered"
    timestamp: int | None = None         # createdAt for sent, delivery time for delivered
    seq: int | None = None
    duplicate: bool = False
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    group_id: int | None = None          # extension: the ack of a groupchat
    type: ClassVar[str] = "ack"


@dataclass(frozen=True)
class ReadReceipt:
    peer_id: int | None                  # the user who read (own: the peer whose messages)
    msg_ids: tuple[str, ...] = ()
    timestamp: int | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    # extension (several devices): True when this user read them on another device
    own: bool = False
    type: ClassVar[str] = "read"


@dataclass(frozen=True)
class Typing:
    """Extension: ``from_user_id`` is typing to this user, or in group ``group_id``
    ("typing"), or stopped ("paused")."""
    from_user_id: int | None
    state: str | None = None
    timestamp: int | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    group_id: int | None = None
    type: ClassVar[str] = "typing"


@dataclass(frozen=True)
class GroupMessage:
    """Extension (docs/protocol.md "Groups"): a message in a group, live or from a sync page."""
    group_id: int | None
    msg_id: str | None
    from_user_id: int | None
    content: str | None
    content_type: int = 1
    created_at: int | None = None
    seq: int | None = None               # per group
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    mentions: tuple[int, ...] = ()       # user ids it mentions ("Mentions in groups")
    # in history and sync only ("Recall, edit, delete"): recalled (content ""), edited
    recalled: bool = False
    edited: bool = False
    type: ClassVar[str] = "groupchat"

    @classmethod
    def from_data(cls, d: dict, raw: dict | None = None) -> "GroupMessage":
        ct = d.get("contentType")
        return cls(_int(d.get("groupId")), _str(d.get("msgId")), _int(d.get("fromUserId")),
                   _str(d.get("content")), ct if type(ct) is int else 1, _int(d.get("createdAt")),
                   _int(d.get("seq")), raw if raw is not None else {"type": "groupchat", "data": d},
                   _ints(d.get("mentions")), d.get("recalled") is True, d.get("edited") is True)


@dataclass(frozen=True)
class GroupRead:
    """Extension: ``user_id`` read group ``group_id`` up to ``seq``."""
    group_id: int | None
    user_id: int | None
    seq: int | None
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    type: ClassVar[str] = "group_read"


@dataclass(frozen=True)
class GroupChanged:
    """Extension ("Group administration"): ``change`` is role, kick, mute, unmute, rename,
    dismiss, join or leave, made by ``by_user_id``; ``user_id`` the member concerned (role,
    kick, mute, leave), ``role`` its new role, ``until`` the mute's end (ms, 0: none),
    ``name`` the new name, ``user_ids`` who joined (join), ``owner_id`` the owner after a
    leave."""
    group_id: int | None
    change: str | None
    by_user_id: int | None
    user_id: int | None = None
    role: str | None = None
    until: int | None = None
    name: str | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    user_ids: tuple[int, ...] = ()
    owner_id: int | None = None
    type: ClassVar[str] = "group_changed"


@dataclass(frozen=True)
class GroupUnread:
    """Extension, after `connected`: per group ``{groupId, name, lastSeq, readSeq}``, and
    ``mentions`` (messages since readSeq that mention me) when there are any."""
    groups: tuple[dict, ...] = ()
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    type: ClassVar[str] = "group_unread"


@dataclass(frozen=True)
class Presence:
    user_id: int | None
    online: bool
    timestamp: int | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def type(self) -> str:
        return "online" if self.online else "offline"


@dataclass(frozen=True)
class Connected:
    user_id: int | None
    online_count: int | None = None
    online_friends: tuple[int, ...] = ()
    unread_pushed: int | None = None
    server_time: int | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    type: ClassVar[str] = "connected"


@dataclass(frozen=True)
class ErrorFrame:
    msg_id: str | None
    code: str | None
    message: str | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    type: ClassVar[str] = "error"

    @property
    def request_id(self) -> str | None:
        """The requestId of the sync frame this error answers (extension)."""
        d = self.raw.get("data")
        return _str(d.get("requestId")) if isinstance(d, dict) else None


@dataclass(frozen=True)
class SyncComplete:
    """The end of the answer to a sync frame (extension): per conversation
    ``{peerId, lastSeq, hasMore}``."""
    request_id: str | None
    conversations: tuple[dict, ...] = ()
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    server_time: int | None = None       # ms: the next sync's changedSince (recall, edit)
    type: ClassVar[str] = "sync_complete"


@dataclass(frozen=True)
class TokenExpiring:
    expires_at: int | None               # ms since the epoch
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    type: ClassVar[str] = "token_expiring"


@dataclass(frozen=True)
class Pong:
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    type: ClassVar[str] = "pong"


@dataclass(frozen=True)
class Notice:
    """v1.1 (PROTOCOL.md 9.2): a transient notice from the team's backend, never
    stored: ``event`` names it, ``data`` is any JSON value."""
    event: str | None
    data: Any = None
    timestamp: int | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    type: ClassVar[str] = "notice"


@dataclass(frozen=True)
class FriendAdded:
    """v1.1 (PROTOCOL.md 9.5): a friendship with ``user_id`` was made (``username``
    None when the Auth service could not say)."""
    user_id: int | None
    username: str | None = None
    online: bool = False
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    type: ClassVar[str] = "friend_added"


@dataclass(frozen=True)
class FriendRemoved:
    """v1.1 (PROTOCOL.md 9.5): the friendship with ``user_id`` was removed."""
    user_id: int | None
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    type: ClassVar[str] = "friend_removed"


@dataclass(frozen=True)
class MessageRecalled:
    """Extension (docs/protocol.md "Recall, edit, delete"): the sender took back a
    message of the conversation of ``from_user_id`` and ``to_user_id``, or of the group
    ``group_id`` (then ``to_user_id`` is None)."""
    msg_id: str | None
    from_user_id: int | None
    to_user_id: int | None
    seq: int | None = None
    recalled_at: int | None = None       # ms
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    group_id: int | None = None
    type: ClassVar[str] = "message_recalled"


@dataclass(frozen=True)
class MessageEdited:
    """Extension: the sender replaced a message's content (``group_id``: a group's)."""
    msg_id: str | None
    from_user_id: int | None
    to_user_id: int | None
    seq: int | None = None
    content: str | None = None
    content_type: int = 1
    edited_at: int | None = None         # ms
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    group_id: int | None = None
    type: ClassVar[str] = "message_edited"


@dataclass(frozen=True)
class MessagesDeleted:
    """Extension: this user deleted messages of the conversation with ``peer_id`` for
    themselves (on this or another device)."""
    peer_id: int | None
    msg_ids: tuple[str, ...] = ()
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    type: ClassVar[str] = "messages_deleted"


@dataclass(frozen=True)
class Conversation:
    """Extension (docs/protocol.md "Conversation list"): one item of the list. ``kind``
    "chat" (``peer_id``, ``username``) or "group" (``group_id``, ``name``, ``read_seq``);
    ``last_message`` a ChatMessage or GroupMessage (None when there is none yet)."""
    kind: str | None
    peer_id: int | None = None
    group_id: int | None = None
    username: str | None = None
    name: str | None = None
    last_message: "ChatMessage | GroupMessage | None" = None
    last_at: int | None = None
    last_seq: int | None = None
    read_seq: int | None = None
    unread: int = 0
    muted: bool = False
    pinned: bool = False

    @classmethod
    def from_data(cls, d: dict) -> "Conversation":
        kind, last = _str(d.get("kind")), d.get("lastMessage")
        msg = None
        if isinstance(last, dict):
            msg = GroupMessage.from_data(last) if kind == "group" else ChatMessage.from_data(last)
        unread = d.get("unread")
        return cls(kind, _int(d.get("peerId")), _int(d.get("groupId")), _str(d.get("username")),
                   _str(d.get("name")), msg, _int(d.get("lastAt")), _int(d.get("lastSeq")),
                   _int(d.get("readSeq")), unread if type(unread) is int else 0,
                   d.get("muted") is True, d.get("pinned") is True)


@dataclass(frozen=True)
class ConversationsPage:
    """Extension: a page of the conversation list (the `conversations` frame, or
    ``Api.conversations``); ``next_cursor`` is ``before`` for the next page (None: last)."""
    items: tuple[Conversation, ...] = ()
    next_cursor: str | None = None
    request_id: str | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    type: ClassVar[str] = "conversations"

    @classmethod
    def from_data(cls, d: dict, raw: dict | None = None) -> "ConversationsPage":
        return cls(tuple(Conversation.from_data(i) for i in _dicts(d.get("items"))),
                   _str(d.get("nextCursor")), _str(d.get("requestId")),
                   raw if raw is not None else {"type": "conversations", "data": d})


@dataclass(frozen=True)
class ConversationUpdated:
    """Extension: I muted/pinned a conversation (from any of my devices)."""
    peer_id: int | None
    group_id: int | None
    muted: bool
    pinned: bool
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    type: ClassVar[str] = "conversation_updated"


@dataclass(frozen=True)
class FriendRequest:
    """Extension (docs/protocol.md "Friend requests and blocking"): ``from_user_id``
    asks to be my friend (Friends.RequireAcceptance)."""
    from_user_id: int | None
    username: str | None = None
    created_at: int | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    type: ClassVar[str] = "friend_request"


@dataclass(frozen=True)
class FriendRequestAnswered:
    """Extension: ``user_id`` accepted (then ``friend_added`` follows) or declined my request."""
    user_id: int | None
    accepted: bool = False
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    type: ClassVar[str] = "friend_request_answered"


@dataclass(frozen=True)
class FriendRequests:
    """Extension: the requests pending for me, after ``connected`` (only when any):
    each a FriendRequest."""
    requests: tuple[FriendRequest, ...] = ()
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    type: ClassVar[str] = "friend_requests"


def _friend_request(d: dict, raw: dict) -> FriendRequest:
    return FriendRequest(_int(d.get("fromUserId")), _str(d.get("username")),
                         _int(d.get("createdAt")), raw)


AnyFrame = Frame | ChatMessage | Ack | ReadReceipt | Presence | Connected | ErrorFrame \
    | TokenExpiring | Pong | SyncComplete | Typing | GroupMessage | GroupRead | GroupUnread \
    | Notice | FriendAdded | FriendRemoved | MessageRecalled | MessageEdited | MessagesDeleted \
    | ConversationsPage | ConversationUpdated | FriendRequest | FriendRequestAnswered \
    | FriendRequests | GroupChanged


def _ints(v: Any) -> tuple[int, ...]:
    return tuple(x for x in v if type(x) is int) if isinstance(v, list) else ()


def _dicts(v: Any) -> tuple[dict, ...]:
    return tuple(x for x in v if isinstance(x, dict)) if isinstance(v, list) else ()


def _ack(d: dict, raw: dict) -> Ack:
    return Ack(_str(d.get("msgId")), _str(d.get("status")), _int(d.get("timestamp")),
               _int(d.get("seq")), d.get("duplicate") is True, raw, _int(d.get("groupId")))


def _read(d: dict, raw: dict) -> ReadReceipt:
    ids = d.get("msgIds")
    ids = tuple(i for i in ids if isinstance(i, str)) if isinstance(ids, list) else ()
    return ReadReceipt(_int(d.get("peerId")), ids, _int(d.get("timestamp")), raw,
                       own=d.get("own") is True)


def _connected(d: dict, raw: dict) -> Connected:
    friends = d.get("onlineFriends")
    friends = tuple(f for f in friends if type(f) is int) if isinstance(friends, list) else ()
    return Connected(_int(d.get("userId")), _int(d.get("onlineCount")), friends,
                     _int(d.get("unreadPushed")), _int(d.get("serverTime")), raw)


# type -> parser of a dict ``data``: the one table a new server frame type is added to
_PARSERS: dict[str, Callable[[dict, dict], AnyFrame]] = {
    "chat": ChatMessage.from_data,
    "ack": _ack,
    "read": _read,
    "typing": lambda d, raw: Typing(_int(d.get("fromUserId")), _str(d.get("state")),
                                    _int(d.get("timestamp")), raw, group_id=_int(d.get("groupId"))),
    "groupchat": GroupMessage.from_data,
    "group_read": lambda d, raw: GroupRead(_int(d.get("groupId")), _int(d.get("userId")),
                                           _int(d.get("seq")), raw),
    "group_unread": lambda d, raw: GroupUnread(_dicts(d.get("groups")), raw),
    "group_changed": lambda d, raw: GroupChanged(
        _int(d.get("groupId")), _str(d.get("change")), _int(d.get("byUserId")),
        _int(d.get("userId")), _str(d.get("role")), _int(d.get("until")), _str(d.get("name")),
        raw, tuple(u for u in d.get("userIds") or () if _int(u) is not None)
        if isinstance(d.get("userIds"), list) else (), _int(d.get("ownerId"))),
    "online": lambda d, raw: Presence(_int(d.get("userId")), True, _int(d.get("timestamp")), raw),
    "offline": lambda d, raw: Presence(_int(d.get("userId")), False, _int(d.get("timestamp")), raw),
    "connected": _connected,
    "error": lambda d, raw: ErrorFrame(_str(d.get("msgId")), _str(d.get("code")),
                                       _str(d.get("message")), raw),
    "token_expiring": lambda d, raw: TokenExpiring(_int(d.get("expiresAt")), raw),
    "sync_complete": lambda d, raw: SyncComplete(_str(d.get("requestId")),
                                                 _dicts(d.get("conversations")), raw,
                                                 _int(d.get("serverTime"))),
    "message_recalled": lambda d, raw: MessageRecalled(
        _str(d.get("msgId")), _int(d.get("fromUserId")), _int(d.get("toUserId")),
        _int(d.get("seq")), _int(d.get("recalledAt")), raw, _int(d.get("groupId"))),
    "message_edited": lambda d, raw: MessageEdited(
        _str(d.get("msgId")), _int(d.get("fromUserId")), _int(d.get("toUserId")),
        _int(d.get("seq")), _str(d.get("content")),
        d.get("contentType") if type(d.get("contentType")) is int else 1,
        _int(d.get("editedAt")), raw, _int(d.get("groupId"))),
    "messages_deleted": lambda d, raw: MessagesDeleted(
        _int(d.get("peerId")), tuple(i for i in d.get("msgIds") or () if isinstance(i, str))
        if isinstance(d.get("msgIds"), list) else (), raw),
    "notice": lambda d, raw: Notice(_str(d.get("event")), d.get("data"),
                                    _int(d.get("timestamp")), raw),
    "friend_added": lambda d, raw: FriendAdded(_int(d.get("userId")), _str(d.get("username")),
                                               d.get("online") is True, raw),
    "friend_removed": lambda d, raw: FriendRemoved(_int(d.get("userId")), raw),
    "conversations": ConversationsPage.from_data,
    "conversation_updated": lambda d, raw: ConversationUpdated(
        _int(d.get("peerId")), _int(d.get("groupId")), d.get("muted") is True,
        d.get("pinned") is True, raw),
    "friend_request": _friend_request,
    "friend_request_answered": lambda d, raw: FriendRequestAnswered(
        _int(d.get("userId")), d.get("accepted") is True, raw),
    "friend_requests": lambda d, raw: FriendRequests(
        tuple(_friend_request(r, r) for r in _dicts(d.get("requests"))), raw),
}


def parse_frame(obj: dict) -> AnyFrame:
    """A typed frame from a decoded server frame ``{"type": ..., "data": ...}``."""
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ValueError('a frame is a JSON object with a string "type"')
    d = obj.get("data")
    if kind == "pong":
        return Pong(obj)
    parser = _PARSERS.get(kind)
    if parser is None or not isinstance(d, dict):
        return Frame(kind, d, obj)
    return parser(d, obj)


def decode(payload: bytes | str) -> dict | None:
    """A server text message as ``{"type": str, ...}``, or None when it is not one."""
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) and isinstance(obj.get("type"), str) else None
