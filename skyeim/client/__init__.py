"""The SkyeIM Python client SDK: a blocking WebSocket ``Client`` (reconnects and
resends by itself), the REST ``Api``, typed frames and exceptions. The CLI is
``python -m skyeim.client``. Needs ``websocket-client`` and ``requests``, and of the
rest of skyeim only ``skyeim.protocol`` (the codes and id rules of the contract).

    from skyeim.client import Api, Client
    api = Api("http://127.0.0.1:10300")
    login = api.login("alice", "correct horse")
    with Client("http://127.0.0.1:10300", token=login.token) as c:
        c.send_chat(2, "hello", wait="delivered")
        for frame in c:
            print(frame)
"""
from .api import Api, Blocked, Friend, HistoryPage, Login, PendingRequest
from .backoff import Backoff, RateLimiter
from .errors import (AckTimeout, ApiError, AuthError, BadRequest, ChatError, ClientClosed,
                     ConnectFailed, ConnectionClosed, Conflict, ForbiddenOrigin,
                     HandshakeRefused, NotConnected, NotFound, OutboxFull, Overloaded,
                     ReconnectFailed, Replaced, ServiceUnavailable, SkyeIMError, TokenExpired,
                     TokenRefused, TooManyDevices, Unauthorized)
from .frames import (Ack, AnyFrame, ChatMessage, Connected, Conversation, ConversationsPage,
                     ConversationUpdated, ErrorFrame, Frame, FriendAdded, FriendRemoved,
                     FriendRequest, FriendRequestAnswered, FriendRequests, GroupChanged,
                     GroupMessage, GroupRead, GroupUnread, MessageEdited, MessageRecalled,
                     MessagesDeleted, Notice, Pong, Presence, ReadReceipt, SyncComplete,
                     TokenExpiring, Typing, parse_frame)
from .ws import Client, SendResult, ws_url

__all__ = [
    "Api", "Friend", "HistoryPage", "Login", "Backoff", "RateLimiter", "Client", "SendResult",
    "ws_url", "Ack", "AnyFrame", "ChatMessage", "Connected", "Conversation", "ConversationsPage",
    "ConversationUpdated", "ErrorFrame", "Frame", "Pong",
    "GroupChanged", "GroupMessage", "GroupRead", "GroupUnread", "Notice", "FriendAdded", "FriendRemoved",
    "MessageRecalled", "MessageEdited", "MessagesDeleted",
    "FriendRequest", "FriendRequestAnswered", "FriendRequests", "PendingRequest", "Blocked",
    "Presence", "ReadReceipt", "SyncComplete", "TokenExpiring", "Typing", "parse_frame", "AckTimeout",
    "ApiError",
    "AuthError", "BadRequest", "ChatError", "ClientClosed", "ConnectFailed", "ConnectionClosed",
    "Conflict", "ForbiddenOrigin", "HandshakeRefused", "NotConnected", "NotFound", "OutboxFull",
    "Overloaded", "ReconnectFailed", "Replaced", "ServiceUnavailable", "SkyeIMError",
    "TokenExpired", "TokenRefused", "TooManyDevices", "Unauthorized",
]
