"""The Python client SDK (skyeim.client) against a live system: typed frames,
send with sent/delivered acks, iterator and callbacks, read receipts, presence,
refused handshakes, close codes (4001 stops, 4003 needs a token), reconnect
with backoff, and the outbox: a chat survives a dropped connection exactly once.

Connections are cut deterministically with a small TCP proxy (``Proxy``)
between the SDK client and the gateway, which can blackhole either direction
of a connection and then cut it."""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import time

import pytest

from harness import PYTHON, REPO, new_msg_id, running_system, wait_until
from sdk_harness import Proxy, drain, frames_until, next_of
from skyeim.client import (Ack, Api, AuthError, Backoff, ChatError, ChatMessage,
                           ClientClosed, Conflict, ConnectFailed, Connected, ErrorFrame,
                           ForbiddenOrigin, Frame, NotFound, OutboxFull, Overloaded, Pong,
                           Presence, ReadReceipt, ReconnectFailed, Replaced,
                           ServiceUnavailable, TokenExpired, TokenExpiring, TokenRefused,
                           Unauthorized,
                           parse_frame, ws_url)
from skyeim.client.backoff import RateLimiter



@pytest.fixture
def proxy(system):
    p = Proxy(system.port)
    yield p
    p.close()


def history_ids(system, user, peer) -> list[str]:
    return [m["msgId"] for m in system.history(user, peer, limit=200)["messages"]]


# ---------------------------------------------------------------------------
# Units: frames, URLs, backoff, rate limit

def test_frames_are_parsed_into_typed_dataclasses():
    chat = parse_frame({"type": "chat", "data": {
        "msgId": "m1", "fromUserId": 1, "toUserId": 2, "content": "hi", "contentType": 1,
        "createdAt": 1700000000000, "seq": 3, "futureField": True}})
    assert chat == ChatMessage("m1", 1, 2, "hi", 1, 1700000000000, 3)
    assert chat.type == "chat" and chat.raw["data"]["futureField"] is True
    assert parse_frame({"type": "ack", "data": {"msgId": "m1", "status": "sent", "timestamp": 5,
                                               "seq": 3, "duplicate": True}}) \
        == Ack("m1", "sent", 5, 3, True)
    assert parse_frame({"type": "ack", "data": {"msgId": "m1", "status": "delivered",
                                               "timestamp": 6, "seq": 3}}).duplicate is False
    assert parse_frame({"type": "read", "data": {"peerId": 2, "msgIds": ["a", "b"],
                                                "timestamp": 7}}) == ReadReceipt(2, ("a", "b"), 7)
    on = parse_frame({"type": "online", "data": {"userId": 4, "timestamp": 8}})
    off = parse_frame({"type": "offline", "data": {"userId": 4, "timestamp": 9}})
    assert on == Presence(4, True, 8) and on.type == "online"
    assert off == Presence(4, False, 9) and off.type == "offline"
    assert parse_frame({"type": "connected", "data": {
        "userId": 1, "onlineCount": 3, "onlineFriends": [2, 4], "unreadPushed": 0,
        "serverTime": 10}}) == Connected(1, 3, (2, 4), 0, 10)
    assert parse_frame({"type": "error", "data": {"msgId": None, "code": "bad_json",
                                                 "message": "x"}}) == ErrorFrame(None, "bad_json", "x")
    assert parse_frame({"type": "token_expiring", "data": {"expiresAt": 11}}) == TokenExpiring(11)
    assert isinstance(parse_frame({"type": "pong", "data": None}), Pong)


def test_unknown_frame_types_pass_through_as_generic_frames():
    f = parse_frame({"type": "sticker", "data": {"userId": 3}, "extra": 1})
    assert f == Frame("sticker", {"userId": 3}) and f.type == "sticker" and f.raw["extra"] == 1
    # a known type with an unexpected shape does not break the client either
    assert parse_frame({"type": "ack", "data": "weird"}) == Frame("ack", "weird")
    with pytest.raises(ValueError):
        parse_frame({"data": {}})


def test_ws_url_is_derived_from_the_http_url():
    assert ws_url("http://127.0.0.1:10300") == "ws://127.0.0.1:10300/ws"
    assert ws_url("https://im.example.com/chat/") == "wss://im.example.com/chat/ws"
    assert ws_url("ws://h:1/ws") == "ws://h:1/ws"
    with pytest.raises(ValueError):
        ws_url("ftp://h")


def test_backoff_is_exponential_with_full_jitter():
    b = Backoff(base=0.5, cap=4.0, rng=random.Random(7))
    assert [b.ceiling(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.ceiling(10_000) == 4.0
    for n in range(1, 8):
        samples = [b.delay(n) for _ in range(2000)]
        assert all(0 <= d <= b.ceiling(n) for d in samples)
        # full jitter: spread over the whole range, not bunched near the ceiling
        assert abs(sum(samples) / len(samples) - b.ceiling(n) / 2) < 0.1 * b.ceiling(n)
        deciles = [0] * 10
        for d in samples:
            deciles[min(int(d / b.ceiling(n) * 10), 9)] += 1
        assert max(deciles) < 0.15 * len(samples), deciles
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(base=2, cap=1)


def test_rate_limiter_token_bucket():
    now = [0.0]
    rl = RateLimiter(10, 3, clock=lambda: now[0])
    assert [rl.try_take() for _ in range(4)] == [True, True, True, False]
    assert rl.wait_time() == pytest.approx(0.1)
    now[0] += 0.1
    assert rl.try_take() and not rl.try_take()


# ---------------------------------------------------------------------------
# Chatting

def test_send_waits_for_sent_and_delivered_and_the_peer_gets_a_typed_chat(system, clients):
    alice, bob = system.users("sdk_a", "sdk_b")
    ca = clients(system.url, alice.token)                       # token in the query
    cb = clients(system.ws_url, bob.token, use_header=True)      # Authorization: Bearer
    assert ca.user_id == alice.id and cb.user_id == bob.id
    assert isinstance(ca.connected_info, Connected) and ca.live

    sent = ca.send_chat(bob.id, "hello bob", wait="sent")
    assert sent.status in ("sent", "delivered") and type(sent.seq) is int
    assert type(sent.created_at) is int and sent.duplicate is False
    chat = next_of(cb, ChatMessage)
    assert chat.msg_id == sent.msg_id and chat.content == "hello bob"
    assert (chat.from_user_id, chat.to_user_id, chat.content_type, chat.seq) == \
        (alice.id, bob.id, 1, sent.seq)

    done = ca.send_chat(bob.id, "second", content_type=2, wait="delivered")
    assert done.status == "delivered" and done.seq == sent.seq + 1
    assert type(done.delivered_at) is int and done.delivered_at >= done.created_at
    assert next_of(cb, ChatMessage).content_type == 2
    assert ca.outbox == []


def test_send_without_waiting_then_wait_ack(system, clients):
    alice, bob = system.users("sdkw_a", "sdkw_b")
    ca, cb = clients(system.url, alice.token), clients(system.url, bob.token)
    mid = new_msg_id()
    r = ca.send_chat(bob.id, "later", msg_id=mid, wait=None)
    assert r.msg_id == mid and r.status in ("queued", "sent", "delivered")
    assert ca.wait_ack(mid, "delivered").status == "delivered"
    assert ca.result(mid).status == "delivered"
    assert next_of(cb, ChatMessage).msg_id == mid
    with pytest.raises(KeyError):
        ca.wait_ack("never-sent")


def test_iterator_and_callbacks_see_the_same_frames(system, clients):
    alice, bob = system.users("sdki_a", "sdki_b")
    cb = clients(system.url, bob.token, connect=False)
    chats, everything, acks = [], [], []
    cb.on("chat", chats.append)
    cb.on("*", everything.append)

    @cb.on(Ack)
    def never(frame):           # bob sends nothing, so no ack
        acks.append(frame)

    cb.connect()
    ca = clients(system.url, alice.token)
    mids = [ca.send_chat(bob.id, f"n{i}", wait="delivered").msg_id for i in range(3)]
    got = [f.msg_id for f in frames_until(cb, lambda f: getattr(f, "msg_id", None) == mids[-1])
           if isinstance(f, ChatMessage)]
    assert got == mids
    assert [c.msg_id for c in chats] == mids
    assert [f.type for f in everything] == ["connected", "chat", "chat", "chat"]
    assert acks == []
    # a callback that raises does not stop the reader
    cb.on("chat", lambda f: 1 / 0)
    ca.send_chat(bob.id, "still", wait="delivered")
    assert next_of(cb, ChatMessage).content == "still"


def test_backlog_chats_come_before_connected(system, clients):
    alice, bob = system.users("sdkb_a", "sdkb_b")
    seeded = system.seed_message(alice, bob, "while you were out")
    cb = clients(system.url, bob.token)
    first, second = cb.next_frame(5), cb.next_frame(5)
    assert isinstance(first, ChatMessage) and first.msg_id == seeded["msgId"]
    assert isinstance(second, Connected) and second.unread_pushed == 1


def test_mark_read_reaches_the_peer(system, clients):
    alice, bob = system.users("sdkr_a", "sdkr_b")
    ca, cb = clients(system.url, alice.token), clients(system.url, bob.token)
    m1 = ca.send_chat(bob.id, "one", wait="delivered").msg_id
    m2 = ca.send_chat(bob.id, "two", wait="delivered").msg_id
    cb.mark_read(alice.id, [m1])
    receipt = next_of(ca, ReadReceipt)
    assert receipt.peer_id == bob.id and receipt.msg_ids == (m1,)
    assert type(receipt.timestamp) is int
    cb.mark_read(alice.id)            # every unread one from alice
    assert next_of(ca, ReadReceipt).msg_ids == (m2,)
    statuses = {m["msgId"]: m["status"] for m in system.history(alice, bob)["messages"]}
    assert statuses == {m1: "read", m2: "read"}


def test_presence_frames_are_typed(system, clients):
    alice, bob = system.users("sdkp_a", "sdkp_b")
    system.befriend(alice, bob)
    ca = clients(system.url, alice.token)
    cb = clients(system.url, bob.token)
    assert cb.connected_info.online_friends == (alice.id,)
    on = next_of(ca, Presence)
    assert on == Presence(bob.id, True, on.timestamp) and on.type == "online"
    cb.close()
    off = next_of(ca, Presence)
    assert off.user_id == bob.id and off.online is False and off.type == "offline"


def test_ping_returns_the_round_trip_and_a_pong_frame(system, clients):
    (alice,) = system.users("sdkping")
    ca = clients(system.url, alice.token)
    rtt = ca.ping()
    assert 0 <= rtt < 5
    assert isinstance(next_of(ca, Pong), Pong)


def test_a_refused_chat_raises_chat_error_and_leaves_the_outbox(system, clients):
    (alice,) = system.users("sdke")
    ca = clients(system.url, alice.token)
    with pytest.raises(ChatError) as e:
        ca.send_chat(alice.id, "to myself")
    assert e.value.code == "bad_request" and ca.outbox == []
    err = next_of(ca, ErrorFrame)
    assert err.code == "bad_request" and err.msg_id == e.value.msg_id
    with pytest.raises(ValueError):
        ca.send_chat(0, "x")
    with pytest.raises(ValueError):
        ca.send_chat(2, "x", msg_id="not valid!")
    with pytest.raises(ValueError):
        ca.send_chat(2, "x" * 70000)


def test_refresh_token_accepts_a_fresh_token_and_refuses_another_users(system, clients):
    alice, bob = system.users("sdkt_a", "sdkt_b")
    ca = clients(system.url, alice.token)
    fresh = system.token_for(alice.id, exp_in=7200)
    ca.refresh_token(fresh)
    assert ca.token == fresh
    with pytest.raises(TokenRefused) as e:
        ca.refresh_token(bob.token)
    assert e.value.code == "forbidden" and ca.token == fresh
    with pytest.raises(TokenRefused) as e:
        ca.refresh_token("garbage")
    assert e.value.code == "unauthorized" and ca.token == fresh
    assert ca.ping() is not None                     # still open


def test_send_before_connect_is_queued_and_the_outbox_is_bounded(system, clients):
    alice, bob = system.users("sdkq_a", "sdkq_b")
    ca = clients(system.url, alice.token, connect=False, max_outbox=2)
    r1 = ca.send_chat(bob.id, "queued 1", wait=None)
    r2 = ca.send_chat(bob.id, "queued 2", wait=None)
    assert (r1.status, r2.status) == ("queued", "queued")
    with pytest.raises(OutboxFull):
        ca.send_chat(bob.id, "one too many", wait=None, timeout=0.2)
    assert ca.outbox == [r1.msg_id, r2.msg_id]
    ca.connect()
    assert ca.wait_ack(r1.msg_id).status != "queued"
    assert ca.wait_ack(r2.msg_id).status != "queued"
    assert history_ids(system, alice, bob) == [r2.msg_id, r1.msg_id]


def test_a_large_outbox_is_paced_under_the_gateway_rate_limit(system, clients):
    alice, bob = system.users("sdkpace_a", "sdkpace_b")
    ca = clients(system.url, alice.token, connect=False, max_outbox=300)
    errors = []
    ca.on(ErrorFrame, errors.append)
    mids = [ca.send_chat(bob.id, f"burst {i}", wait=None).msg_id for i in range(150)]
    ca.connect()                               # 150 at once would exceed Burst 100
    for mid in mids:
        assert ca.wait_ack(mid, "sent", timeout=15).status == "sent"
    assert errors == [] and ca.outbox == []
    assert history_ids(system, alice, bob)[::-1] == mids        # stored in the order sent


@pytest.mark.timeout(120)
def test_rate_limited_chats_are_resent_later(system_factory, clients):
    s = system_factory(ws={"WebSocket": {"RateLimit": {"Rate": 5, "Burst": 5}}})
    alice, bob = s.users("sdkrl_a", "sdkrl_b")
    ca = clients(s.url, alice.token, rate_limit=None)       # no pacing on the client side
    errors = []
    ca.on(ErrorFrame, errors.append)
    mids = [ca.send_chat(bob.id, f"fast {i}", wait=None).msg_id for i in range(12)]
    for mid in mids:
        assert ca.wait_ack(mid, "sent", timeout=30).status == "sent"
    assert errors and {e.code for e in errors} == {"rate_limited"}
    stored = [m["msgId"] for m in s.history(alice, bob, limit=50)["messages"]]
    assert sorted(stored) == sorted(mids) and len(stored) == 12


# ---------------------------------------------------------------------------
# Refused handshakes and close codes

def test_bad_token_is_unauthorized(system, clients):
    for token in ("not-a-jwt", system.token_for(1, secret="wrong-secret-wrong-secret-wrong!"),
                  None):
        c = clients(system.url, token, connect=False)
        with pytest.raises(Unauthorized) as e:
            c.connect()
        assert e.value.status == 401 and e.value.code == "unauthorized" and e.value.message
    (alice,) = system.users("sdkh")
    c = clients(system.url, system.token_for(alice.id, exp_in=-10), connect=False, use_header=True)
    with pytest.raises(Unauthorized):
        c.connect()


def test_unreachable_gateway_is_connect_failed(clients):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = clients(f"http://127.0.0.1:{port}", "t", connect=False)
    with pytest.raises(ConnectFailed):
        c.connect()


@pytest.mark.timeout(120)
def test_forbidden_origin_and_overloaded(system_factory, clients):
    s = system_factory(ws={"WebSocket": {"AllowedOrigins": ["https://good.example"],
                                         "MaxConnections": 1}})
    alice, bob = s.users("sdko_a", "sdko_b")
    evil = clients(s.url, alice.token, connect=False, origin="https://evil.example")
    with pytest.raises(ForbiddenOrigin) as e:
        evil.connect()
    assert e.value.status == 403 and e.value.code == "forbidden_origin"
    good = clients(s.url, alice.token, origin="https://good.example")     # holds the one socket
    assert good.live
    full = clients(s.url, bob.token, connect=False)
    with pytest.raises(Overloaded) as e:
        full.connect()
    assert e.value.status == 503 and e.value.code == "overloaded"


def test_replaced_4001_ends_the_client_without_reconnecting(system, clients):
    alice, bob = system.users("sdk4001_a", "sdk4001_b")
    ca = clients(system.url, alice.token)
    pending = ca.send_chat(bob.id, "before the kick", wait="sent")
    other = clients(system.url, alice.token)            # a newer login of alice
    with pytest.raises(Replaced) as e:
        for _ in ca.frames(timeout=5):
            pass
    assert e.value.code == 4001
    time.sleep(0.5)
    assert ca.reconnect_attempts == 0 and isinstance(ca.error, Replaced) and not ca.live
    with pytest.raises(Replaced):
        ca.send_chat(bob.id, "after the kick")
    assert other.live and pending.status == "sent"


@pytest.fixture(scope="module")
def expiry_system(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("sdk_expiry"),
                        ws={"Auth": {"EnforceExpiry": True, "ExpiryWarning": 60}}) as s:
        yield s


def test_token_expired_4003_without_a_provider_ends_the_client(expiry_system, clients):
    s = expiry_system
    (alice,) = s.users("sdk4003")
    c = clients(s.url, s.token_for(alice.id, exp_in=2))
    warning = next_of(c, TokenExpiring)
    assert type(warning.expires_at) is int
    with pytest.raises(TokenExpired) as e:
        for _ in c.frames(timeout=10):
            pass
    assert e.value.code == 4003
    time.sleep(0.3)
    assert c.reconnect_attempts == 0


def test_token_provider_refreshes_before_expiry_and_after_4003(expiry_system, clients):
    s = expiry_system
    alice, bob = s.users("sdkprov_a", "sdkprov_b")
    calls = []

    def provider():
        calls.append(time.monotonic())
        return s.token_for(alice.id, exp_in=3600)

    c = clients(s.url, s.token_for(alice.id, exp_in=2), token_provider=provider)
    next_of(c, TokenExpiring)
    wait_until(lambda: calls, 5, message="the provider was not asked on token_expiring")
    time.sleep(3)                                    # past the first token's exp
    assert c.live and c.reconnect_attempts == 0
    assert c.send_chat(bob.id, "still here").status in ("sent", "delivered")

    # 4003 with a provider: reconnect with a fresh token
    d = clients(s.url, s.token_for(bob.id, exp_in=2))
    next_of(d, TokenExpiring)                        # handled without a provider: no refresh
    time.sleep(0.2)
    d.token_provider = lambda: s.token_for(bob.id, exp_in=3600)
    wait_until(lambda: d.reconnects >= 1, 10, message="no reconnect after 4003")
    assert d.live and d.error is None
    assert d.send_chat(alice.id, "back").status in ("sent", "delivered")


# ---------------------------------------------------------------------------
# Reconnect and resend: exactly once

@pytest.mark.timeout(60)
def test_resend_after_the_ack_was_lost_is_a_duplicate_and_delivered_once(system, clients, proxy):
    alice, bob = system.users("sdkx_a", "sdkx_b")
    cb = clients(system.url, bob.token)
    got = []
    cb.on("chat", lambda f: got.append(f.msg_id))
    ca = clients(proxy.ws_url, alice.token)
    proxy.blackhole(down=True)                 # the gateway's answers to alice vanish
    mid = ca.send_chat(bob.id, "exactly once", wait=None).msg_id
    wait_until(lambda: got == [mid], 5, message="bob did not get the chat")
    wait_until(lambda: system.history(alice, bob)["messages"][0]["status"] == "delivered", 5)
    time.sleep(0.3)                            # both acks are on their way into the void
    assert ca.result(mid).status == "queued" and ca.outbox == [mid]

    proxy.cut()                                # the connection drops; the client reconnects
    sent = ca.wait_ack(mid, "sent", timeout=10)
    assert sent.duplicate is True and type(sent.seq) is int
    assert ca.wait_ack(mid, "delivered", timeout=5).status == "delivered"
    assert ca.reconnects == 1 and ca.outbox == []
    time.sleep(1.0)
    assert got == [mid], "the recipient got the chat more than once"
    assert history_ids(system, alice, bob) == [mid]
    assert system.history(alice, bob)["messages"][0]["content"] == "exactly once"


@pytest.mark.timeout(60)
def test_resend_of_a_chat_the_gateway_never_got_is_stored_once(system, clients, proxy):
    alice, bob = system.users("sdky_a", "sdky_b")
    cb = clients(system.url, bob.token)
    got = []
    cb.on("chat", lambda f: got.append(f.msg_id))
    ca = clients(proxy.ws_url, alice.token)
    proxy.blackhole(up=True)                   # alice's frames vanish
    mid = ca.send_chat(bob.id, "lost in transit", wait=None).msg_id
    time.sleep(0.5)
    assert history_ids(system, alice, bob) == [] and got == []
    proxy.cut()
    sent = ca.wait_ack(mid, "sent", timeout=10)
    assert sent.duplicate is False
    assert ca.wait_ack(mid, "delivered", timeout=5).status == "delivered"
    time.sleep(0.5)
    assert got == [mid] and history_ids(system, alice, bob) == [mid]


@pytest.mark.timeout(90)
def test_send_then_abrupt_disconnect_delivers_every_chat_exactly_once(system, clients):
    """The socket is dropped right after each send returns, before any ack is read;
    whichever side of the race the gateway was on, each chat arrives once."""
    alice, bob = system.users("sdkz_a", "sdkz_b")
    cb = clients(system.url, bob.token)
    got = []
    cb.on("chat", lambda f: got.append(f.msg_id))
    ca = clients(system.url, alice.token)
    mids = []
    for i in range(8):
        wait_until(lambda: ca.live, 10, message="the client did not reconnect")
        mids.append(ca.send_chat(bob.id, f"drop {i}", wait=None).msg_id)
        ca.drop_connection()
    for mid in mids:
        assert ca.wait_ack(mid, "sent", timeout=15).status in ("sent", "delivered")
    wait_until(lambda: len(got) >= len(mids), 10, message=f"bob got {len(got)} of {len(mids)}")
    time.sleep(1.0)
    assert sorted(got) == sorted(mids), "a chat was lost or delivered twice"
    assert sorted(history_ids(system, alice, bob)) == sorted(mids)
    assert ca.reconnects >= 1


@pytest.mark.timeout(60)
def test_reconnect_gives_up_after_max_attempts(system, clients, proxy):
    (alice,) = system.users("sdkmax")
    ca = clients(proxy.ws_url, alice.token, backoff=Backoff(base=0.05, cap=0.1, max_attempts=3))
    proxy.close()                              # nothing listens there any more
    with pytest.raises(ReconnectFailed) as e:
        for _ in ca.frames(timeout=10):
            pass
    assert e.value.attempts == 3 and isinstance(e.value.last_error, ConnectFailed)
    assert ca.reconnect_attempts == 3


@pytest.mark.timeout(120)
def test_reconnects_with_backoff_after_a_gateway_restart_and_sends(system_factory, clients):
    s = system_factory(ws={"WebSocket": {"ShutdownTimeout": 3}})
    alice, bob = s.users("sdkrs_a", "sdkrs_b")
    backoff = dict(base=0.2, cap=1.0)
    ca = clients(s.url, alice.token, backoff=Backoff(**backoff))
    cb = clients(s.url, bob.token, backoff=Backoff(**backoff))
    before = ca.send_chat(bob.id, "before", wait="delivered")
    s.stop()
    down_at = time.monotonic()
    queued = ca.send_chat(bob.id, "while the gateway is down", wait=None)
    assert queued.status == "queued" and not ca.live
    s.start()
    wait_until(lambda: ca.live and cb.live, 20, message="the clients did not reconnect")
    downtime = time.monotonic() - down_at
    assert ca.wait_ack(queued.msg_id, "delivered", timeout=10).status == "delivered"
    after = ca.send_chat(bob.id, "after", wait="delivered")
    assert after.seq == before.seq + 2
    contents = [f.content for f in drain(cb, 1.0) if isinstance(f, ChatMessage)]
    assert contents.count("while the gateway is down") == 1 and contents.count("after") == 1
    # no storm: the attempts are spaced by the backoff (ceiling 1 s after 3 attempts)
    assert 1 <= ca.reconnect_attempts <= downtime / 0.25 + 6, (ca.reconnect_attempts, downtime)
    assert ca.reconnects == 1 and cb.reconnects == 1


@pytest.mark.timeout(120)
def test_works_in_a_gevent_monkey_patched_process(system):
    alice, bob = system.users("sdkg_a", "sdkg_b")
    script = """
from gevent import monkey; monkey.patch_all()
import json, sys
from skyeim.client import Client, Backoff, ChatMessage
url, ta, tb, bid = sys.argv[1:]
a = Client(url, ta, backoff=Backoff(base=0.05, cap=0.2)); b = Client(url, tb)
a.connect(); b.connect()
got = []
b.on("chat", lambda f: got.append(f.content))
r = a.send_chat(int(bid), "from gevent", wait="delivered")
f = next(x for x in b.frames(timeout=5) if isinstance(x, ChatMessage))
a.drop_connection()
r2 = a.send_chat(int(bid), "after a drop", wait="delivered", timeout=10)
print(json.dumps({"status": r.status, "content": f.content, "cb": got, "rtt": a.ping() < 5,
                  "status2": r2.status, "reconnects": a.reconnects}))
a.close(); b.close()
"""
    out = subprocess.run([PYTHON, "-c", script, system.url, alice.token, bob.token, str(bob.id)],
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "delivered" and result["content"] == "from gevent"
    assert result["cb"][0] == "from gevent"
    assert result["rtt"] and result["status2"] == "delivered" and result["reconnects"] == 1


def test_close_ends_the_iterator_and_later_calls_raise(system, clients):
    (alice,) = system.users("sdkc")
    c = clients(system.url, alice.token)
    c.close()
    assert [f.type for f in c.frames(timeout=2)] == ["connected"]
    assert isinstance(c.error, ClientClosed)
    with pytest.raises(ClientClosed):
        c.send_chat(2, "x")
    c.close()                                   # twice is fine


# ---------------------------------------------------------------------------
# The REST helper

def test_api_accounts_friends_and_history(system):
    api = Api(system.url)
    name = f"sdkapi_{random.randrange(10**8)}"
    uid = api.register(name, "correct-horse-42")
    with pytest.raises(Conflict) as e:
        api.register(name.upper(), "correct-horse-42")
    assert e.value.code == "conflict" and e.value.status == 409
    login = api.login(name, "correct-horse-42")
    assert login.user_id == uid and api.token == login.token and type(login.expires_at) is int

    bob, carol = system.users("sdkapi_b", "sdkapi_c")
    api.add_friend(bob.username)
    api.add_friend(carol.id)
    with pytest.raises(NotFound) as e:
        api.add_friend("nobody_here_xyz")
    assert e.value.code == "not_found"
    friends = {f.user_id: f for f in api.friends()}
    assert set(friends) == {bob.id, carol.id}
    assert friends[bob.id].username == bob.username and friends[bob.id].online is False
    api.remove_friend(carol.id)
    assert [f.user_id for f in api.friends()] == [bob.id]

    ids = [system.seed_message(uid, bob, f"h{i}")["msgId"] for i in range(5)]
    page = api.history(bob.id, limit=2)
    assert [m.msg_id for m in page.messages] == ids[:-3:-1] and page.has_more
    assert all(m.status == "sent" and m.from_user_id == uid for m in page.messages)
    older = api.history(bob.id, limit=10, before_seq=page.next_before)
    assert [m.msg_id for m in older.messages] == ids[2::-1] and not older.has_more
    assert older.next_before is None
    with pytest.raises(AuthError):
        Api(system.url, token="bad").friends()


def test_api_login_with_a_wrong_password_is_an_auth_error(system):
    (alice,) = system.users("sdkapi_wrong")
    with pytest.raises(AuthError) as e:
        Api(system.url).login(alice.username, "wrong-password")
    assert e.value.code == "unauthorized" and e.value.status == 401


def test_api_unreachable_is_a_typed_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServiceUnavailable) as e:
        Api(f"http://127.0.0.1:{port}", timeout=2).register("abc", "12345678")
    assert e.value.code == "unreachable" and e.value.status is None
