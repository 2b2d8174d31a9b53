"""ServerApi: the gateway's /server/v1 calls (PROTOCOL.md 9.2) over requests,
each with a timeout; a failed call raises ServerApiError with the gateway's
``status``, ``code`` and ``message`` (``status`` 0 when the gateway was not reached)."""
from __future__ import annotations

from typing import Any, Iterable

import requests

DEFAULT_TIMEOUT = 5.0          # s per call (connect and read)


class ServerApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class ServerApi:
    def __init__(self, base_url: str, key: str, *, timeout: float = DEFAULT_TIMEOUT,
                 session: requests.Session | None = None):
        """``base_url``: the gateway's, e.g. http://127.0.0.1:10300; ``key``: ServerApi.Key."""
        self.base = base_url.rstrip("/") + "/server/v1"
        self.timeout = timeout
        self.session = session or requests.Session()
        self.headers = {"X-Api-Key": key}

    def _call(self, method: str, path: str, *, json: Any = None,
              params: dict | None = None) -> dict:
        try:
            resp = self.session.request(method, self.base + path, json=json, params=params,
                                        headers=self.headers, timeout=self.timeout)
        except requests.RequestException as e:
            raise ServerApiError(0, "unavailable", f"the gateway was not reached: {e}") from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code != 200 or not isinstance(body, dict):
            body = body if isinstance(body, dict) else {}
            raise ServerApiError(resp.status_code, str(body.get("code", "error")),
                                 str(body.get("message", resp.text[:200])))
        return body

    def send_message(self, from_user_id: int, to_user_id: int, content: str, *,
                     content_type: int | None = None, msg_id: str | None = None) -> dict:
        """A chat from ``from_user_id`` (a bot or system account), stored and delivered:
        {msgId, seq, createdAt, duplicate, delivered}. Resend with the same ``msg_id``
        after a failure: it is stored once."""
        body: dict = {"fromUserId": from_user_id, "toUserId": to_user_id, "content": content}
        if content_type is not None:
            body["contentType"] = content_type
        if msg_id is not None:
            body["msgId"] = msg_id
        return self._call("POST", "/messages", json=body)

    def notice(self, event: str, data: Any = None, *, user_ids: Iterable[int] | None = None,
               everyone: bool = False) -> int:
        """A transient ``notice {event, data}`` to the live connections of ``user_ids``
        (or of ``everyone``); how many connections it was queued to."""
        if everyone == (user_ids is not None):
            raise ValueError("give user_ids or everyone=True (one of them)")
        body: dict = {"event": event, "data": data}
        if everyone:
            body["all"] = True
        else:
            body["userIds"] = list(user_ids)
        return self._call("POST", "/notices", json=body)["connections"]

    def disconnect(self, user_id: int) -> int:
        """Close every connection of ``user_id`` with 4003; how many there were."""
        return self._call("POST", "/disconnect", json={"userId": user_id})["connections"]

    def online(self, user_ids: Iterable[int]) -> list[int]:
        """Those of ``user_ids`` (1 to 1000) with a live connection now."""
        ids = ",".join(str(int(u)) for u in user_ids)
        return self._call("GET", "/presence", params={"userIds": ids})["online"]

    def stats(self) -> dict:
        """{onlineUsers, connections} for the whole cluster."""
        return self._call("GET", "/stats")

    def add_friend(self, user_id: int, friend_id: int) -> None:
        self._call("POST", "/friends", json={"userId": user_id, "friendId": friend_id})

    def remove_friend(self, user_id: int, friend_id: int) -> None:
        self._call("DELETE", f"/friends/{int(user_id)}/{int(friend_id)}")

    def close(self) -> None:
        self.session.close()
