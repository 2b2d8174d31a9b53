"""The before-send hook (PROTOCOL.md 9.4), a ChatScreen of chat.py and groups.py.

Every client chat and groupchat, validated and not yet stored, is POSTed to
Hooks.BeforeSend.Url as ``{fromUserId, toUserId | groupId, msgId, content,
contentType}`` (signed as the webhooks are, when Webhooks.Secret is set). The
answer decides: ``{allow: true}`` stores it as sent, ``{allow: true, content}``
stores the replacement, ``{allow: false, reason}`` refuses it (`error`
`rejected`, nothing stored). A timeout, a connection error, a non-2xx or an
unreadable answer follows OnError: ``allow`` stores it as sent, ``reject``
answers `unavailable` (the client may resend).

One call per chat; a burst of chats from one connection is asked concurrently.
A resend of a chat that was allowed is not asked again: the verdict is
remembered under (fromUserId, msgId) -- through the hub, so in a cluster a resend
to another node finds it too -- and applied as it was (the Message service then
answers `duplicate` with the stored original).
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import gevent
import orjson
import requests

from skyeim.config import BeforeSendConfig
from skyeim.gateway.frames.codec import FrameError
from skyeim.gateway.routing.hub import Hub
from skyeim.metrics import GatewayMetrics
from skyeim.protocol import ErrorCode
from skyeim.protocol.signatures import HEADER, sign

log = logging.getLogger(__name__)

VERDICT_TTL = 24 * 3600       # s an allowed chat's verdict is remembered (resends come sooner)
MAX_REASON = 200              # characters of a refusal's reason passed to the client


class HookError(Exception):
    """The hook failed: a timeout, a connection error, a non-2xx or a bad answer."""


class BeforeSendHook:
    def __init__(self, cfg: BeforeSendConfig, secret: str, hub: Hub, metrics: GatewayMetrics,
                 max_content_length: int):
        self.cfg, self.secret, self.hub = cfg, secret, hub
        self.latency = {k: metrics.hook_latency.labels(k)
                        for k in ("allow", "rewrite", "refuse", "error")}
        self.max_content_length = max_content_length
        self.http = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64)
        self.http.mount("http://", adapter)
        self.http.mount("https://", adapter)
        self._failures = 0

    # ChatScreen
    def screen(self, drafts: list[dict],
               msg_ids: Sequence[str | None]) -> list[dict | FrameError]:
        if len(drafts) == 1:
            return [self._one(drafts[0], msg_ids[0])]
        jobs = [gevent.spawn(self._one, d, m) for d, m in zip(drafts, msg_ids)]
        gevent.joinall(jobs)
        return [j.value if j.successful() else
                FrameError(ErrorCode.INTERNAL, "internal error", m)
                for j, m in zip(jobs, msg_ids)]

    def _one(self, draft: dict, msg_id: str | None) -> dict | FrameError:
        key = self._key(draft)
        remembered = self.hub.recall(key)
        if remembered is not None:            # a resend of an allowed chat: not asked again
            return {**draft, "content": remembered} if remembered != draft["content"] else draft
        t0 = time.perf_counter()
        try:
            answer = self._ask(draft)
        except HookError as e:
            self.latency["error"].observe(time.perf_counter() - t0)
            self._failures += 1
            if self._failures % 100 == 1:
                log.warning("before-send hook failed (%s); OnError=%s (%d failures so far)",
                            e, self.cfg.on_error, self._failures)
            if self.cfg.on_error == "reject":
                return FrameError(ErrorCode.UNAVAILABLE,
                                  "the before-send hook is unavailable; retry", msg_id)
            # stored as sent: a resend of it must not be asked later (and perhaps refused)
            self.hub.remember(key, draft["content"], VERDICT_TTL)
            return draft
        elapsed = time.perf_counter() - t0
        if answer.get("allow") is not True:
            self.latency["refuse"].observe(elapsed)
            reason = answer.get("reason")
            reason = reason[:MAX_REASON] if isinstance(reason, str) and reason else "refused"
            return FrameError(ErrorCode.REJECTED, reason, msg_id)
        content = answer.get("content")
        if isinstance(content, str) and content != draft["content"]:
            self.latency["rewrite"].observe(elapsed)
            draft = {**draft, "content": content}
        else:
            self.latency["allow"].observe(elapsed)
        self.hub.remember(key, draft["content"], VERDICT_TTL)
        return draft

    def _ask(self, draft: dict) -> dict:
        body = orjson.dumps({k: draft[k] for k in ("fromUserId", "toUserId", "groupId", "msgId",
                                                   "content", "contentType") if k in draft})
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers[HEADER] = sign(body, self.secret)
        limit = self.cfg.timeout / 1000
        try:
            # requests' timeout bounds the connect and each read; gevent's, the whole call
            with gevent.Timeout(limit, HookError(f"no answer within {self.cfg.timeout} ms")):
                resp = self.http.post(self.cfg.url, data=body, headers=headers, timeout=limit)
        except requests.RequestException as e:
            raise HookError(type(e).__name__) from None
        if not 200 <= resp.status_code < 300:
            raise HookError(f"HTTP {resp.status_code}")
        try:
            answer = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise HookError("an answer that is not JSON") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
            raise HookError('an answer without "allow": true or false')
        content = answer.get("content")
        if content is not None and (not isinstance(content, str) or not content or
                                    len(content) > self.max_content_length):
            raise HookError("a replacement content that is not a valid chat content")
        return answer

    @staticmethod
    def _key(draft: dict) -> str:
        # the target too: a groupchat that reuses a 1:1 chat's msgId is another message
        target = f"g{draft['groupId']}" if "groupId" in draft else f"u{draft.get('toUserId')}"
        return f"hook:{draft['fromUserId']}:{draft['msgId']}:{target}"
