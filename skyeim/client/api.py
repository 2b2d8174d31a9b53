"""The gateway's client REST API (PROTOCOL.md section 7) over ``requests``.

Every call has a timeout; a refusal raises the ``ApiError`` subclass for its
status (``BadRequest``, ``AuthError``, ``NotFound``, ``Conflict``,
``ServiceUnavailable``) carrying the contract's ``code`` and ``message``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

from skyeim.protocol import ErrorCode

from .errors import ApiError, api_error
from .files import Source, open_source
from .frames import ChatMessage, ConversationsPage, GroupMessage


@dataclass(frozen=True)
class Login:
    token: str
    user_id: int
    expires_at: int            # ms since the epoch


@dataclass(frozen=True)
class Friend:
    user_id: int
    username: str | None       # None when the Auth service no longer knows the user
    online: bool


@dataclass(frozen=True)
class PendingRequest:
    """A friend request (docs/protocol.md "Friend requests and blocking"): from
    ``user_id`` (incoming) or to it (outgoing)."""
    user_id: int
    username: str | None
    created_at: int | None


@dataclass(frozen=True)
class Blocked:
    user_id: int
    username: str | None
    created_at: int | None


@dataclass(frozen=True)
class HistoryPage:
    messages: list[ChatMessage]    # newest first, each with ``status``
    has_more: bool

    @property
    def next_before(self) -> int | None:
        """``before_seq`` for the next (older) page, or None on the last page."""
        if not self.has_more or not self.messages:
            return None
        return min(m.seq for m in self.messages if m.seq is not None)


class Api:
    """``Api("http://127.0.0.1:10300")``; ``login()`` keeps the token for later calls.
    ``ca_file``: for an ``https://`` URL, a PEM file of the CA(s) to trust instead
    of the system's store (a private CA in front of the gateway)."""

    def __init__(self, base_url: str = "http://127.0.0.1:10300", token: str | None = None,
                 timeout: float = 10.0, session: requests.Session | None = None,
                 ca_file: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = session or requests.Session()
        # per request: requests lets $REQUESTS_CA_BUNDLE override a Session's verify
        self.verify: str | bool = str(ca_file) if ca_file else True

    def __repr__(self) -> str:
        return f"<Api {self.base_url}>"

    def _call(self, method: str, path: str, *, json: Any = None, params: dict | None = None,
              auth: bool = True, files: dict | None = None, raw: bool = False,
              headers: dict | None = None) -> Any:
        headers = dict(headers or {})
        if auth:
            if not self.token:
                raise api_error(401, ErrorCode.UNAUTHORIZED, "log in first (no token)")
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            r = self.session.request(method, self.base_url + path, json=json, params=params,
                                     headers=headers, timeout=self.timeout, verify=self.verify,
                                     files=files)
        except requests.RequestException as e:
            raise api_error(None, "unreachable", f"{self.base_url}: {type(e).__name__}") from None
        if raw and r.status_code in (200, 206):
            return r
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code != 200:
            code, message = f"http_{r.status_code}", (r.text or "")[:200]
            if isinstance(body, dict):
                code = body.get("code") if isinstance(body.get("code"), str) else code
                message = body.get("message") if isinstance(body.get("message"), str) else ""
            raise api_error(r.status_code, code, message)
        if not isinstance(body, dict):
            raise ApiError(r.status_code, "bad_response", "the answer is not a JSON object")
        return body

    # -- accounts ------------------------------------------------------------------------------
    def register(self, username: str, password: str) -> int:
        """Create a user; returns the new user id (``Conflict`` if the name is taken)."""
        return self._call("POST", "/api/register",
                          json={"username": username, "password": password}, auth=False)["userId"]

    def login(self, username: str, password: str) -> Login:
        """Get a token (kept in ``self.token``); ``AuthError`` for wrong credentials."""
        b = self._call("POST", "/api/login", json={"username": username, "password": password},
                       auth=False)
        self.token = b["token"]
        return Login(b["token"], b["userId"], b["expiresAt"])

    # -- friends -------------------------------------------------------------------------------
    def friends(self) -> list[Friend]:
        b = self._call("GET", "/api/friends")
        return [Friend(f.get("userId"), f.get("username"), bool(f.get("online")))
                for f in b.get("friends", [])]

    def add_friend(self, friend: int | str) -> None:
        """Befriend a user by id (int) or by username (str); ``NotFound`` if unknown."""
        if isinstance(friend, bool):
            raise ValueError("friend must be a user id or a username")
        body = {"friendId": friend} if isinstance(friend, int) else {"username": friend}
        self._call("POST", "/api/friends", json=body)

    def remove_friend(self, friend_id: int) -> None:
        self._call("DELETE", f"/api/friends/{int(friend_id)}")

    def request_friend(self, friend: int | str) -> str:
        """``add_friend`` that says what happened: "friends" (befriended, at once or
        because they had asked me), or "requested" (Friends.RequireAcceptance: they
        must accept); ``Conflict`` when I blocked them."""
        if isinstance(friend, bool):
            raise ValueError("friend must be a user id or a username")
        body = {"friendId": friend} if isinstance(friend, int) else {"username": friend}
        return self._call("POST", "/api/friends", json=body).get("status", "friends")

    # -- friend requests and blocks (extension: docs/protocol.md) ------------------------------
    def friend_requests(self) -> tuple[list[PendingRequest], list[PendingRequest]]:
        """(incoming, outgoing) pending requests, oldest first."""
        b = self._call("GET", "/api/friends/requests")
        return tuple([PendingRequest(r.get("userId"), r.get("username"), r.get("createdAt"))
                      for r in b.get(side, []) if isinstance(r, dict)]
                     for side in ("incoming", "outgoing"))

    def accept_friend(self, user_id: int) -> None:
        """Accept ``user_id``'s request (``NotFound`` when none is pending)."""
        self._call("POST", f"/api/friends/requests/{int(user_id)}/accept")

    def decline_friend(self, user_id: int) -> None:
        self._call("POST", f"/api/friends/requests/{int(user_id)}/decline")

    def blocks(self) -> list[Blocked]:
        b = self._call("GET", "/api/blocks")
        return [Blocked(x.get("userId"), x.get("username"), x.get("createdAt"))
                for x in b.get("blocked", []) if isinstance(x, dict)]

    def block(self, user_id: int) -> None:
        """Block ``user_id``: unfriends us; their chats, typing, requests and presence
        no longer reach me (nor mine them)."""
        self._call("POST", "/api/blocks", json={"userId": int(user_id)})

    def unblock(self, user_id: int) -> None:
        self._call("DELETE", f"/api/blocks/{int(user_id)}")

    # -- messages ------------------------------------------------------------------------------
    def history(self, peer_id: int, limit: int | None = None,
                before_seq: int | None = None) -> HistoryPage:
        """The conversation with ``peer_id``, newest first (``before_seq`` exclusive)."""
        params: dict[str, Any] = {"peerId": peer_id}
        if limit is not None:
            params["limit"] = limit
        if before_seq is not None:
            params["beforeSeq"] = before_seq
        b = self._call("GET", "/api/messages", params=params)
        return HistoryPage([ChatMessage.from_data(m) for m in b.get("messages", [])
                            if isinstance(m, dict)], bool(b.get("hasMore")))

    # -- groups (extension: docs/protocol.md "Groups") -----------------------------------------
    def groups(self) -> list[dict]:
        """My groups: ``{groupId, name, ownerId, createdAt, role, readSeq, lastSeq}`` each."""
        return self._call("GET", "/api/groups").get("groups", [])

    def create_group(self, name: str, member_ids: list[int] = ()) -> int:
        """A new group owned by me; returns its id (``NotFound`` for an unknown member)."""
        return self._call("POST", "/api/groups",
                          json={"name": name, "memberIds": list(member_ids)})["groupId"]

    def invite(self, group_id: int, user_ids: list[int]) -> list[int]:
        """Add users (I must be a member); returns those newly added."""
        return self._call("POST", f"/api/groups/{int(group_id)}/members",
                          json={"userIds": list(user_ids)}).get("added", [])

    def leave_group(self, group_id: int) -> None:
        self._call("POST", f"/api/groups/{int(group_id)}/leave")

    def group_members(self, group_id: int, limit: int | None = None,
                      after_user_id: int | None = None) -> tuple[list[dict], bool]:
        """A page of ``{userId, username, role, readSeq, online}``, and whether more follow."""
        params: dict[str, Any] = {}
        if limit is not None:
            params["limit"] = limit
        if after_user_id is not None:
            params["afterUserId"] = after_user_id
        b = self._call("GET", f"/api/groups/{int(group_id)}/members", params=params)
        return b.get("members", []), bool(b.get("hasMore"))

    def group_history(self, group_id: int, limit: int | None = None,
                      before_seq: int | None = None) -> tuple[list[GroupMessage], bool]:
        """The group's messages, newest first (``before_seq`` exclusive), and hasMore."""
        params: dict[str, Any] = {}
        if limit is not None:
            params["limit"] = limit
        if before_seq is not None:
            params["beforeSeq"] = before_seq
        b = self._call("GET", f"/api/groups/{int(group_id)}/messages", params=params)
        return ([GroupMessage.from_data(m) for m in b.get("messages", []) if isinstance(m, dict)],
                bool(b.get("hasMore")))

    # -- group administration (extension: docs/protocol.md "Group administration") ------------
    # Each raises ApiError (status 403) when my role may not, NotFound for one not a member.
    def set_group_role(self, group_id: int, user_id: int, role: str) -> dict:
        """The owner makes a member an ``admin`` or an admin a ``member``: {userId, role, changed}."""
        return self._call("PUT", f"/api/groups/{int(group_id)}/members/{int(user_id)}/role",
                          json={"role": role})

    def kick(self, group_id: int, user_id: int) -> dict:
        """The owner or an admin removes a member (an admin: not another admin)."""
        return self._call("DELETE", f"/api/groups/{int(group_id)}/members/{int(user_id)}")

    def mute_member(self, group_id: int, user_id: int, seconds: int) -> int:
        """Mute a group member for ``seconds`` (0 lifts it); returns mutedUntil (ms, 0: not
        muted). (``mute`` mutes a conversation's notifications: the conversation list.)"""
        return self._call("POST", f"/api/groups/{int(group_id)}/members/{int(user_id)}/mute",
                          json={"seconds": seconds})["mutedUntil"]

    def rename_group(self, group_id: int, name: str) -> dict:
        """The owner or an admin renames the group; returns the group."""
        return self._call("PATCH", f"/api/groups/{int(group_id)}", json={"name": name})

    def dismiss_group(self, group_id: int) -> list[int]:
        """The owner deletes the group; returns who its members were."""
        return self._call("DELETE", f"/api/groups/{int(group_id)}").get("memberIds", [])

    # -- files (extension: docs/protocol.md "Files, images and voice") ------------------------
    def upload_file(self, source: Source, name: str | None = None) -> dict:
        """Upload a file (a path, or bytes named ``name``): ``{fileId, name, size, mime,
        width?, height?, url, thumbnailUrl?, expiresAt}``. Its type is sniffed by the
        gateway; ``ApiError`` 413 (too large) or 415 (a type it does not take)."""
        name, body = open_source(source, name)
        try:
            return self._call("POST", "/api/files", files={"file": (name, body)})
        finally:
            if hasattr(body, "close"):
                body.close()

    def file_link(self, file_id: str) -> dict:
        """The file's record with fresh signed URLs (``url``, ``thumbnailUrl``) that work
        without a token until ``expiresAt``; ``NotFound`` when not mine to read."""
        return self._call("GET", f"/api/files/{file_id}/link")

    def download_file(self, file_id: str, thumbnail: bool = False,
                      byte_range: tuple[int, int] | None = None) -> bytes:
        """The file's bytes (or its thumbnail's; or bytes ``start`` to ``end`` inclusive)."""
        path = f"/api/files/{file_id}" + ("/thumbnail" if thumbnail else "")
        headers = {"Range": f"bytes={byte_range[0]}-{byte_range[1]}"} if byte_range else None
        return self._call("GET", path, raw=True, headers=headers).content
    # -- the conversation list (extension: docs/protocol.md "Conversation list") -------------
    def conversations(self, limit: int | None = None,
                      before: str | None = None) -> ConversationsPage:
        """A page of my 1:1 and group conversations, pinned first, then newest first;
        ``before`` is the ``next_cursor`` of the previous page."""
        params: dict[str, Any] = {}
        if limit is not None:
            params["limit"] = limit
        if before:
            params["before"] = before
        return ConversationsPage.from_data(self._call("GET", "/api/conversations", params=params))

    def all_conversations(self, page_size: int = 200) -> list:
        """Every conversation, page after page (a bounded number of pages)."""
        items, cursor = [], None
        for _ in range(10_000):
            page = self.conversations(page_size, cursor)
            items += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
        return items

    def mute(self, peer_id: int | None = None, group_id: int | None = None,
             muted: bool = True) -> dict:
        """Mute (or unmute) the conversation with ``peer_id`` or of ``group_id``."""
        return self._flag("mute", "muted", peer_id, group_id, muted)

    def pin(self, peer_id: int | None = None, group_id: int | None = None,
            pinned: bool = True) -> dict:
        """Pin (or unpin) the conversation with ``peer_id`` or of ``group_id``."""
        return self._flag("pin", "pinned", peer_id, group_id, pinned)

    def _flag(self, what: str, field: str, peer_id: int | None, group_id: int | None,
              value: bool) -> dict:
        if (peer_id is None) == (group_id is None):
            raise ValueError("give peer_id or group_id")
        target = {"peerId": peer_id} if peer_id is not None else {"groupId": group_id}
        return self._call("POST", f"/api/conversations/{what}", json={**target, field: bool(value)})

    # -- health --------------------------------------------------------------------------------
    def ready(self) -> bool:
        """True when ``/readyz`` answers 200 (the gateway and its backends serve)."""
        try:
            return self.session.get(self.base_url + "/readyz", timeout=self.timeout).status_code == 200
        except requests.RequestException:
            return False
