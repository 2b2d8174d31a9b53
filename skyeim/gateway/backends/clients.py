"""Blocking HTTP clients for the Message, Friend and Auth services (PROTOCOL.md section 6).

Plain ``requests`` Sessions; gevent's monkey-patching makes them cooperative.
Each service may have several endpoints: calls rotate over them and skip one
that fails. Every call has the configured timeout.
"""
from __future__ import annotations

import itertools
import logging
import time
from typing import Any, Callable

import requests
from gevent.pool import Pool
from requests.adapters import HTTPAdapter

from skyeim.config import OptionalEndpointsConfig, RpcConfig
from skyeim.gateway.backends.batching import Batcher, BatchOverflow, BatchTimeout
from skyeim.gateway.backends.breaker import EndpointBreakers
from skyeim.metrics import GatewayMetrics
from skyeim.protocol import ErrorCode

log = logging.getLogger(__name__)


class BackendUnavailable(Exception):
    """No endpoint answered in time, or every one answered 5xx."""


class BackendRejected(Exception):
    """The service refused the call (4xx) with the contract's {code, message}."""

    def __init__(self, status: int, code: str, message: str, retry_after: str | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after      # the Retry-After header of a 429


BackendFailure = (BackendUnavailable, BackendRejected)     # what a call may raise

# How many section 6 calls one fallback batch makes at once (OptionalEndpoint)
FALLBACK_CONCURRENCY = 16


class OptionalEndpoint:
    """An endpoint beyond PROTOCOL.md section 6 (a batch call): an optimisation that a
    team's own service may lack (section 9.1). When it answers 404 or 405, callers
    fall back to the section 6 calls, the log says so once, and every
    ``probe_interval`` seconds one call tries it again; when it answers, it is
    used again (one more line)."""

    def __init__(self, service: str, method: str, path: str, probe_interval: float,
                 clock: Callable[[], float] = time.monotonic):
        self.service, self.method, self.path = service, method, path
        self.probe_interval = probe_interval
        self.clock = clock
        self.missing = False
        self._next_probe = 0.0

    def __repr__(self) -> str:
        return f"{self.method} {self.path}"

    def wanted(self) -> bool:
        """Whether to call it now: while present, and once per probe interval while missing."""
        if not self.missing:
            return True
        now = self.clock()
        if now < self._next_probe:
            return False
        self._next_probe = now + self.probe_interval
        return True

    def absent(self, error: BaseException) -> bool:
        """Whether ``error`` says the service lacks it (404, 405): then it is missing."""
        if not isinstance(error, BackendRejected) or error.status not in (404, 405):
            return False
        if not self.missing:
            self.missing = True
            self._next_probe = self.clock() + self.probe_interval
            log.warning("%s service has no %s %s (HTTP %s): using the section 6 calls "
                        "instead, trying it again every %gs", self.service, self.method,
                        self.path, error.status, self.probe_interval)
        return True

    def present(self) -> None:
        """It answered: use it again."""
        if self.missing:
            self.missing = False
            log.info("%s service answers %s %s again: using it", self.service, self.method,
                     self.path)


def each(fn: Callable[[Any], Any], items: list, concurrency: int = FALLBACK_CONCURRENCY) -> list:
    """``fn(item)`` for every item, ``concurrency`` at once, in their order: each one's
    result, or the BackendFailure it raised (a fallback batch answers like a batch)."""
    def one(item: Any) -> Any:
        try:
            return fn(item)
        except BackendFailure as e:
            return e
    if len(items) == 1:
        return [one(items[0])]
    return list(Pool(concurrency).imap(one, items))


class ServiceClient:
    def __init__(self, name: str, rpc: RpcConfig, internal_secret: str = "",
                 metrics: GatewayMetrics | None = None,
                 optional: OptionalEndpointsConfig | None = None):
        self.name = name
        self.metrics = metrics
        self.probe_interval = (optional or OptionalEndpointsConfig()).probe_interval
        self.timeout = rpc.timeout / 1000.0
        self.bases = [ep if ep.startswith("http") else f"http://{ep}" for ep in rpc.endpoints]
        self._turn = itertools.cycle(range(len(self.bases)))
        self.breakers = EndpointBreakers(name, self.bases, rpc.breaker_failures,
                                         rpc.breaker_cooldown_ms, rpc.breaker_max_cooldown_ms,
                                         metrics=metrics)
        self.session = requests.Session()
        # internal calls: no proxy variables or ~/.netrc to consult on every request
        # (that lookup cost more CPU than the call itself)
        self.session.trust_env = False
        # one pool per endpoint, sized so that concurrent greenlets reuse connections
        self.adapter = HTTPAdapter(pool_connections=len(self.bases), pool_maxsize=rpc.pool_size,
                                   pool_block=False, max_retries=0)
        self.session.mount("http://", self.adapter)
        self.session.mount("https://", self.adapter)
        if internal_secret:
            self.session.headers["X-Internal-Secret"] = internal_secret
        self._headers = dict(self.session.headers)

    # batch calls (batching.py): how many of one kind may be in flight, and queue
    BATCH_CONCURRENCY = 4
    BATCH_QUEUE = 20_000

    def _batcher(self, name: str, send_batch, max_batch: int, timeout: float,
                 linger: float = 0.0) -> Batcher:
        return Batcher(name, send_batch, max_batch=max_batch, concurrency=self.BATCH_CONCURRENCY,
                       queue_size=self.BATCH_QUEUE, timeout=timeout, on_batch=self._batch_sent,
                       linger=linger)

    def optional(self, method: str, path: str) -> OptionalEndpoint:
        return OptionalEndpoint(self.name, method, path, self.probe_interval)

    def call_optional(self, endpoint: OptionalEndpoint, **kw: Any) -> dict | None:
        """The answer of an endpoint beyond section 6, or None when the service lacks
        it (404, 405: now, or when last asked and not yet time to probe): then the
        caller uses the section 6 calls. Other failures raise as from ``call``."""
        if not endpoint.wanted():
            return None
        try:
            body = self.call(endpoint.method, endpoint.path, **kw)
        except BackendRejected as e:
            if endpoint.absent(e):
                return None
            raise
        endpoint.present()
        return body

    def _batch_sent(self, name: str, size: int) -> None:
        if self.metrics:
            # the batcher's name ("message sends") as a label value without spaces
            self.metrics.batch_size.labels(name.replace(" ", "_")).observe(size)

    def call(self, method: str, path: str, *, json: Any = None,
             params: dict | None = None, headers: dict | None = None,
             quiet: bool = False) -> dict:
        """The JSON body of a 200 answer; raises BackendUnavailable or BackendRejected.

        Every call here is idempotent by contract, so a failed endpoint is
        retried on the next one. ``quiet``: the caller reports an outage itself
        (once), so no warning per failed call.
        """
        t0 = time.perf_counter()
        try:
            return self._call(method, path, json, params, headers, quiet)
        except BackendUnavailable:
            if self.metrics:
                self.metrics.backend_errors.labels(self.name, "unavailable").inc()
            raise
        except BackendRejected:
            if self.metrics:
                self.metrics.backend_errors.labels(self.name, "rejected").inc()
            raise
        finally:
            if self.metrics:
                self.metrics.backend_latency.labels(self.name).observe(time.perf_counter() - t0)

    def _call(self, method: str, path: str, json: Any, params: dict | None,
              headers: dict | None = None, quiet: bool = False) -> dict:
        first = next(self._turn)
        last_error = "no endpoint"
        for i in range(len(self.bases)):
            base = self.bases[(first + i) % len(self.bases)]
            if not self.breakers.allow(base):
                last_error = f"{base}: circuit open"
                continue
            try:
                resp = self._send(method, base + path, json, params, headers)
            except requests.RequestException as e:
                self.breakers.failure(base)
                last_error = f"{base}: {type(e).__name__}"
                continue
            if resp.status_code >= 500:
                self.breakers.failure(base)
                last_error = f"{base}: HTTP {resp.status_code}"
                continue
            self.breakers.success(base)
            body = _json(resp)
            if resp.status_code != 200:
                raise BackendRejected(resp.status_code, str(body.get("code", "error")),
                                      str(body.get("message", "")), resp.headers.get("Retry-After"))
            return body
        # an open breaker refuses many calls a second: that is logged when it opens
        if not quiet:
            log.log(logging.DEBUG if last_error.endswith("circuit open") else logging.WARNING,
                    "%s service unavailable: %s %s: %s", self.name, method, path, last_error)
        raise BackendUnavailable(f"{self.name} service: {last_error}")

    def _send(self, method: str, url: str, json: Any, params: dict | None,
              headers: dict | None) -> requests.Response:
        """One call through the session's adapter, its body read (the connection back in
        the pool). Not ``Session.request``: for an internal call its cookie jar, hooks,
        redirects and settings merge were about a fifth of the gateway's CPU per call at low rates."""
        prepared = requests.Request(method, url, json=json, params=params,
                                    headers={**self._headers, **headers} if headers else self._headers,
                                    ).prepare()
        resp = self.adapter.send(prepared, timeout=self.timeout)
        resp.content                    # noqa: B018 - reads the body, releasing the connection
        return resp

    def healthy(self, timeout: float = 1.0) -> bool:
        """True when at least one endpoint answers GET /healthz with 200."""
        for base in self.bases:
            try:
                if self.session.get(base + "/healthz", timeout=timeout).status_code == 200:
                    return True
            except requests.RequestException:
                pass
        return False


def _json(resp: requests.Response) -> dict:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# A connecting user's friend list, group list and first unread page may wait this long
# (s) in a reconnect storm, when the event loop is busy with thousands of handshakes:
# skipping them would leave friends without `online` and the backlog for the next connect.
CONNECT_FLOW_WAIT = 15.0


def _batched(batcher: Batcher, item: Any) -> Any:
    """One caller's share of a batch call, with the errors a single call would raise."""
    result = _batched_many(batcher, [item])[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _batched_many(batcher: Batcher, items: list) -> list:
    """Several items in one batch: each one's result, or the BackendFailure it got
    alone; raises BackendUnavailable (or the batch's error) for all of them."""
    try:
        results = batcher.call_many(items)
    except (BatchOverflow, BatchTimeout) as e:
        raise BackendUnavailable(str(e)) from None
    out = []
    for result in results:
        if isinstance(result, BaseException):
            if isinstance(result, BackendFailure):     # this item's own failure
                out.append(result)
                continue
            raise result
        error = result.get("error") if isinstance(result, dict) else None
        out.append(BackendRejected(400, str(error.get("code", ErrorCode.BAD_REQUEST)),
                                   str(error.get("message", ""))) if error is not None else result)
    return out


class MessageService(ServiceClient):
    # Chats and delivery records from many connections go out as batch calls
    # (one HTTP request and one transaction for many chats): see batching.py.
    SEND_BATCH = 256
    DELIVERED_BATCH = 1000          # the service's cap on keys per call
    FIRST_PAGE_BATCH = 500          # users whose first unread page one call fetches (a storm)
    # Batches of each kind in flight at once. The service commits whatever
    # requests are waiting in one transaction (skyeim/message/writer.py), so a
    # second request no longer waits behind the first's transaction: it joins
    # the next commit while the first is answered.
    BATCH_CONCURRENCY = 2
    # No lingering for company: with two requests in flight and the service's group
    # commit, batches grow by themselves under load; a linger only added its 2 ms
    # twice to every chat (1 pair: 10.4 -> 4.3 ms delivered p50; docs/performance.md).
    SEND_LINGER = 0.0

    def __init__(self, name: str, rpc: RpcConfig, internal_secret: str = "",
                 metrics: GatewayMetrics | None = None,
                 optional: OptionalEndpointsConfig | None = None):
        super().__init__(name, rpc, internal_secret, metrics, optional)
        # beyond section 6 (PROTOCOL.md 9.1): each falls back to section 6 calls
        self._send_batch_ep = self.optional("POST", "/v1/messages/batch")
        self._first_pages_ep = self.optional("POST", "/v1/messages/unread/batch")
        self._delivered_ep = self.optional("POST", "/v1/messages/delivered/batch")
        self._conversation_ep = self.optional("GET", "/v1/messages/conversation")
        self._mentions_ep = self.optional("POST", "/v1/groups/mentions")
        # recall and edit of group messages (docs/protocol.md "Recall, edit, delete")
        self._group_recall_ep = self.optional("POST", "/v1/groups/messages/recall")
        self._group_edit_ep = self.optional("POST", "/v1/groups/messages/edit")
        self._group_changes_ep = self.optional("GET", "/v1/groups/changes")
        bound = self.timeout * 2 + 1.0      # queueing behind a full batch, then the call
        self._sends = self._batcher("message sends", self._send_batch, self.SEND_BATCH, bound,
                                    linger=self.SEND_LINGER)
        # first unread pages of connecting users (a reconnect storm), grouped by page size
        self._first_pages: dict[int, Batcher] = {}
        self._first_pages_timeout = max(bound, CONNECT_FLOW_WAIT)
        self._group_lasts = self._batcher("group last seqs", self._group_last_batch,
                                          self.FIRST_PAGE_BATCH, max(bound, CONNECT_FLOW_WAIT))

    def send_many(self, messages: list[dict]) -> list:
        """SendMessage for several bodies ({msgId, fromUserId, toUserId, content,
        contentType}), stored in one batch in their order. Each one's answer (the
        stored ChatMessage plus {duplicate, delivered, deliveredAt}), or the
        BackendRejected it got (see _batched_many)."""
        return _batched_many(self._sends, messages)

    def _send_batch(self, messages: list[dict]) -> list:
        body = self.call_optional(self._send_batch_ep, json={"messages": messages})
        if body is None:
            return self._send_each(messages)
        results = body.get("results")
        if not isinstance(results, list):
            raise BackendUnavailable(f"{self.name} service: a batch answer without results")
        return results

    def _send_each(self, messages: list[dict]) -> list:
        """The section 6 fallback of a send batch: one POST /v1/messages per chat, a
        sender's chats one after another (in their order), senders side by side. After
        a sender's chat fails unavailable, its later ones are not tried (the client
        resends them, in order)."""
        by_sender: dict[int, list[int]] = {}
        for i, m in enumerate(messages):
            by_sender.setdefault(m["fromUserId"], []).append(i)
        out: list = [None] * len(messages)

        def sender_chats(indexes: list[int]) -> None:
            for n, i in enumerate(indexes):
                try:
                    out[i] = self.call("POST", "/v1/messages", json=messages[i])
                except BackendRejected as e:
                    out[i] = e
                except BackendUnavailable as e:
                    for j in indexes[n:]:
                        out[j] = e
                    return

        each(sender_chats, list(by_sender.values()))
        return out

    def _first_page_batch(self, limit: int, user_ids: list[int]) -> list:
        body = self.call_optional(self._first_pages_ep, json={"userIds": user_ids, "limit": limit})
        if body is None:            # section 6: one GET /v1/messages/unread per user
            return each(lambda uid: self.call("GET", "/v1/messages/unread",
                                              params={"userId": uid, "limit": limit}), user_ids)
        pages = body.get("pages")
        if not isinstance(pages, list):
            raise BackendUnavailable(f"{self.name} service: a batch answer without pages")
        return pages

    def close(self) -> None:
        self._sends.stop()
        self._group_lasts.stop()
        for batcher in self._first_pages.values():
            batcher.stop()

    def unread(self, user_id: int, cursor: str | None, limit: int) -> dict:
        if cursor is None:                  # a first page: coalesced with other users'
            batcher = self._first_pages.get(limit)
            if batcher is None:
                batcher = self._first_pages[limit] = self._batcher(
                    "unread first pages", lambda uids: self._first_page_batch(limit, uids),
                    self.FIRST_PAGE_BATCH, self._first_pages_timeout)
            return _batched(batcher, user_id)
        params = {"userId": user_id, "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        return self.call("GET", "/v1/messages/unread", params=params)

    def mark_delivered(self, user_id: int, keys: list[tuple[int, str]]) -> list[dict]:
        body = self.call("POST", "/v1/messages/delivered", json={
            "userId": user_id,
            "messages": [{"fromUserId": f, "msgId": m} for f, m in keys]})
        return body.get("messages", [])

    def mark_delivered_many(self, deliveries: dict[int, list[tuple[int, str]]]) -> dict[int, list[dict]]:
        """mark_delivered for several recipients in one call: recipient -> newly marked."""
        body = self.call_optional(self._delivered_ep, json={"deliveries": [
            {"userId": uid, "messages": [{"fromUserId": f, "msgId": m} for f, m in keys]}
            for uid, keys in deliveries.items()]})
        if body is None:
            return self._mark_delivered_each(deliveries)
        results = body.get("results")
        if not isinstance(results, list) or len(results) != len(deliveries):
            raise BackendUnavailable(f"{self.name} service: a batch answer without results")
        return {uid: r.get("messages", []) for uid, r in zip(deliveries, results)}

    DELIVERED_KEYS = 1000           # section 6's delivered call takes at most this many

    def _mark_delivered_each(self, deliveries: dict[int, list[tuple[int, str]]]) -> dict[int, list[dict]]:
        """The section 6 fallback: one POST /v1/messages/delivered per recipient (and
        per 1000 keys). What could not be recorded stays undelivered (pushed again at
        the next connect); raises only when nothing could be."""
        calls = [(uid, keys[i:i + self.DELIVERED_KEYS]) for uid, keys in deliveries.items()
                 for i in range(0, len(keys), self.DELIVERED_KEYS)]
        answers = each(lambda c: self.mark_delivered(*c), calls)
        out: dict[int, list[dict]] = {uid: [] for uid in deliveries}
        failed = [a for a in answers if isinstance(a, BaseException)]
        if failed and len(failed) == len(answers):
            raise failed[0]
        if failed:
            log.warning("%s service: %d of %d delivery calls failed (%s); those messages are "
                        "pushed again at the next connect", self.name, len(failed), len(answers),
                        failed[0])
        for (uid, _), answer in zip(calls, answers):
            if not isinstance(answer, BaseException):
                out[uid] += answer
        return out

    def mark_read(self, user_id: int, peer_id: int, msg_ids: list[str]) -> dict:
        return self.call("POST", "/v1/messages/read",
                         json={"userId": user_id, "peerId": peer_id, "msgIds": msg_ids})

    def history(self, user_id: int, peer_id: int, before_seq: int | None, limit: int) -> dict:
        params: dict[str, Any] = {"userId": user_id, "peerId": peer_id, "limit": limit}
        if before_seq is not None:
            params["beforeSeq"] = before_seq
        return self.call("GET", "/v1/messages/history", params=params)

    def conversation(self, user_id: int, peer_id: int, after_seq: int, before_seq: int | None,
                     limit: int) -> dict:
        """Sync: the conversation's messages after ``after_seq``, oldest first."""
        params: dict[str, Any] = {"userId": user_id, "peerId": peer_id, "afterSeq": after_seq,
                                  "limit": limit}
        if before_seq is not None:
            params["beforeSeq"] = before_seq
        body = self.call_optional(self._conversation_ep, params=params)
        if body is None:
            return self._conversation_from_history(user_id, peer_id, after_seq, before_seq, limit)
        return body

    HISTORY_LIMIT = 200             # section 6's page cap (PROTOCOL.md conventions)

    def _conversation_from_history(self, user_id: int, peer_id: int, after_seq: int,
                                   before_seq: int | None, limit: int) -> dict:
        """The section 6 fallback of a conversation page: seqs are 1, 2, 3, ... with no
        gaps (section 2), so the page after ``after_seq`` is the history page below
        ``after_seq + limit + 2`` (one more message than asked says hasMore)."""
        limit = min(limit, self.HISTORY_LIMIT - 1)
        bound = after_seq + limit + 2
        if before_seq is not None:
            bound = min(bound, before_seq)
        page = self.history(user_id, peer_id, bound, limit + 1).get("messages", [])
        found = [m for m in reversed(page) if isinstance(m, dict) and
                 isinstance(m.get("seq"), int) and m["seq"] > after_seq]
        return {"messages": found[:limit], "hasMore": len(found) > limit}

    # -- recall, edit, delete for me (docs/protocol.md "Recall, edit, delete"): not in
    # PROTOCOL.md section 6, so a team's own Message service may answer 404 (not_found)

    def recall(self, user_id: int, msg_id: str, window_ms: int) -> dict:
        return self.call("POST", "/v1/messages/recall",
                         json={"userId": user_id, "msgId": msg_id, "windowMs": window_ms})

    def edit(self, user_id: int, msg_id: str, content: str, window_ms: int) -> dict:
        return self.call("POST", "/v1/messages/edit", json={
            "userId": user_id, "msgId": msg_id, "content": content, "windowMs": window_ms})

    def hide(self, user_id: int, peer_id: int, keys: list[tuple[int, str]]) -> list[dict]:
        answer = self.call("POST", "/v1/messages/hide", json={
            "userId": user_id, "peerId": peer_id,
            "messages": [{"fromUserId": f, "msgId": m} for f, m in keys]})
        return answer.get("messages", [])

    def changes(self, user_id: int, peer_id: int, since_ms: int, limit: int) -> dict:
        return self.call("GET", "/v1/messages/changes", params={
            "userId": user_id, "peerId": peer_id, "since": since_ms, "limit": limit})


    # -- groups (docs/protocol.md "Groups"); not batched: one call per group message

    def group_send(self, group_id: int, from_user: int, msg_id: str, content: str,
                   content_type: int, mentions: list[int] | None = None) -> dict:
        body = {"groupId": group_id, "fromUserId": from_user, "msgId": msg_id,
                "content": content, "contentType": content_type}
        if mentions:                # only then: a service without mentions sees what it knew
            body["mentions"] = mentions
        return self.call("POST", "/v1/groups/messages", json=body)

    def group_mentions(self, user_id: int, after: dict[int, int]) -> dict[int, int]:
        """Per group, the messages after seq ``after[group]`` that mention ``user_id``;
        {} when the service has no mentions (docs/protocol.md "Mentions in groups")."""
        if not after:
            return {}
        body = self.call_optional(self._mentions_ep, json={
            "userId": user_id, "groups": [{"groupId": g, "afterSeq": s} for g, s in after.items()]})
        if body is None:
            return {}
        return {g["groupId"]: g["mentions"] for g in body.get("groups", []) if g.get("mentions")}

    def group_recall(self, group_id: int, user_id: int, msg_id: str, window_ms: int) -> dict | None:
        """The recalled GroupMessage; None when the service has no such route (9.1).
        Raises BackendRejected 409 (not_found, too_late) as the service refuses."""
        return self.call_optional(self._group_recall_ep, json={
            "groupId": group_id, "userId": user_id, "msgId": msg_id, "windowMs": window_ms})

    def group_edit(self, group_id: int, user_id: int, msg_id: str, content: str,
                   window_ms: int) -> dict | None:
        """The edited GroupMessage; None when the service has no such route (9.1)."""
        return self.call_optional(self._group_edit_ep, json={
            "groupId": group_id, "userId": user_id, "msgId": msg_id, "content": content,
            "windowMs": window_ms})

    def group_changes(self, group_id: int, since_ms: int, limit: int) -> dict | None:
        """{messages, hasMore}: the group's messages recalled or edited after ``since_ms``;
        None when the service has no such route (9.1)."""
        return self.call_optional(self._group_changes_ep, params={
            "groupId": group_id, "since": since_ms, "limit": limit})

    def group_page(self, group_id: int, after_seq: int, before_seq: int | None, limit: int) -> dict:
        params: dict[str, Any] = {"groupId": group_id, "afterSeq": after_seq, "limit": limit}
        if before_seq is not None:
            params["beforeSeq"] = before_seq
        return self.call("GET", "/v1/groups/messages", params=params)

    def group_history(self, group_id: int, before_seq: int | None, limit: int) -> dict:
        params: dict[str, Any] = {"groupId": group_id, "limit": limit}
        if before_seq is not None:
            params["beforeSeq"] = before_seq
        return self.call("GET", "/v1/groups/history", params=params)

    def group_last(self, group_ids: list[int]) -> dict[int, int]:
        """Group id -> its last seq; concurrent callers (a connect storm) share calls."""
        if not group_ids:
            return {}
        return _batched(self._group_lasts, tuple(group_ids))

    def _group_last_batch(self, wanted: list[tuple[int, ...]]) -> list[dict[int, int]]:
        ids = list(dict.fromkeys(g for gids in wanted for g in gids))
        last: dict[int, int] = {}
        for i in range(0, len(ids), 1000):          # the service's cap per call
            body = self.call("GET", "/v1/groups/last",
                             params={"groupIds": ",".join(str(g) for g in ids[i:i + 1000])})
            last.update({g["groupId"]: g["lastSeq"] for g in body.get("groups", [])})
        return [{g: last.get(g, 0) for g in gids} for gids in wanted]


    # -- the conversation list (docs/protocol.md "Conversation list"); optional (PROTOCOL 9.1)

    def conversations(self, user_id: int, groups: list[dict], cursor: str | None,
                      limit: int) -> dict:
        """{items, nextCursor}: ``groups`` are the user's ({groupId, readSeq, createdAt})."""
        body: dict[str, Any] = {"userId": user_id, "limit": limit, "groups": groups}
        if cursor:
            body["cursor"] = cursor
        return self.call("POST", "/v1/conversations/list", json=body)

    def conversation_settings(self, user_id: int, target: dict, flags: dict) -> dict:
        """Set muted/pinned of one conversation; ``target`` is {peerId} or {groupId}."""
        return self.call("POST", "/v1/conversations/settings",
                         json={"userId": user_id, **target, **flags})


class FriendService(ServiceClient):
    LISTS_BATCH = 1000              # users whose friend lists one call fetches (the cap)

    def __init__(self, name: str, rpc: RpcConfig, internal_secret: str = "",
                 metrics: GatewayMetrics | None = None,
                 optional: OptionalEndpointsConfig | None = None):
        super().__init__(name, rpc, internal_secret, metrics, optional)
        # beyond section 6 (PROTOCOL.md 9.1): each falls back to section 6 calls
        self._lists_ep = self.optional("POST", "/v1/friends/lists")
        self._group_lists_ep = self.optional("POST", "/v1/groups/lists")
        self._blocks_check_ep = self.optional("POST", "/v1/blocks/check")   # no blocks without it
        # every connect and disconnect asks for a friend list: coalesced (batching.py)
        wait = max(self.timeout * 2 + 1.0, CONNECT_FLOW_WAIT)
        self._lists = self._batcher("friend lists", self._lists_batch, self.LISTS_BATCH, wait)
        self._group_lists = self._batcher("group lists", self._group_lists_batch,
                                          self.LISTS_BATCH, wait)
        # the chats' block checks (features/relations.py), from every connection: coalesced
        self._block_checks = self._batcher("block checks", self._block_check_batch,
                                           self.LISTS_BATCH, self.timeout * 2 + 1.0)

    def friends(self, user_id: int) -> list[int]:
        return _batched(self._lists, user_id)

    def _lists_batch(self, user_ids: list[int]) -> list:
        body = self.call_optional(self._lists_ep, json={"userIds": user_ids})
        if body is None:            # section 6: one GET /v1/friends/<userId> per user
            return each(self.friend_list, user_ids)
        lists = body.get("friends")
        if not isinstance(lists, list):
            raise BackendUnavailable(f"{self.name} service: a batch answer without friends")
        return lists

    def friend_list(self, user_id: int) -> list[int]:
        """GetFriendList itself (section 6), not coalesced."""
        friends = self.call("GET", f"/v1/friends/{user_id}").get("friends")
        if not isinstance(friends, list):
            raise BackendUnavailable(f"{self.name} service: a friend list answer without friends")
        return friends

    def close(self) -> None:
        self._lists.stop()
        self._group_lists.stop()
        self._block_checks.stop()

    def add(self, user_id: int, friend_id: int) -> None:
        self.call("POST", "/v1/friends", json={"userId": user_id, "friendId": friend_id})

    def remove(self, user_id: int, friend_id: int) -> None:
        self.call("DELETE", f"/v1/friends/{user_id}/{friend_id}")

    # -- friend requests and blocks (skyeim/friend/relations_api.py; optional, PROTOCOL 9.1)

    def request(self, from_id: int, to_id: int) -> dict:
        return self.call("POST", "/v1/friends/requests",
                         json={"fromUserId": from_id, "toUserId": to_id})

    def requests(self, user_id: int) -> dict:
        return self.call("GET", f"/v1/friends/requests/{user_id}")

    def request_pending(self, from_id: int, to_id: int) -> bool:
        return bool(self.call("GET", f"/v1/friends/requests/{from_id}/{to_id}").get("pending"))

    def decline(self, user_id: int, from_id: int) -> bool:
        return bool(self.call("POST", "/v1/friends/requests/decline",
                              json={"userId": user_id, "fromUserId": from_id}).get("declined"))

    def block(self, user_id: int, blocked_id: int) -> dict:
        return self.call("POST", "/v1/blocks", json={"userId": user_id, "blockedId": blocked_id})

    def unblock(self, user_id: int, blocked_id: int) -> bool:
        return bool(self.call("DELETE", f"/v1/blocks/{user_id}/{blocked_id}").get("unblocked"))

    def blocks(self, user_id: int) -> list[dict]:
        return self.call("GET", f"/v1/blocks/{user_id}").get("blocked", [])

    def blocked_pairs(self, pairs: list[tuple[int, int]]) -> list[bool] | None:
        """For each pair, whether one blocked the other; None when the service has no
        blocks (9.1: the optional endpoint answers 404 / 405, probed again later).
        Concurrent callers share calls (batching.py)."""
        found = _batched_many(self._block_checks, pairs)
        if any(b is None for b in found):
            return None
        for b in found:
            if isinstance(b, BackendRejected):
                raise b
        return found

    def _block_check_batch(self, pairs: list[tuple[int, int]]) -> list:
        body = self.call_optional(self._blocks_check_ep, json={"pairs": [list(p) for p in pairs]})
        if body is None:
            return [None] * len(pairs)
        found = body.get("blocked")
        if not isinstance(found, list) or len(found) != len(pairs):
            raise BackendUnavailable(f"{self.name} service: a block check answer without blocked")
        return [bool(b) for b in found]

    # -- groups (the relations side: skyeim/friend/groups_api.py)

    MEMBER_PAGE = 10_000
    MAX_MEMBER_PAGES = 4            # 40,000 > the service's MAX_MEMBERS

    def create_group(self, owner: int, name: Any, member_ids: Any) -> dict:
        return self.call("POST", "/v1/groups",
                         json={"ownerId": owner, "name": name, "memberIds": member_ids})

    def groups_of(self, user_id: int) -> list[dict]:
        """The user's groups; concurrent callers (a connect storm) share calls."""
        return _batched(self._group_lists, user_id)

    def _group_lists_batch(self, user_ids: list[int]) -> list[list[dict]]:
        body = self.call_optional(self._group_lists_ep, json={"userIds": user_ids})
        if body is None:            # groups are not in section 6: a service without them has none
            return [[] for _ in user_ids]
        lists = body.get("groups")
        if not isinstance(lists, list):
            raise BackendUnavailable(f"{self.name} service: a batch answer without groups")
        return lists

    def members(self, group_id: int) -> list[dict]:
        """Every member of the group ({userId, role, readSeq}); BackendRejected 404 if none."""
        found: list[dict] = []
        after = 0
        for _ in range(self.MAX_MEMBER_PAGES):
            params = {"limit": self.MEMBER_PAGE, **({"afterUserId": after} if after else {})}
            body = self.call("GET", f"/v1/groups/{group_id}/members", params=params)
            found += body.get("members", [])
            if not body.get("hasMore") or not found:
                break
            after = found[-1]["userId"]
        return found

    def invite(self, group_id: int, by_user: int, user_ids: Any) -> list[int]:
        return self.call("POST", f"/v1/groups/{group_id}/members",
                         json={"byUserId": by_user, "userIds": user_ids}).get("added", [])

    def leave(self, group_id: int, user_id: int) -> dict:
        return self.call("POST", f"/v1/groups/{group_id}/leave", json={"userId": user_id})

    def group_read(self, group_id: int, user_id: int, seq: int) -> dict:
        return self.call("POST", f"/v1/groups/{group_id}/read", json={"userId": user_id, "seq": seq})

    def group_admin(self, group_id: int, action: str, by_user: int, **fields: Any) -> dict:
        """An administration call (docs/protocol.md "Group administration"): ``action`` is
        role, kick, mute, rename or dismiss; BackendRejected 403 for a role not allowed."""
        return self.call("POST", f"/v1/groups/{group_id}/{action}",
                         json={"byUserId": by_user, **fields})


class AuthService(ServiceClient):
    def __init__(self, name: str, rpc: RpcConfig, internal_secret: str = "",
                 metrics: GatewayMetrics | None = None,
                 optional: OptionalEndpointsConfig | None = None):
        super().__init__(name, rpc, internal_secret, metrics, optional)
        self._revocations_ep = self.optional("GET", "/v1/revocations")

    def register(self, username: Any, password: Any) -> dict:
        return self.call("POST", "/v1/users", json={"username": username, "password": password})

    def login(self, username: Any, password: Any, client_address: str = "") -> dict:
        return self.call("POST", "/v1/tokens", json={"username": username, "password": password},
                         headers=_client(client_address))

    def change_password(self, username: Any, old: Any, new: Any, client_address: str = "") -> dict:
        return self.call("POST", "/v1/password", headers=_client(client_address),
                         json={"username": username, "oldPassword": old, "newPassword": new})

    def revocations(self, since_ms: int, after_user: int | None, limit: int) -> dict:
        params: dict[str, Any] = {"since": since_ms, "limit": limit}
        if after_user is not None:
            params["afterUserId"] = after_user
        body = self.call_optional(self._revocations_ep, params=params, quiet=True)
        # beyond section 6: a service without it revokes nothing the gateway could see
        return {"revocations": [], "hasMore": False} if body is None else body

    def users_by_id(self, ids: list[int]) -> list[dict]:
        if not ids:
            return []
        found: list[dict] = []
        for i in range(0, len(ids), 200):           # the service caps a lookup at 200 ids
            chunk = ",".join(str(x) for x in ids[i:i + 200])
            found += self.call("GET", "/v1/users", params={"ids": chunk}).get("users", [])
        return found

    def user_by_name(self, username: str) -> dict | None:
        users = self.call("GET", "/v1/users", params={"username": username}).get("users", [])
        return users[0] if users else None


def _client(address: str) -> dict:
    # the service trusts it only from a caller with the internal secret (skyeim.web)
    return {"X-Client-Address": address} if address else {}


class Backends:
    """The three services, as the gateway sees them."""

    def __init__(self, message: MessageService, friend: FriendService, auth: AuthService):
        self.message, self.friend, self.auth = message, friend, auth

    @classmethod
    def from_config(cls, cfg, metrics: GatewayMetrics | None = None) -> "Backends":
        secret, optional = cfg.internal_secret, cfg.optional_endpoints
        return cls(MessageService("message", cfg.message_rpc, secret, metrics, optional),
                   FriendService("friend", cfg.friend_rpc, secret, metrics, optional),
                   AuthService("auth", cfg.auth_rpc, secret, metrics, optional))

    def all(self) -> list[ServiceClient]:
        return [self.message, self.friend, self.auth]
