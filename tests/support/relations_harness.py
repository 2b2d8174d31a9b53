"""Helpers for the friend request and block tests (docs/protocol.md "Friend requests
and blocking"): the REST calls with their expected answers. ``at`` is anything
with ``api(method, path, user, json=...)``-like access: a System or a cluster Node."""
from __future__ import annotations

from typing import Any


def _api(at: Any, method: str, path: str, user, body: Any = None):
    if hasattr(at, "session") and hasattr(at, "ws_config"):        # a System
        return at.api(method, path, user, **({"json_body": body} if body is not None else {}))
    return at.api(method, path, user, **({"json": body} if body is not None else {}))


def call(at: Any, method: str, path: str, user, body: Any = None, status: int = 200) -> Any:
    r = _api(at, method, path, user, body)
    assert r.status_code == status, f"{method} {path} as {user}: {r.status_code} {r.text}"
    return r.json()


def request_friend(at: Any, a, b, status: str = "requested") -> dict:
    answer = call(at, "POST", "/api/friends", a, {"friendId": b.id})
    assert answer == {"ok": True, "status": status}, answer
    return answer


def accept(at: Any, user, requester, status: int = 200) -> Any:
    return call(at, "POST", f"/api/friends/requests/{requester.id}/accept", user, status=status)


def decline(at: Any, user, requester, status: int = 200) -> Any:
    return call(at, "POST", f"/api/friends/requests/{requester.id}/decline", user, status=status)


def requests_of(at: Any, user) -> dict:
    return call(at, "GET", "/api/friends/requests", user)


def block(at: Any, user, other) -> None:
    assert call(at, "POST", "/api/blocks", user, {"userId": other.id}) == {"ok": True}


def unblock(at: Any, user, other) -> None:
    assert call(at, "DELETE", f"/api/blocks/{other.id}", user) == {"ok": True}


def blocked_ids(at: Any, user) -> list[int]:
    return [b["userId"] for b in call(at, "GET", "/api/blocks", user)["blocked"]]


def friend_ids(at: Any, user) -> list[int]:
    return [f["userId"] for f in call(at, "GET", "/api/friends", user)["friends"]]
