"""The machinery of the contract checks: one HTTP client per service, a report of
named checks grouped by endpoint, and the contract's shape rules (ids, ms
timestamps, ChatMessage, error bodies).

A check is a ``with report.check(endpoint, name):`` block; a ``CheckFailed`` (or an
HTTP error, or anything unexpected) inside it fails that check alone and the run
goes on with the next.
"""
from __future__ import annotations

import contextlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import requests

from skyeim.protocol import MAX_USER_ID, is_msg_id, is_user_id

CHAT_KEYS = ("msgId", "fromUserId", "toUserId", "content", "contentType", "createdAt", "seq")
DAY_MS = 86_400_000
TOO_DEEP = 5_000            # levels of nesting in the "deep JSON" bodies: beyond any parser's limit


class CheckFailed(AssertionError):
    """A contract rule the service broke; the message says how."""


class NotRun(CheckFailed):
    """A check that could not run because something it needs failed before."""


def require(condition: Any, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def clip(text: str, limit: int = 160) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"


def short(value: Any, limit: int = 160) -> str:
    """``value`` as JSON (so that "12" and 12 look different), clipped."""
    return clip(json.dumps(value, ensure_ascii=False, default=str), limit)


# -- HTTP -------------------------------------------------------------------------

@dataclass
class Answer:
    method: str
    path: str
    status: int
    body: Any          # the decoded JSON, or None when the body is not JSON
    text: str

    def __str__(self) -> str:
        return f"{self.method} {self.path} answered {self.status} {clip(self.text)}"


class Service:
    """A service under test at ``url``; every call carries the internal secret
    unless ``secret=None`` (no header) or another value is given.

    After MAX_SILENT calls in a row without an answer (timeouts, refused
    connections) every further call fails at once: a run against a service
    that hangs ends in seconds, not in hundreds of timeouts."""

    MAX_SILENT = 3

    def __init__(self, name: str, url: str, internal_secret: str = "", timeout: float = 10.0):
        self.name = name
        self.url = url.rstrip("/")
        self.internal_secret = internal_secret
        self.timeout = timeout
        self.http = requests.Session()
        self.silent = 0              # calls in a row that got no answer
        self.last_failure = ""

    def call(self, method: str, path: str, *, params: dict | None = None, json_body: Any = None,
             raw: str | bytes | None = None, content_type: str = "application/json",
             secret: str | None | bool = True) -> Answer:
        headers = {}
        token = self.internal_secret if secret is True else secret
        if token:
            headers["X-Internal-Secret"] = token
        data = None
        if raw is not None:
            data = raw.encode("utf-8") if isinstance(raw, str) else raw
        elif json_body is not None:
            data = json.dumps(json_body).encode("utf-8")
        if data is not None:
            headers["Content-Type"] = content_type
        if self.silent >= self.MAX_SILENT:
            raise NotRun(f"not tried: the service stopped answering ({self.last_failure})")
        try:
            r = self.http.request(method, self.url + path, params=params, data=data,
                                  headers=headers, timeout=self.timeout)
        except requests.RequestException as e:
            self.silent += 1
            if isinstance(e, requests.Timeout):
                why = f"no answer within {self.timeout:g} s"
            elif isinstance(e, requests.ConnectionError) and "refused" in str(e).lower():
                why = f"connection refused by {self.url}"
            else:
                why = f"{type(e).__name__}: {clip(str(e), 120)}"
            self.last_failure = f"{method} {path}: {why}"
            raise CheckFailed(self.last_failure) from None
        self.silent = 0
        try:
            body = r.json()
        except ValueError:
            body = None
        return Answer(method, path, r.status_code, body, r.text)

    def get(self, path: str, **kw) -> Answer:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw) -> Answer:
        return self.call("POST", path, json_body=body, **kw)

    def delete(self, path: str, **kw) -> Answer:
        return self.call("DELETE", path, **kw)

    def close(self) -> None:
        self.http.close()


# -- what answers must look like -------------------------------------------------------

def ok(answer: Answer) -> dict:
    """The JSON object of a 200 answer."""
    require(answer.status == 200, f"expected 200: {answer}")
    require(isinstance(answer.body, dict), f"expected a JSON object: {answer}")
    return answer.body


def refused(answer: Answer, status: int, code: str | None = None) -> None:
    """``status`` with the contract's error body ``{code, message}`` (``code`` if given)."""
    require(answer.status == status, f"expected {status}: {answer}")
    body = answer.body
    require(isinstance(body, dict) and isinstance(body.get("code"), str)
            and isinstance(body.get("message"), str),
            f"expected an error body {{code, message}} (strings): {answer}")
    if code is not None:
        require(body["code"] == code, f"expected code {code!r}: {answer}")


def bad_request(answer: Answer, case: str) -> None:
    try:
        refused(answer, 400, "bad_request")
    except CheckFailed as e:
        raise CheckFailed(f"{case}: {e}") from None


def user_id(value: Any, what: str) -> int:
    require(is_user_id(value), f"{what} must be a JSON integer from 1 to 2^63-1, got {short(value)}")
    return value


def ms_timestamp(value: Any, what: str, future: bool = False) -> int:
    """Milliseconds since the epoch: within a day of this machine's clock, or, for a
    ``future`` one (an expiry), after now and within a century (seconds and
    microseconds both fall outside)."""
    require(type(value) is int, f"{what} must be a JSON integer (ms), got {short(value)}")
    now = time.time_ns() // 1_000_000
    if future:
        require(now < value < now + 100 * 365 * DAY_MS,
                f"{what} must be a time to come in milliseconds since the epoch (now is {now}), got {value}")
    else:
        require(abs(value - now) < DAY_MS,
                f"{what} must be milliseconds since the epoch (within a day of now, {now}), got {value}")
    return value


def chat_message(m: Any, what: str) -> dict:
    """A ChatMessage: every field, each of the right type."""
    require(isinstance(m, dict), f"{what} must be a JSON object, got {short(m)}")
    missing = [k for k in CHAT_KEYS if k not in m]
    require(not missing, f"{what} lacks {', '.join(missing)}: {short(m)}")
    require(is_msg_id(m["msgId"]), f"{what}.msgId must be a msgId string, got {short(m['msgId'])}")
    user_id(m["fromUserId"], f"{what}.fromUserId")
    user_id(m["toUserId"], f"{what}.toUserId")
    require(isinstance(m["content"], str) and m["content"], f"{what}.content must be a non-empty string")
    require(type(m["contentType"]) is int and m["contentType"] in (1, 2, 3, 4),
            f"{what}.contentType must be 1, 2, 3 or 4, got {short(m['contentType'])}")
    ms_timestamp(m["createdAt"], f"{what}.createdAt")
    require(type(m["seq"]) is int and m["seq"] >= 1,
            f"{what}.seq must be an integer >= 1, got {short(m['seq'])}")
    return m


def same(m: dict, expect: dict, what: str) -> None:
    """``m`` holds ``expect``'s values (a rule, checked on the lenient reading)."""
    for key, value in expect.items():
        require(m.get(key) == value, f"{what}.{key} is {short(m.get(key))}, expected {short(value)}")


ID_KEYS = frozenset({"fromUserId", "toUserId", "userId", "peerId", "seq"})


def lenient(value: Any) -> Any:
    """``value`` with digit strings where ids belong read as integers. The shape check
    says once that such an id is wrong; the other rules are still checked with it."""
    if isinstance(value, list):
        return [lenient(v) for v in value]
    if isinstance(value, dict):
        return {k: lenient_id(v) if k in ID_KEYS else lenient(v) for k, v in value.items()}
    return value


def lenient_id(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else value


def json_list(value: Any, what: str) -> list:
    require(isinstance(value, list), f"{what} must be a JSON list, got {short(value)}")
    return value


# -- bodies that must be refused ---------------------------------------------------------

NOT_USER_IDS = [("a string", "12"), ("a float", 1.5), ("true", True), ("0", 0), ("-1", -1),
                ("2^63", MAX_USER_ID + 1), ("null", None)]


def not_json_bodies() -> list[tuple[str, dict]]:
    """(case, call keywords) of bodies that are not a JSON object."""
    deep_list = "[" * TOO_DEEP + "]" * TOO_DEEP
    deep_object = '{"a":' * TOO_DEEP + "1" + "}" * TOO_DEEP
    return [("a body that is not JSON", {"raw": "{not json"}),
            ("an empty body", {"raw": ""}),
            ("a JSON list", {"raw": "[1, 2]"}),
            ("a JSON string", {"raw": '"text"'}),
            (f"a list nested {TOO_DEEP} deep", {"raw": deep_list}),
            (f"an object nested {TOO_DEEP} deep", {"raw": deep_object})]


def without(body: dict, key: str) -> dict:
    return {k: v for k, v in body.items() if k != key}


def nested(depth: int) -> Any:
    """A JSON value nested ``depth`` deep (parseable, but of no field's type)."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": [value]}
    return value


# -- test data ---------------------------------------------------------------------------

class TestData:
    """Random ids and names, so that a run on a live service touches nobody's data."""

    def __init__(self) -> None:
        # user ids from 2^62 up: far above any id a real service hands out
        self._next = 2**62 + secrets.randbelow(2**61)
        self.tag = secrets.token_hex(3)

    def user_ids(self, n: int) -> list[int]:
        ids = list(range(self._next, self._next + n))
        self._next += n
        return ids

    @staticmethod
    def msg_id() -> str:
        return f"ct-{uuid.uuid4().hex}"

    def username(self, prefix: str = "ct") -> str:
        return f"{prefix}_{self.tag}_{secrets.token_hex(4)}"


# -- the report ---------------------------------------------------------------------------

@dataclass
class Outcome:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class EndpointResult:
    service: str
    endpoint: str
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


class Report:
    """Named checks by endpoint, in the order they were first reported."""

    def __init__(self) -> None:
        self.endpoints: dict[tuple[str, str], EndpointResult] = {}

    def result(self, service: str, endpoint: str) -> EndpointResult:
        key = (service, endpoint)
        if key not in self.endpoints:
            self.endpoints[key] = EndpointResult(service, endpoint)
        return self.endpoints[key]

    @contextlib.contextmanager
    def check(self, service: str, endpoint: str, name: str) -> Iterator[None]:
        result = self.result(service, endpoint)
        try:
            yield
        except CheckFailed as e:
            result.outcomes.append(Outcome(name, False, str(e)))
        except Exception as e:  # noqa: BLE001 - a surprise in one check must not end the run
            result.outcomes.append(Outcome(name, False, f"{type(e).__name__}: {short(str(e), 200)}"))
        else:
            result.outcomes.append(Outcome(name, True))

    def fail(self, service: str, endpoint: str, name: str, detail: str) -> None:
        self.result(service, endpoint).outcomes.append(Outcome(name, False, detail))

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.endpoints.values())


SHAPES = "answers in the contract's shapes and types (user ids JSON integers, timestamps ms, every field)"


class Suite:
    """The checks of one service: ``self.check(endpoint, name)`` blocks for the rules,
    and ``self.shaped(endpoint, ...)`` for the shape of every answer, which adds up to
    one SHAPES check per endpoint (its first violation), so that a wrong type is said
    once and does not hide the rules checked with the same answers."""

    service = ""
    endpoints: tuple[str, ...] = ()

    def __init__(self, svc: Service, report: Report, data: TestData, access_secret: str = ""):
        self.svc, self.report, self.data = svc, report, data
        self.access_secret = access_secret
        self.shapes_seen: set[str] = set()
        self.shape_failures: dict[str, str] = {}

    def shaped(self, endpoint: str, check: Callable[..., Any], *args: Any) -> None:
        """Run the shape check ``check(*args)``; a violation goes to the SHAPES check."""
        self.shapes_seen.add(endpoint)
        try:
            check(*args)
        except CheckFailed as e:
            self.shape_failures.setdefault(endpoint, str(e))

    def shape_checks(self) -> None:
        for endpoint in self.endpoints:
            with self.check(endpoint, SHAPES):
                if endpoint in self.shape_failures:
                    raise CheckFailed(self.shape_failures[endpoint])
                if endpoint not in self.shapes_seen:
                    raise NotRun("not checked: no call of this endpoint got an answer")

    def check(self, endpoint: str, name: str):
        return self.report.check(self.service, endpoint, name)

    def run(self) -> None:
        """Every check, unless the service does not answer /healthz (then each
        endpoint fails once, saying so, instead of timing out call after call)."""
        with self.check("GET /healthz", "answers 200 without X-Internal-Secret"):
            ok(self.svc.get("/healthz", secret=None))
        if not self.report.result(self.service, "GET /healthz").ok:
            for endpoint in self.endpoints:
                self.report.fail(self.service, endpoint, "not run",
                                 "the service does not answer GET /healthz")
            return
        self.checks()
        self.shape_checks()

    def checks(self) -> None:
        raise NotImplementedError

    # -- helpers every suite uses ------------------------------------------------------------
    def secret_required(self, endpoint: str, method: str, path: str, **kw) -> None:
        """Without the configured X-Internal-Secret, or with a wrong one, the call is 401."""
        if not self.svc.internal_secret:
            return
        with self.check(endpoint, "refuses a call without X-Internal-Secret or with a wrong one (401)"):
            refused(self.svc.call(method, path, secret=None, **kw), 401, "unauthorized")
            refused(self.svc.call(method, path, secret=self.svc.internal_secret + "x", **kw),
                    401, "unauthorized")

    def not_json_refused(self, endpoint: str, path: str, method: str = "POST") -> None:
        with self.check(endpoint, "a body that is not a JSON object (not JSON, a list, nested "
                                  f"{TOO_DEEP} deep) is 400"):
            for case, kw in not_json_bodies():
                bad_request(self.svc.call(method, path, **kw), case)
