"""PROTOCOL.md section 4: error frames (bad_json, bad_request, unknown_type,
unsupported_frame, not_friends, rate_limited, unauthorized, forbidden);
the connection stays open after each."""
from __future__ import annotations

import json
import time

import pytest

from harness import new_msg_id, running_system


@pytest.fixture
def pair(system):
    alice, bob = system.minted_user("err_a"), system.minted_user("err_b")
    return alice, bob, system.connect(alice), system.connect(bob)


MISSING = object()


def assert_nothing_stored(system, alice, bob):
    assert system.history(alice, bob)["messages"] == []


# ---------------------------------------------------------------------------
# bad_json

@pytest.mark.parametrize("text", ["{not json", "", "   ", "{'type': 'ping'}", '{"type": "ping"',
                                  "ping", "[1, 2,]", "\x00"])
def test_text_that_is_not_json_is_bad_json(pair, text):
    alice, bob, ca, cb = pair
    ca.send_raw(text)
    ca.expect_error("bad_json", None)
    ca.assert_open()


# ---------------------------------------------------------------------------
# bad_request: the envelope

@pytest.mark.parametrize("payload", [
    [], [{"type": "ping"}], "ping", 1, 1.5, True, None,
    {}, {"data": None}, {"type": None}, {"type": 1}, {"type": True}, {"type": ["ping"]},
    {"type": {"name": "ping"}},
], ids=lambda p: json.dumps(p))
def test_json_that_is_not_an_object_with_string_type_is_bad_request(pair, payload):
    alice, bob, ca, cb = pair
    ca.send_json(payload)
    ca.expect_error("bad_request", None)
    ca.assert_open()


# ---------------------------------------------------------------------------
# bad_request: chat fields (nothing is stored, msgId null when it was not valid)

BAD_CHAT_DATA = {
    "data-missing": "MISSING",
    "data-null": None,
    "data-list": [],
    "data-string": "hello",
}


@pytest.mark.parametrize("data", list(BAD_CHAT_DATA.values()), ids=list(BAD_CHAT_DATA))
def test_chat_without_object_data_is_bad_request(system, pair, data):
    alice, bob, ca, cb = pair
    if data == "MISSING":
        ca.send("chat")
    else:
        ca.send("chat", data)
    ca.expect_error("bad_request", None)
    ca.assert_open()


BAD_TO = {
    "missing": lambda bob: MISSING,
    "null": lambda bob: None,
    "string-id": lambda bob: str(bob.id),
    "float-id": lambda bob: float(bob.id),
    "true": lambda bob: True,
    "false": lambda bob: False,
    "zero": lambda bob: 0,
    "negative": lambda bob: -1,
    "2^63": lambda bob: 2**63,
    "list": lambda bob: [bob.id],
    "object": lambda bob: {"id": bob.id},
    "text": lambda bob: "abc",
}


@pytest.mark.parametrize("make_to", list(BAD_TO.values()), ids=list(BAD_TO))
def test_chat_with_invalid_to_user_id_is_bad_request(system, pair, make_to):
    alice, bob, ca, cb = pair
    mid = new_msg_id()
    data = {"msgId": mid, "content": "x"}
    to = make_to(bob)
    if to is not MISSING:
        data["toUserId"] = to
    ca.send("chat", data)
    ca.expect_error("bad_request", mid)   # the msgId was valid, so it is echoed
    ca.assert_open()
    cb.assert_no_frame(0.2)
    assert_nothing_stored(system, alice, bob)


def test_float_user_id_in_raw_json_is_bad_request(system, pair):
    """``2.0`` in the JSON text is a float, not an integer, even if it is whole."""
    alice, bob, ca, cb = pair
    mid = new_msg_id()
    ca.send_raw('{"type": "chat", "data": {"msgId": "%s", "toUserId": %d.0, "content": "x"}}'
                % (mid, bob.id))
    ca.expect_error("bad_request", mid)
    cb.assert_no_frame(0.2)


def test_chat_to_oneself_is_bad_request(system, pair):
    alice, bob, ca, cb = pair
    mid = ca.chat(alice, "note to self")
    ca.expect_error("bad_request", mid)
    ca.assert_open()
    ca.assert_no_frame(0.3)          # no ack follows


@pytest.mark.parametrize("content", ["MISSING", None, "", 123, ["a"], {"t": "a"}, True],
                         ids=["missing", "null", "empty", "number", "list", "object", "bool"])
def test_chat_with_invalid_content_is_bad_request(system, pair, content):
    alice, bob, ca, cb = pair
    mid = new_msg_id()
    data = {"msgId": mid, "toUserId": bob.id}
    if content != "MISSING":
        data["content"] = content
    ca.send("chat", data)
    ca.expect_error("bad_request", mid)
    ca.assert_open()
    cb.assert_no_frame(0.2)
    assert_nothing_stored(system, alice, bob)


def test_content_longer_than_max_content_length_is_bad_request(system, pair):
    alice, bob, ca, cb = pair
    limit = system.ws_config["Chat"]["MaxContentLength"]
    mid = ca.chat(bob, "y" * (limit + 1))
    ca.expect_error("bad_request", mid)
    ca.assert_open()
    assert_nothing_stored(system, alice, bob)


@pytest.mark.parametrize("content_type", [0, 5, -1, 1.5, 1.0, "1", True, [1]],
                         ids=["0", "5", "-1", "1.5", "1.0", "string", "true", "list"])
def test_chat_with_invalid_content_type_is_bad_request(system, pair, content_type):
    alice, bob, ca, cb = pair
    mid = ca.chat(bob, "x", content_type=content_type)
    ca.expect_error("bad_request", mid)
    ca.assert_open()
    assert_nothing_stored(system, alice, bob)


@pytest.mark.parametrize("msg_id", ["", "x" * 65, "has space", "slash/id", "dot.id", "émoji",
                                    "semi;colon", 123, True, ["id"], {"id": "x"}],
                         ids=["empty", "65-chars", "space", "slash", "dot", "non-ascii",
                              "semicolon", "number", "bool", "list", "object"])
def test_chat_with_invalid_msg_id_is_bad_request_with_null_msg_id(system, pair, msg_id):
    alice, bob, ca, cb = pair
    ca.chat(bob, "x", msg_id=msg_id)
    ca.expect_error("bad_request", None)
    ca.assert_open()
    cb.assert_no_frame(0.2)
    assert_nothing_stored(system, alice, bob)


@pytest.mark.parametrize("msg_id", ["a", "A-Z_a-z_0-9", "x" * 64, "-", "_"])
def test_valid_msg_id_shapes_are_accepted(pair, msg_id):
    alice, bob, ca, cb = pair
    ca.chat(bob, "x", msg_id=msg_id)
    ca.expect_ack(msg_id, "sent")
    assert cb.expect("chat")["msgId"] == msg_id


def test_error_msg_id_is_the_chats_when_valid(pair):
    alice, bob, ca, cb = pair
    mid = ca.chat(bob, "")
    err = ca.expect_error("bad_request", mid)
    assert err["msgId"] == mid


# ---------------------------------------------------------------------------
# bad_request: read and auth fields

@pytest.mark.parametrize("data", [
    "MISSING", None, [], {}, {"peerId": None}, {"peerId": "1"}, {"peerId": 1.5}, {"peerId": True},
    {"peerId": 0}, {"peerId": 2**63}, {"peerId": "PEER", "msgIds": "abc"},
    {"peerId": "PEER", "msgIds": [1, 2]}, {"peerId": "PEER", "msgIds": {"a": 1}},
    {"peerId": "PEER", "msgIds": [""]},
], ids=["missing", "null", "list", "empty", "peer-null", "peer-string", "peer-float",
        "peer-bool", "peer-zero", "peer-2^63", "msgIds-string", "msgIds-numbers",
        "msgIds-object", "msgIds-empty-string"])
def test_read_with_invalid_fields_is_bad_request(pair, data):
    alice, bob, ca, cb = pair
    if isinstance(data, dict) and data.get("peerId") == "PEER":
        data = {**data, "peerId": bob.id}
    if data == "MISSING":
        ca.send("read")
    else:
        ca.send("read", data)
    ca.expect_error("bad_request", None)
    ca.assert_open()
    cb.assert_no_frame(0.2)


@pytest.mark.parametrize("data", ["MISSING", None, {}, {"token": None}, {"token": 123},
                                  {"token": ["t"]}, "token-as-data"],
                         ids=["missing", "null", "empty", "token-null", "token-number",
                              "token-list", "string-data"])
def test_auth_without_string_token_is_bad_request(pair, data):
    alice, bob, ca, cb = pair
    if data == "MISSING":
        ca.send("auth")
    else:
        ca.send("auth", data)
    ca.expect_error("bad_request", None)
    ca.assert_open()


def test_auth_with_invalid_token_is_unauthorized(system, pair):
    alice, bob, ca, cb = pair
    for token in ["garbage", system.token_for(alice.id, secret="other-secret"),
                  system.token_for(alice.id, exp=int(time.time()) - 120),
                  system.token_for(alice.id, alg="none"), system.token_for("1")]:
        ca.send("auth", {"token": token})
        ca.expect_error("unauthorized", None)
        ca.assert_open()


@pytest.mark.parametrize("token", ["\\ud800", "a.b.\\udfff", "\\ud83d.\\ude00x"],
                         ids=["lone-high", "lone-low-in-jwt", "split-pair"])
def test_auth_token_with_a_lone_surrogate_is_unauthorized(system, pair, token):
    """A JSON \\ud800 escape makes a string that is no UTF-8, so no JWT: unauthorized,
    not internal (found by test_fuzz_frames.py), and nothing is logged as a crash."""
    alice, bob, ca, cb = pair
    log_before = len(system.log_text())
    ca.send_raw('{"type":"auth","data":{"token":"%s"}}' % token)
    ca.expect_error("unauthorized", None)
    ca.assert_open()
    assert "Traceback" not in system.log_text()[log_before:]


def test_auth_with_another_users_token_is_forbidden(system, pair):
    alice, bob, ca, cb = pair
    ca.send("auth", {"token": bob.token})
    ca.expect_error("forbidden", None)
    ca.assert_open()
    # still alice
    mid = ca.chat(bob, "still alice")
    ca.expect_ack(mid, "sent")
    assert cb.expect("chat")["fromUserId"] == alice.id


def test_auth_with_fresh_token_of_same_user_is_accepted_silently(system, pair):
    alice, bob, ca, cb = pair
    ca.send("auth", {"token": system.token_for(alice.id, exp_in=7200)})
    ca.assert_no_frame(0.5)
    ca.assert_open()


# ---------------------------------------------------------------------------
# unknown_type and unsupported_frame

@pytest.mark.parametrize("type_", ["hello", "CHAT", "Chat", "", "ack", "connected", "pong",
                                   "online", "offline", "error", "token_expiring"])
def test_type_not_accepted_from_clients_is_unknown_type(pair, type_):
    alice, bob, ca, cb = pair
    ca.send(type_, {"msgId": "m1", "status": "sent"})
    ca.expect_error("unknown_type", None)
    ca.assert_open()


def test_binary_frame_is_unsupported_frame(pair):
    alice, bob, ca, cb = pair
    ca.send_raw(json.dumps({"type": "ping", "data": None}).encode(), opcode=0x2)
    ca.expect_error("unsupported_frame", None)
    ca.assert_open()


def test_every_error_leaves_the_connection_usable(system, pair):
    alice, bob, ca, cb = pair
    ca.send_raw("{oops")
    ca.send_json([])
    ca.send("nope", None)
    ca.send_raw(b"\x01\x02", opcode=0x2)
    ca.chat(alice, "self")
    codes = [ca.expect("error")["code"] for _ in range(5)]
    assert codes == ["bad_json", "bad_request", "unknown_type", "unsupported_frame", "bad_request"]
    mid = ca.chat(bob, "after the errors")
    ca.expect_ack(mid, "sent")
    assert cb.expect("chat")["msgId"] == mid


def test_app_ping_without_data_is_answered(pair):
    alice, bob, ca, cb = pair
    ca.send("ping")
    assert ca.expect("pong", skip=()) is None


# ---------------------------------------------------------------------------
# Chat limits and friendship: a system with RequireFriendship and a small MaxContentLength

@pytest.fixture(scope="module")
def strict_system(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("strict"),
                        ws={"Chat": {"RequireFriendship": True, "MaxContentLength": 10}}) as s:
        yield s


def test_chat_to_non_friend_is_not_friends(strict_system):
    s = strict_system
    alice, bob = s.users("nf_a", "nf_b")
    ca, cb = s.connect(alice), s.connect(bob)
    mid = ca.chat(bob, "hi")
    ca.expect_error("not_friends", mid)
    ca.assert_open()
    cb.assert_no_frame(0.3)
    assert_nothing_stored(s, alice, bob)
    cb.close()
    assert s.connect(bob).backlog == []


def test_chat_to_friend_works_and_stops_after_unfriend(strict_system):
    s = strict_system
    alice, bob = s.users("nff_a", "nff_b")
    s.befriend(alice, bob)
    ca, cb = s.connect(alice), s.connect(bob)
    mid = ca.chat(bob, "hi friend")
    ca.expect_ack(mid, "sent", skip=("pong", "online"))
    assert cb.expect("chat", skip=("pong", "online"))["msgId"] == mid
    s.unfriend(alice, bob)
    mid2 = ca.chat(bob, "still?")
    # (friend_removed, PROTOCOL.md 9.5, when the unfriending went through the gateway)
    ca.expect_error("not_friends", mid2, skip=("pong", "online", "offline", "ack", "friend_removed"))
    cb.assert_no_frame(0.3, skip=("pong", "online", "offline", "friend_removed"))


def test_read_is_allowed_between_non_friends(strict_system):
    """RequireFriendship refuses chats only; reading what was received stays possible."""
    s = strict_system
    alice, bob = s.users("nfr_a", "nfr_b")
    s.befriend(alice, bob)
    ca = s.connect(alice)
    mid = ca.chat(bob, "hi")
    ca.expect_ack(mid, "sent")
    s.unfriend(alice, bob)
    cb = s.connect(bob)
    assert [m["msgId"] for m in cb.backlog] == [mid]
    cb.read(alice)
    assert ca.expect("read", skip=("pong", "ack", "friend_removed"))["msgIds"] == [mid]


def test_max_content_length_counts_code_points(strict_system):
    s = strict_system
    alice, bob = s.users("cp_a", "cp_b")
    s.befriend(alice, bob)
    ca, cb = s.connect(alice), s.connect(bob)
    ten_emoji = "😀" * 10           # 10 code points, 40 UTF-8 bytes, 20 UTF-16 units
    mid = ca.chat(bob, ten_emoji)
    ca.expect_ack(mid, "sent", skip=("pong", "online"))
    ca.expect_ack(mid, "delivered", skip=("pong", "online"))
    assert cb.expect("chat", skip=("pong", "online"))["content"] == ten_emoji
    ten_cjk = "字" * 10
    mid = ca.chat(bob, ten_cjk)
    ca.expect_ack(mid, "sent", skip=("pong", "online"))
    ca.expect_ack(mid, "delivered", skip=("pong", "online"))
    mid = ca.chat(bob, "a" * 11)
    ca.expect_error("bad_request", mid, skip=("pong", "online", "ack"))
    mid = ca.chat(bob, "😀" * 11)
    ca.expect_error("bad_request", mid, skip=("pong", "online", "ack"))


# ---------------------------------------------------------------------------
# rate_limited

@pytest.fixture(scope="module")
def limited_system(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("ratelimit"),
                        ws={"WebSocket": {"RateLimit": {"Rate": 1, "Burst": 5}}}) as s:
        yield s


def test_frames_over_the_rate_are_rate_limited_and_not_stored(limited_system):
    s = limited_system
    alice, bob = s.users("rl_a", "rl_b")
    ca = s.connect(alice)
    ids = [new_msg_id() for _ in range(12)]
    start = time.monotonic()
    for i, mid in enumerate(ids):
        ca.chat(bob, f"burst {i}", msg_id=mid)
    elapsed = time.monotonic() - start
    assert elapsed < 1.0, "sending took too long for a meaningful burst"
    accepted, refused = [], []
    for _ in ids:
        frame = ca.recv_frame()
        if frame["type"] == "ack":
            assert frame["data"]["status"] == "sent", frame
            accepted.append(frame["data"]["msgId"])
        else:
            assert frame["type"] == "error", frame
            err = frame["data"]
            assert err["code"] == "rate_limited", err
            refused.append(err["msgId"])
    assert 5 <= len(accepted) <= 6, (accepted, refused)
    assert accepted == ids[:len(accepted)]          # the burst, in order
    assert sorted(refused) == sorted(ids[len(accepted):])   # each refused chat named
    ca.assert_no_frame(0.3)
    # nothing of a refused frame is stored
    cb = s.connect(bob)
    assert [m["msgId"] for m in cb.backlog] == accepted
    hist = s.history(alice, bob, limit=50)["messages"]
    assert sorted(m["msgId"] for m in hist) == sorted(accepted)


def test_rate_limit_refills_and_connection_stays_open(limited_system):
    s = limited_system
    alice, bob = s.users("rlr_a", "rlr_b")
    ca = s.connect(alice)
    for _ in range(8):
        ca.send("ping", None)
    frames = [ca.recv_frame() for _ in range(8)]
    kinds = [f["type"] for f in frames]
    assert kinds.count("pong") in (5, 6), kinds
    errors = [f["data"] for f in frames if f["type"] == "error"]
    assert errors and all(e["code"] == "rate_limited" and e["msgId"] is None for e in errors)
    time.sleep(2.2)   # the bucket refills at Rate 1/s: a time-based wait by design
    mid = ca.chat(bob, "after the pause")
    ca.expect_ack(mid, "sent")
    ca.send("ping", None)
    ca.expect("pong", skip=())


def test_rate_limit_is_per_connection(limited_system):
    s = limited_system
    alice, bob = s.users("rlp_a", "rlp_b")
    ca, cb = s.connect(alice), s.connect(bob)
    for _ in range(5):
        ca.send("ping", None)
    assert [ca.expect("pong", skip=()) for _ in range(5)] == [None] * 5
    ca.send("ping", None)
    ca.expect_error("rate_limited", None)
    # bob's bucket is untouched
    for _ in range(5):
        cb.send("ping", None)
    assert [cb.expect("pong", skip=()) for _ in range(5)] == [None] * 5


def test_chat_without_msg_id_gets_errors_with_a_null_msg_id(system):
    """An error echoes only a msgId the client sent: a chat without one gets null,
    even though the server would have made one had the chat been valid."""
    alice = system.minted_user("nomid")
    ca = system.connect(alice)
    ca.send("chat", {"toUserId": "nope", "content": "x"})
    ca.expect_error("bad_request", msg_id=None)
    ca.send("chat", {"toUserId": alice.id, "content": "to myself"})
    ca.expect_error("bad_request", msg_id=None)
    ca.assert_open()


def test_huge_integer_is_bad_request_and_nan_is_bad_json(system):
    alice = system.minted_user("hugeint")
    ca = system.connect(alice)
    ca.send_raw('{"type":"chat","data":{"msgId":"h1","toUserId":' + "9" * 5000 + ',"content":"x"}}')
    ca.expect_error("bad_request", msg_id="h1")
    ca.send_raw('{"type":"ping","data":' + "1" * 5000 + '}')
    ca.expect("pong")                                   # ping's data is ignored, whatever it is
    ca.send_raw('{"type":"chat","data":{"msgId":"h2","toUserId":NaN,"content":"x"}}')
    ca.expect_error("bad_json")
    ca.assert_open()
