"""Property-based fuzzing of a live gateway's socket (PROTOCOL.md sections 2 and 4).

Hypothesis throws client frames at one real gateway process over raw RFC 6455
sockets (tests/support/rawws.py: websocket-client refuses to send most of these), one
family per test: arbitrary JSON, valid frame types with wrong types in every
field, deep nesting, very long strings, invalid UTF-8, fragmented messages with
control frames in between, control frames with payloads, binary frames, and
messages at and one byte over MaxMessageSize.

For every example an oracle written from the contract (not from the gateway's
code) says what must come back: an ``error`` frame with its code and msgId, an
``ack sent``, a ``pong``, nothing, or a close code (1002/1007/1009, or the
echo of the client's close). Each example is followed by an application ping
on the same connection: everything the example earns must arrive before its
pong, and nothing else. The connection is reused while the contract keeps it
open, and replaced when it closes.

Meanwhile a bystander pair keeps chatting (chat -> ack sent -> chat delivered
-> ack delivered) on its own connections. The last test checks the aftermath:
the bystanders never failed, the gateway process is alive, its log has no
Traceback, and its live greenlets and resident memory are back at their level.

Reproducible: derandomize=True and no example database. SKYEIM_FUZZ_EXAMPLES=N
runs N examples per family instead of each family's default.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from harness import UUID4, System, close_open_clients, now_ms
from rawws import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, PING_JSON,
                   NothingArrived, RawWS, ServerEOF, close_payload, close_raw_sockets, connect,
                   frame_bytes)

MAX = 262_144               # WebSocket.MaxMessageSize here: room for 100,000-deep JSON arrays
MAX_CONTENT = 16_384        # Chat.MaxContentLength (the default)
MAX_USER_ID = 2**63 - 1
TIMEOUT = 10.0              # s any expected frame may take on a loaded machine
EXAMPLES = int(os.environ.get("SKYEIM_FUZZ_EXAMPLES", "0"))

WS_CONFIG = {
    "WebSocket": {
        "MaxMessageSize": MAX,
        # the fuzzer sends as fast as it can: rate_limited would hide the answers under test
        "RateLimit": {"Rate": 100000, "Burst": 100000},
    },
    "Chat": {"MaxContentLength": MAX_CONTENT},
}

# What the gateway may keep after the fuzz, beyond its level before it (stated tolerances):
GREENLET_SLACK = 5          # short-lived ones (close timers, pool calls); measured: -2 to +2
RSS_SLACK = 32 * 2**20      # the allocator keeps some freed arenas (measured: under 5 MiB)
SETTLE_TIMEOUT = 20.0       # s to reach those levels (bounded poll)

pytestmark = pytest.mark.timeout(300)


def fuzz_settings(default_examples: int):
    return settings(max_examples=EXAMPLES or default_examples, derandomize=True, database=None,
                    deadline=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example,
                                           HealthCheck.filter_too_much])


# ---------------------------------------------------------------------------
# What the contract says must come back

@dataclass(frozen=True)
class Expect:
    """The answer to one example: application frames (in order) and the payloads of
    protocol pongs, or a close code (then nothing more matters)."""
    answers: tuple = ()         # ("error", code, msgId) | ("ack", msgId or None) | ("pong",)
    pongs: tuple = ()           # payloads of the protocol pongs for the pings we sent
    close: int | None = None


def error(code: str, msg_id: str | None = None) -> tuple:
    return ("error", code, msg_id)


PONG = ("pong",)
MSG_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_msg_id(v) -> bool:
    return isinstance(v, str) and MSG_ID.fullmatch(v) is not None


def is_user_id(v) -> bool:
    # "JSON integers from 1 to 2^63-1 (never strings, floats or booleans)"
    return type(v) is int and 1 <= v <= MAX_USER_ID


def is_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


@dataclass(frozen=True)
class Identity:
    """The fuzzing user, and the tokens an ``auth`` frame may carry."""
    user_id: int
    token: str                  # its own valid token: accepted silently
    other_token: str            # a valid token of another user: forbidden


def answer_to(obj, me: Identity) -> tuple:
    """The one application answer to a JSON text frame holding ``obj`` (section 4),
    or None when the contract says nothing comes back."""
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        return error("bad_request")
    kind, data = obj["type"], obj.get("data")
    if kind == "ping":
        return PONG                                   # its data is ignored
    if kind == "chat":
        return _chat_answer(data, me)
    if kind == "read":
        if not isinstance(data, dict):
            return error("bad_request")
        peer, ids = data.get("peerId"), data.get("msgIds")
        if not is_user_id(peer) or peer == me.user_id:
            return error("bad_request")
        ids = [] if ids is None else ids
        if not isinstance(ids, list) or not all(is_msg_id(i) for i in ids) or len(ids) > 1000:
            return error("bad_request")
        return None                                   # the reader gets nothing back
    if kind == "auth":
        if not isinstance(data, dict) or not isinstance(data.get("token"), str):
            return error("bad_request")
        if data["token"] == me.token:
            return None
        return error("forbidden" if data["token"] == me.other_token else "unauthorized")
    if kind == "typing":          # extension (docs/protocol.md): relayed or dropped, never answered
        if not isinstance(data, dict):
            return error("bad_request")
        to, state = data.get("toUserId"), data.get("state")
        if not is_user_id(to) or to == me.user_id or state not in (None, "typing", "paused"):
            return error("bad_request")
        return None
    return error("unknown_type")                     # server-only types included


def _chat_answer(data, me: Identity) -> tuple:
    if not isinstance(data, dict):
        return error("bad_request")
    msg_id = data.get("msgId")
    if msg_id is not None and not is_msg_id(msg_id):
        return error("bad_request")                  # an invalid msgId is never echoed
    to, content, ctype = data.get("toUserId"), data.get("content"), data.get("contentType")
    if not is_user_id(to) or to == me.user_id:
        return error("bad_request", msg_id)
    if not isinstance(content, str) or not 1 <= len(content) <= MAX_CONTENT or not is_utf8(content):
        return error("bad_request", msg_id)
    if ctype is not None and (type(ctype) is not int or ctype not in (1, 2, 3, 4)):
        return error("bad_request", msg_id)
    return ("ack", msg_id)                           # None: the server made a UUID4


def expect_for_text(payload: bytes, answer: tuple | None, pongs: tuple = ()) -> Expect:
    if len(payload) > MAX:
        return Expect(close=1009)
    return Expect(answers=() if answer is None else (answer,), pongs=pongs)


def to_json(obj, ascii_only: bool) -> bytes:
    """JSON text as a client would send it (lone surrogates only as \\u escapes)."""
    text = json.dumps(obj, ensure_ascii=ascii_only, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


# ---------------------------------------------------------------------------
# The fuzzing connection

class Fuzzer:
    """One user's connection, reused while open, replaced after a close."""

    def __init__(self, system: System, me: Identity, user):
        self.system, self.me, self.user = system, me, user
        self.ws: RawWS | None = None
        self.examples = 0
        self.connects = 0
        self.outcomes: Counter[str] = Counter()     # what the examples earned, for the figures
        self.stored = 0          # chats acked as new (not duplicate): the only ones stored

    def connection(self) -> RawWS:
        if self.ws is None:
            self.ws = connect(self.system, self.user)
            self.connects += 1
        return self.ws

    def drop(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None

    def exchange(self, wire: list[bytes], expect: Expect, what: str = "") -> None:
        """Send ``wire`` (complete frames, already encoded) and check the answer."""
        self.examples += 1
        if expect.close is not None:
            self.outcomes[f"close {expect.close}"] += 1
        else:
            self.outcomes.update([a[0] + (f" {a[1]}" if a[0] == "error" else "")
                                  for a in expect.answers] or ["nothing"])
        ws = self.connection()
        try:
            self._exchange(ws, wire, expect, what)
        except BaseException:
            self.drop()          # a half-read connection must not confuse the next example
            raise

    def _exchange(self, ws: RawWS, wire: list[bytes], expect: Expect, what: str) -> None:
        for data in wire:
            try:
                ws.send_raw(data)
            except OSError:
                # the server may close (and stop reading) before the rest is sent
                assert expect.close is not None, f"{what}: the server stopped reading"
                break
        if expect.close is not None:
            self.ws = None
            try:
                close = ws.expect_close(TIMEOUT)
            finally:
                ws.close()
            assert close.close_code == expect.close, \
                f"{what}: expected close {expect.close}, got {close.close_code} {close.payload!r}"
            pongs = [f.payload for f in ws.before_close if f.opcode == OP_PONG]
            others = [f for f in ws.before_close if f.opcode not in (OP_PONG, OP_PING)]
            assert not others, f"{what}: frames before the close {expect.close}: {others!r}"
            assert pongs == list(expect.pongs[:len(pongs)]), \
                f"{what}: pongs {pongs!r} are not those of our pings {expect.pongs!r}"
            return
        # a sentinel: whatever the example earns must come before its pong
        ws.send(OP_TEXT, PING_JSON)
        pongs, frames = [], []
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                f = ws.recv_frame(max(deadline - time.monotonic(), 0.001))
            except (NothingArrived, ServerEOF) as e:
                raise AssertionError(f"{what}: expected {expect.answers!r} then pong; got "
                                     f"{frames!r} then {type(e).__name__}") from None
            if f.opcode == OP_PING:                     # the server's heartbeat
                continue
            if f.opcode == OP_PONG:
                pongs.append(f.payload)
                continue
            assert f.opcode != OP_CLOSE, \
                f"{what}: closed {f.close_code} where the connection should stay open"
            frames.append(f.json())
            if frames[-1]["type"] == "pong" and len(frames) > len(expect.answers):
                break
        assert pongs == list(expect.pongs), f"{what}: pongs {pongs!r}, expected {expect.pongs!r}"
        got = frames[:-1]
        assert len(got) == len(expect.answers), \
            f"{what}: expected {expect.answers!r}, got {got!r}"
        for want, frame in zip(expect.answers, got):
            check_answer(want, frame, what)
            if frame["type"] == "ack" and not frame["data"].get("duplicate"):
                self.stored += 1


def check_answer(want: tuple, frame: dict, what: str) -> None:
    kind, data = frame["type"], frame.get("data")
    assert kind == want[0], f"{what}: expected {want!r}, got {frame!r}"
    if kind == "error":
        assert data.get("code") == want[1] and "msgId" in data and data["msgId"] == want[2] \
            and isinstance(data.get("message"), str), f"{what}: expected {want!r}, got {frame!r}"
    elif kind == "ack":
        msg_id = want[1]
        assert data["status"] == "sent", f"{what}: {frame!r}"
        assert data["msgId"] == msg_id if msg_id is not None else UUID4.match(data["msgId"]), \
            f"{what}: ack for the wrong msgId: {frame!r} (sent {msg_id!r})"
        assert type(data["seq"]) is int and data["seq"] >= 1, f"{what}: {frame!r}"
        # a duplicate's timestamp is the original createdAt, which may be minutes old
        age = now_ms() - data["timestamp"] if type(data["timestamp"]) is int else None
        oldest = 3_600_000 if data.get("duplicate") else 60_000
        assert age is not None and -60_000 < age < oldest, \
            f"{what}: {frame!r} has no millisecond timestamp of now"
    elif kind == "pong":
        assert data is None, f"{what}: {frame!r}"


# ---------------------------------------------------------------------------
# The bystanders: two users who keep chatting while the fuzz runs

class Bystanders(threading.Thread):
    MAX_ROUNDS = 100_000        # bound; in practice the fuzz ends first
    PACE = 0.1                  # s between rounds

    def __init__(self, system: System):
        super().__init__(daemon=True, name="bystanders")
        self.users = [system.minted_user("by_a"), system.minted_user("by_b")]
        self.conns = [connect(system, u) for u in self.users]
        self.stop_event = threading.Event()
        self.rounds = 0
        self.slowest = 0.0
        self.failure: str | None = None

    def chat_round(self) -> None:
        """One chat, alternately each way: ack sent, chat delivered, ack delivered."""
        k = self.rounds % 2
        (sender, s_conn), (recipient, r_conn) = \
            (self.users[k], self.conns[k]), (self.users[1 - k], self.conns[1 - k])
        msg_id = f"by-{self.rounds}-{time.monotonic_ns()}"
        start = time.monotonic()
        s_conn.send_json({"type": "chat", "data": {"msgId": msg_id, "toUserId": recipient.id,
                                                    "content": f"round {self.rounds}"}})
        ack = s_conn.expect("ack", TIMEOUT)
        assert ack["msgId"] == msg_id and ack["status"] == "sent", ack
        chat = r_conn.expect("chat", TIMEOUT)
        assert chat["msgId"] == msg_id and chat["fromUserId"] == sender.id, chat
        ack = s_conn.expect("ack", TIMEOUT)
        assert ack["msgId"] == msg_id and ack["status"] == "delivered", ack
        self.slowest = max(self.slowest, time.monotonic() - start)
        self.rounds += 1

    def run(self) -> None:
        try:
            for _ in range(self.MAX_ROUNDS):
                if self.stop_event.wait(self.PACE):
                    return
                self.chat_round()
        except BaseException as e:  # noqa: BLE001 - reported by the tests
            self.failure = f"round {self.rounds}: {type(e).__name__}: {e}"

    def finish(self) -> None:
        self.stop_event.set()
        self.join(TIMEOUT * 4)
        assert not self.is_alive(), "the bystander thread did not stop"

    def close(self) -> None:
        for c in self.conns:
            c.close()


def assert_bystanders_fine(bystanders: Bystanders) -> None:
    assert bystanders.failure is None, f"the bystanders' chat broke: {bystanders.failure}"


# ---------------------------------------------------------------------------
# Fixtures (one gateway for the module; the tests share its connections)

def scrape(system: System) -> dict[str, float]:
    text = requests.get(system.metrics_url + "/metrics", timeout=10).text
    out = {}
    for name in ("skyeim_greenlets", "process_resident_memory_bytes", "skyeim_ws_connections"):
        m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
        assert m, f"/metrics has no {name}"
        out[name] = float(m.group(1))
    return out


@dataclass
class Run:
    system: System
    fuzzer: Fuzzer
    bystanders: Bystanders
    before: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    system = System(tmp_path_factory.mktemp("fuzz"), ws=WS_CONFIG)
    system.start()
    bystanders = None
    try:
        bystanders = Bystanders(system)
        for _ in range(3):              # warm up the paths the level is measured on
            bystanders.chat_round()
        before = scrape(system)
        user = system.minted_user("fuzzer")
        other = system.minted_user("other")
        me = Identity(user.id, user.token, other.token)
        bystanders.start()
        yield Run(system, Fuzzer(system, me, user), bystanders, before)
    finally:
        if bystanders is not None:
            bystanders.stop_event.set()
        close_raw_sockets()
        close_open_clients()
        system.stop()


# ---------------------------------------------------------------------------
# Strategies

TYPES = ("ping", "chat", "read", "auth", "connected", "pong", "ack", "online", "offline", "error",
         "token_expiring", "Chat", "PING", "", "chat ", "typing")

UTF8 = st.characters(codec="utf-8")      # what a UTF-8 text frame or close reason can carry


# strings with now and then a lone surrogate: legal in JSON as a \ud800 escape, never UTF-8
def texts(max_size: int):
    return st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=max_size)


# everything a wrong field may hold: huge and negative numbers, floats and booleans for
# ids, null, strings that look like numbers, lists and objects
wrong_scalars = st.sampled_from([
    None, True, False, 0, -1, -(2**63), 2**63, 2**64, -(2**64), 10**40, 10**41, -(10**50),
    1.0, 1.5, -0.0, 1e300, -1e-300, 5e-324, "", "1", "42", "-1", "1e3", "null", "true",
    "0x10", " 1", "\u0000", "\ud800", "\u2028", "chat"])
wrong = st.one_of(
    wrong_scalars,
    st.booleans(),
    st.sampled_from([1.0, 2.0, 7.0, 1e19]),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    texts(30),
    st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(),
                         st.floats(allow_nan=False, allow_infinity=False),
                         texts(30), wrong_scalars)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts(8), inner,
                                                                max_size=4),
    max_leaves=12)

valid_msg_id = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")
valid_user_id = st.one_of(st.integers(1, MAX_USER_ID), st.sampled_from([1, MAX_USER_ID]))
content = st.one_of(st.text(min_size=1, max_size=40),
                    st.sampled_from(["\u0000", "a\u0000b", "\U0001f600", "'; --", "\ud83d",
                                     "x\udfff"]))

ABSENT = object()


def valid_fields(kind: str, me: Identity | None) -> dict:
    """Strategies for the valid value of each field of a client frame's data."""
    own_id = [st.just(me.user_id)] if me else []        # valid in type, refused as a target
    tokens = [st.sampled_from([me.token, me.other_token])] if me else []
    return {
        "chat": {"msgId": st.one_of(valid_msg_id, st.none()),
                 "toUserId": st.one_of(valid_user_id, *own_id),
                 "content": content,
                 "contentType": st.sampled_from([1, 2, 3, 4, None])},
        "read": {"peerId": st.one_of(valid_user_id, *own_id),
                 # at most 1000 ids in one read
                 "msgIds": st.one_of(st.lists(valid_msg_id, max_size=3), st.none(),
                                     st.sampled_from([1000, 1001]).map(
                                         lambda n: [f"m{i}" for i in range(n)]))},
        "auth": {"token": st.one_of(texts(50),
                                    st.sampled_from(["\ud800", "a.b.\udfff", "x" * 5000]),
                                    *tokens)},
        "ping": {},
    }[kind]


@st.composite
def typed_frames(draw, me: Identity | None = None):
    """A frame with a real type: a valid one with some of its fields (usually one or
    two) replaced by a value of a wrong type, or left out; the data itself may be wrong."""
    kind = draw(st.sampled_from(["chat", "chat", "read", "auth", "ping"]))
    fields = valid_fields(kind, me)
    data = {k: draw(s) for k, s in fields.items()}
    names = sorted(fields) + ["fromUserId", "seq", "createdAt"]   # the server sets these three
    for name in draw(st.sets(st.sampled_from(names), max_size=3)):
        value = draw(st.one_of(wrong, st.just(ABSENT)))
        if value is ABSENT:
            data.pop(name, None)
        else:
            data[name] = value
    wrapper = draw(st.sampled_from(["object"] * 6 + ["wrong-data", "no-data"]))
    if wrapper == "wrong-data":
        return {"type": kind, "data": draw(wrong)}
    if wrapper == "no-data":
        return {"type": kind}
    return {"type": kind, "data": data}


# ---------------------------------------------------------------------------
# 1. Arbitrary JSON, and frames of every type with wrong types in every field

@fuzz_settings(120)
@given(obj=st.one_of(json_values,
                     st.fixed_dictionaries({"type": st.one_of(st.sampled_from(TYPES), json_values),
                                            "data": json_values})),
       ascii_only=st.booleans())
def test_any_json_value_gets_its_answer_and_the_connection_stays_open(run, obj, ascii_only):
    payload = to_json(obj, ascii_only)
    run.fuzzer.exchange([frame_bytes(OP_TEXT, payload)],
                        expect_for_text(payload, answer_to(obj, run.fuzzer.me)),
                        f"JSON {payload[:200]!r}")
    assert_bystanders_fine(run.bystanders)


def test_wrong_types_in_every_field_get_their_answer(run):
    me = run.fuzzer.me

    @fuzz_settings(200)
    @given(obj=typed_frames(me), ascii_only=st.booleans())
    @example(obj={"type": "chat", "data": {"msgId": "ok-1", "toUserId": 2**63, "content": "x"}},
             ascii_only=True)
    @example(obj={"type": "chat", "data": {"msgId": "ok-2", "toUserId": True, "content": "x"}},
             ascii_only=True)
    @example(obj={"type": "chat", "data": {"msgId": "ok-3", "toUserId": 7.0, "content": "x"}},
             ascii_only=True)
    @example(obj={"type": "chat", "data": {"msgId": 12, "toUserId": 7, "content": "x"}},
             ascii_only=True)
    @example(obj={"type": "chat", "data": {"msgId": "ok-4", "toUserId": 7, "content": "x",
                                           "contentType": True}}, ascii_only=True)
    @example(obj={"type": "chat", "data": {"msgId": "ok-5", "toUserId": 7, "content": "x",
                                           "contentType": 1.0}}, ascii_only=True)
    @example(obj={"type": "read", "data": {"peerId": True}}, ascii_only=True)
    @example(obj={"type": "read", "data": {"peerId": 7.0}}, ascii_only=True)
    @example(obj={"type": "read", "data": {"peerId": -(2**64), "msgIds": "all"}},
             ascii_only=True)
    def check(obj, ascii_only):
        payload = to_json(obj, ascii_only)
        run.fuzzer.exchange([frame_bytes(OP_TEXT, payload)],
                            expect_for_text(payload, answer_to(obj, me)),
                            f"frame {payload[:300]!r}")

    check()
    assert_bystanders_fine(run.bystanders)


@fuzz_settings(40)
@given(text=st.one_of(
    st.sampled_from(["", " ", "{", "}", "[", '{"type":"ping"', '{"type":"ping",}', "ping", "nul",
                     "{'type':'ping'}", '{"type":NaN}', '{"type":"ping","data":Infinity}',
                     '{"type":"ping","data":-Infinity}', '{"type":"ping"}{"type":"ping"}',
                     '{"type":"ping","data":01}', '{"type":"ping","data":"\\x41"}', "\u0000",
                     '{"type":"ping","data":"\\ud800"', "\ufeff{}"]),
    st.text(UTF8, max_size=40).filter(lambda t: not _is_json(t))))
def test_text_that_is_not_json_is_bad_json(run, text):
    payload = text.encode("utf-8")
    run.fuzzer.exchange([frame_bytes(OP_TEXT, payload)],
                        Expect(answers=(error("bad_json"),)), f"text {text!r}")
    assert_bystanders_fine(run.bystanders)


def _is_json(text: str) -> bool:
    def no_constants(name: str):
        raise ValueError(f"{name} is not JSON")
    try:
        json.loads(text, parse_constant=no_constants)
        return True
    except (ValueError, RecursionError):
        return False


# ---------------------------------------------------------------------------
# 2. Deep nesting and very long strings

PARSEABLE_DEPTHS = (1, 2, 10, 100)
TOO_DEEP = (5_000, 100_000)            # beyond any JSON parser's nesting limit: bad_request


@fuzz_settings(30)
@given(depth=st.sampled_from(PARSEABLE_DEPTHS + TOO_DEEP),
       container=st.sampled_from(["array", "object"]),
       where=st.sampled_from(["bare", "ping-data", "chat-data", "read-msgIds", "type",
                              "auth-token", "unknown-type-data", "chat-extra-key"]))
@example(depth=100_000, container="array", where="bare")
@example(depth=100_000, container="array", where="ping-data")
@example(depth=100_000, container="array", where="chat-data")
def test_deep_nesting_is_bad_request_when_too_deep_to_parse(run, depth, container, where):
    if container == "array":
        deep, value = "[" * depth + "]" * depth, _nested_list(min(depth, 200))
    else:
        deep, value = '{"a":' * depth + "1" + "}" * depth, _nested_dict(min(depth, 200))
    shells = {
        "bare": "%s",
        "ping-data": '{"type":"ping","data":%s}',
        "chat-data": '{"type":"chat","data":%s}',
        "read-msgIds": '{"type":"read","data":{"peerId":7,"msgIds":%s}}',
        "type": '{"type":%s,"data":null}',
        "auth-token": '{"type":"auth","data":{"token":%s}}',
        "unknown-type-data": '{"type":"nope","data":%s}',
        "chat-extra-key": '{"type":"chat","data":{"toUserId":7,"content":"x","x":%s}}',
    }
    text = shells[where] % deep
    payload = text.encode()
    if depth in TOO_DEEP:
        answer = error("bad_request")        # "JSON nested so deeply that it cannot be parsed"
    else:
        obj = json.loads(text) if where != "bare" else value
        answer = answer_to(obj, run.fuzzer.me)
    run.fuzzer.exchange([frame_bytes(OP_TEXT, payload)], expect_for_text(payload, answer),
                        f"{depth}-deep {container} in {where} ({len(payload)} bytes)")
    assert_bystanders_fine(run.bystanders)


def _nested_list(depth: int):
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _nested_dict(depth: int):
    value = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@fuzz_settings(40)
@given(where=st.sampled_from(["content", "type", "msgId", "token", "unknown-key", "ping-data",
                              "to-digits"]),
       length=st.sampled_from([MAX_CONTENT - 1, MAX_CONTENT, MAX_CONTENT + 1, 64, 65, 10_000,
                               MAX // 4 - 100, MAX // 4 + 100, MAX]),
       char=st.sampled_from(["a", "\u00e9", "\u20ac", "\U0001d11e", "'", "\\", '"', "\u0000"]),
       ascii_only=st.booleans())
@example(where="content", length=MAX_CONTENT, char="\U0001d11e", ascii_only=False)
@example(where="content", length=MAX_CONTENT + 1, char="a", ascii_only=False)
def test_very_long_strings_get_their_answer(run, where, length, char, ascii_only):
    s = char * length
    obj: dict
    if where == "content":
        obj = {"type": "chat", "data": {"toUserId": 7, "content": s}}
    elif where == "type":
        obj = {"type": s, "data": None}
    elif where == "msgId":
        obj = {"type": "chat", "data": {"msgId": s, "toUserId": 7, "content": "x"}}
    elif where == "token":
        obj = {"type": "auth", "data": {"token": s}}
    elif where == "unknown-key":
        obj = {"type": "ping", "data": None, s[:1000]: s}
    elif where == "ping-data":
        obj = {"type": "ping", "data": s}
    else:   # an integer of `length` digits where an id belongs
        obj = None
    if obj is None:
        digits = "9" * min(length, MAX - 100)
        payload = ('{"type":"chat","data":{"toUserId":%s,"content":"x"}}' % digits).encode()
        answer = error("bad_request")
    else:
        payload = to_json(obj, ascii_only)
        answer = answer_to(obj, run.fuzzer.me)
    run.fuzzer.exchange([frame_bytes(OP_TEXT, payload)], expect_for_text(payload, answer),
                        f"{length} x {char!r} in {where} ({len(payload)} bytes)")
    assert_bystanders_fine(run.bystanders)


# ---------------------------------------------------------------------------
# 3. Fragmentation, control frames, invalid UTF-8

control_payload = st.binary(max_size=125)


@st.composite
def fragmented(draw, payload: bytes, opcode: int = OP_TEXT, controls: bool = True):
    """``payload`` cut into 1..6 fragments (anywhere, even inside a character), with
    protocol pings and pongs in between; the frames and the ping payloads in order."""
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=5)))
    bounds = [0] + cuts + [len(payload)]
    parts = [payload[a:b] for a, b in zip(bounds, bounds[1:])]
    wire, pings = [], []
    for i, part in enumerate(parts):
        if i and controls:
            for op, data in draw(st.lists(st.tuples(st.sampled_from([OP_PING, OP_PONG]),
                                                    control_payload), max_size=2)):
                wire.append(frame_bytes(op, data))
                if op == OP_PING:
                    pings.append(data)
        wire.append(frame_bytes(opcode if i == 0 else OP_CONT, part, fin=i == len(parts) - 1))
    return wire, tuple(pings)


@fuzz_settings(60)
@given(data=st.data(), obj=st.one_of(typed_frames(), json_values), ascii_only=st.booleans())
def test_fragmented_messages_with_control_frames_between_get_their_answer(run, data, obj,
                                                                          ascii_only):
    payload = to_json(obj, ascii_only)
    wire, pings = data.draw(fragmented(payload))
    expect = expect_for_text(payload, answer_to(obj, run.fuzzer.me), pings)
    run.fuzzer.exchange(wire, expect, f"{len(wire)} frames of {payload[:200]!r}")
    assert_bystanders_fine(run.bystanders)


# byte sequences that are invalid UTF-8 whatever follows them (an ASCII byte does)
INVALID_UTF8 = [b"\xff", b"\xfe", b"\xc0\xaf", b"\xc1\xbf", b"\x80", b"\xbf", b"\xe0\x80\xaf",
                b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
                b"\xf8\x88\x80\x80\x80", b"\xe2\x82", b"\xf0\x9f\x98", b"\xce"]


@fuzz_settings(50)
@given(data=st.data(), junk=st.sampled_from(INVALID_UTF8),
       where=st.sampled_from(["string", "key", "start", "end"]),
       body=st.sampled_from(['{"type":"ping","data":"%s"}',
                             '{"type":"chat","data":{"toUserId":7,"content":"a%sb"}}']))
def test_invalid_utf8_in_a_text_message_is_1007(run, data, junk, where, body):
    if where == "string":
        payload = (body % "\x00").encode().replace(b"\x00", junk)
    elif where == "key":
        payload = b'{"type":"ping","k' + junk + b'":1}'
    elif where == "start":
        payload = junk + b'{"type":"ping"}'
    else:            # the message ends inside (or right after) a bad sequence
        payload = b'{"type":"ping"} ' + junk
    wire, pings = data.draw(fragmented(payload))
    run.fuzzer.exchange(wire, Expect(close=1007, pongs=pings),
                        f"invalid UTF-8 {junk!r} at {where}, {len(wire)} frames")
    assert_bystanders_fine(run.bystanders)


VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000,
                     4001, 4999]
INVALID_CLOSE_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]


@st.composite
def control_cases(draw):
    """A control frame (or a framing violation) and what the contract answers."""
    case = draw(st.sampled_from(["ping", "pong", "ping-too-long", "close", "close-bad-code",
                                 "close-one-byte", "close-bad-utf8", "close-too-long",
                                 "close-empty", "fragmented-control", "unmasked", "rsv",
                                 "reserved-opcode", "close-mid-message"]))
    if case == "ping":
        p = draw(control_payload)
        return [frame_bytes(OP_PING, p)], Expect(pongs=(p,)), case
    if case == "pong":
        return [frame_bytes(OP_PONG, draw(control_payload))], Expect(), case
    if case == "ping-too-long":
        p = draw(st.binary(min_size=126, max_size=2000))
        return [frame_bytes(OP_PING, p)], Expect(close=1002), case
    if case in ("close", "close-mid-message"):
        code = draw(st.sampled_from(VALID_CLOSE_CODES))
        reason = draw(st.text(UTF8, max_size=30)).encode()     # at most 120 bytes
        wire = [frame_bytes(OP_CLOSE, close_payload(code, reason))]
        if case == "close-mid-message":
            # a close between fragments ends the connection; what follows is discarded
            wire = [frame_bytes(OP_TEXT, b'{"type":', fin=False)] + wire \
                + [frame_bytes(OP_CONT, b'"ping"}', fin=True)]
        return wire, Expect(close=code), f"{case} {code} {reason!r}"
    if case == "close-bad-code":
        code = draw(st.sampled_from(INVALID_CLOSE_CODES))
        return [frame_bytes(OP_CLOSE, close_payload(code))], Expect(close=1002), f"close {code}"
    if case == "close-one-byte":
        return [frame_bytes(OP_CLOSE, b"\x03")], Expect(close=1002), case
    if case == "close-bad-utf8":
        junk = draw(st.sampled_from(INVALID_UTF8))
        return [frame_bytes(OP_CLOSE, close_payload(1000, b"bye " + junk + b"!"))], \
            Expect(close=1007), case
    if case == "close-too-long":
        return [frame_bytes(OP_CLOSE, close_payload(1000, b"r" * 124))], Expect(close=1002), case
    if case == "close-empty":
        return [frame_bytes(OP_CLOSE, b"")], Expect(close=1000), case
    if case == "fragmented-control":
        op = draw(st.sampled_from([OP_PING, OP_PONG, OP_CLOSE]))
        return [frame_bytes(op, b"part", fin=False)], Expect(close=1002), case
    if case == "unmasked":
        op = draw(st.sampled_from([OP_TEXT, OP_BINARY, OP_PING, OP_PONG]))
        return [frame_bytes(op, PING_JSON, mask=False)], Expect(close=1002), case
    if case == "rsv":
        rsv = draw(st.integers(1, 7))
        return [frame_bytes(OP_TEXT, PING_JSON, rsv=rsv)], Expect(close=1002), f"rsv {rsv}"
    op = draw(st.sampled_from([0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF]))
    return [frame_bytes(op, draw(st.binary(max_size=20)))], Expect(close=1002), f"opcode {op:#x}"


@fuzz_settings(60)
@given(case=control_cases())
def test_control_frames_and_framing_errors_get_their_answer(run, case):
    wire, expect, what = case
    run.fuzzer.exchange(wire, expect, what)
    assert_bystanders_fine(run.bystanders)


# ---------------------------------------------------------------------------
# 4. Binary frames, and messages at and over MaxMessageSize

@fuzz_settings(30)
@given(data=st.data(), payload=st.one_of(st.binary(max_size=3000),
                                         st.just(PING_JSON.encode()), st.just(b"")))
def test_binary_messages_get_unsupported_frame(run, data, payload):
    wire, pings = data.draw(fragmented(payload, OP_BINARY))
    run.fuzzer.exchange(wire, Expect(answers=(error("unsupported_frame"),), pongs=pings),
                        f"binary {payload[:60]!r} in {len(wire)} frames")
    assert_bystanders_fine(run.bystanders)


def padded_ping(size: int, char: str) -> bytes:
    """An application ping of exactly ``size`` bytes (padding of ``char``)."""
    head, tail = b'{"type":"ping","data":null,"pad":"', b'"}'
    room = size - len(head) - len(tail)
    width = len(char.encode())
    text = head + char.encode() * (room // width) + b"z" * (room % width) + tail
    assert len(text) == size
    return text


@fuzz_settings(24)
@given(data=st.data(), opcode=st.sampled_from([OP_TEXT, OP_BINARY]), over=st.sampled_from([0, 1]),
       char=st.sampled_from(["p", "\u00e9", "\u20ac", "\U0001f600"]))
@example(data=None, opcode=OP_TEXT, over=0, char="p")
@example(data=None, opcode=OP_TEXT, over=1, char="p")
def test_messages_at_max_message_size_pass_and_one_byte_over_is_1009(run, data, opcode, over,
                                                                      char):
    payload = padded_ping(MAX + over, char) if opcode == OP_TEXT else b"\x01" * (MAX + over)
    if data is None:
        wire, pings = [frame_bytes(opcode, payload)], ()
    else:
        wire, pings = data.draw(fragmented(payload, opcode))
    if over:
        expect = Expect(close=1009, pongs=pings)
    elif opcode == OP_TEXT:
        expect = Expect(answers=(PONG,), pongs=pings)
    else:
        expect = Expect(answers=(error("unsupported_frame"),), pongs=pings)
    run.fuzzer.exchange(wire, expect, f"{len(payload)} bytes (max {MAX}) in {len(wire)} frames")
    assert_bystanders_fine(run.bystanders)


# ---------------------------------------------------------------------------
# 5. The aftermath (the module's last test)

def test_after_the_fuzz_the_gateway_is_whole_and_back_at_its_level(run):
    system, fuzzer, bystanders = run.system, run.fuzzer, run.bystanders
    bystanders.finish()
    assert_bystanders_fine(bystanders)
    assert bystanders.rounds >= 1, "the bystanders never chatted"
    fuzzer.drop()
    assert system.procs["gateway"].poll() is None, "the gateway process died"
    assert requests.get(system.url + "/healthz", timeout=10).status_code == 200
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        after = scrape(system)
        settled = (after["skyeim_ws_connections"] == run.before["skyeim_ws_connections"]
                   and after["skyeim_greenlets"] <= run.before["skyeim_greenlets"] + GREENLET_SLACK
                   and after["process_resident_memory_bytes"]
                   <= run.before["process_resident_memory_bytes"] + RSS_SLACK)
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    figures = (f"greenlets {run.before['skyeim_greenlets']:.0f} -> "
               f"{after['skyeim_greenlets']:.0f}, "
               f"RSS {run.before['process_resident_memory_bytes'] / 2**20:.1f} -> "
               f"{after['process_resident_memory_bytes'] / 2**20:.1f} MiB after "
               f"{fuzzer.examples} examples on {fuzzer.connects} connections, {fuzzer.stored} "
               f"chats stored; bystanders: "
               f"{bystanders.rounds} rounds, slowest {bystanders.slowest:.2f}s; "
               f"answers: {dict(fuzzer.outcomes.most_common())}")
    print("fuzz figures:", figures)
    assert settled, f"not back at the level within {SETTLE_TIMEOUT:g}s: {figures}"
    # nothing of a refused frame was stored: the fuzzer's rows are exactly its new acks
    engine = sa.create_engine(f"sqlite:///{system.tmp / 'message.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT COUNT(*) FROM messages WHERE from_user_id = :u"),
                                {"u": fuzzer.me.user_id}).scalar_one()
    finally:
        engine.dispose()
    assert rows == fuzzer.stored, f"{rows} messages stored from the fuzzer, {fuzzer.stored} acked"
    # the bystanders still chat after it all
    bystanders.chat_round()
    log = system.log_text()
    assert "Traceback" not in log, \
        "the gateway logged a traceback:\n" + log[log.index("Traceback"):][:3000]
