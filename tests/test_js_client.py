"""The JavaScript client module (skyeim/gateway/static/skyeim-client.js) in chromium,
against a real gateway: connect, chat with both acks, every frame as a typed event,
reconnect after the gateway goes away with the outbox resent once under the same
msgId, sync after a reconnect, backoff with full jitter, and the close codes that
end it (4001, 4003).

The module is imported by a page of the gateway's origin (browser_harness.JsClients);
the other party is a plain WebSocket client (harness.Client). Without playwright or
chromium these tests skip with the reason, unless SKYEIM_REQUIRE_SERVICES=1.
"""
from __future__ import annotations

import signal
import time

import pytest

from browser_harness import JsClients, SocketTap, poll, pump
from harness import wait_until

FAST = {"baseMs": 200, "capMs": 1000}


@pytest.fixture
def pages(browser):
    made: list[JsClients] = []

    def make(system) -> JsClients:
        p = JsClients(browser, system.url)
        made.append(p)
        return p

    yield make
    for p in made:
        p.assert_clean()
        p.close()


def friends(system):
    alice, bob = system.register_user("alice"), system.register_user("bob")
    system.befriend(alice, bob)
    return alice, bob


def live(client) -> dict:
    """Connect and wait for ``connected``; its data."""
    client.call("connect")
    return client.wait_event("connected")[0]


def test_connect_chat_with_both_acks_and_typed_events(pages, system):
    alice, bob = friends(system)
    page = pages(system)
    a = page.client(alice.token)
    assert a.get("state") == "idle"
    hello = live(a)
    assert hello["userId"] == alice.id and a.get("userId") == alice.id
    assert a.states() == ["connecting", "live"]
    assert page.sockets[0].endswith("/ws?platform=web&token=" + alice.token)

    bob_ws = system.connect(bob)
    a.wait_event("online", lambda d: d["userId"] == bob.id)
    msg_id = a.call("send", bob.id, "hello from the browser")
    sent, delivered = (a.wait_event("ack", lambda d: d["msgId"] == msg_id and d["status"] == s)[0]
                       for s in ("sent", "delivered"))
    assert sent["seq"] == 1 and delivered["seq"] == 1
    chat = bob_ws.expect("chat")
    assert (chat["msgId"], chat["content"], chat["fromUserId"]) == \
        (msg_id, "hello from the browser", alice.id)
    assert a.get("outbox") == [] and a.get("conversations") == {str(bob.id): 1}

    reply = bob_ws.chat(alice, "hello back")
    got = a.wait_event("chat", lambda d: d["msgId"] == reply)[0]
    assert (got["fromUserId"], got["toUserId"], got["content"], got["seq"]) == \
        (bob.id, alice.id, "hello back", 2)
    assert a.call("markRead", bob.id, [reply]) is True
    receipt = bob_ws.expect("read", skip=("pong", "ack"))
    assert receipt["peerId"] == alice.id and receipt["msgIds"] == [reply]
    bob_ws.read(alice, [msg_id])
    assert a.wait_event("read")[0]["msgIds"] == [msg_id]
    bob_ws.send("typing", {"toUserId": alice.id, "state": "typing"})
    assert a.wait_event("typing")[0]["fromUserId"] == bob.id
    assert a.call("sendFrame", "ping", None) is True
    a.wait_event("pong")
    assert a.call("sendFrame", "no_such_type", {}) is True
    error = a.wait_event("error")[0]
    assert error["code"] == "unknown_type" and error["retrying"] is False
    bob_ws.close()
    assert a.wait_event("offline")[0]["userId"] == bob.id
    # every frame is also a "frame" event, in arrival order
    frames = [f["type"] for f in a.events("frame")]
    assert frames[0] == "connected" and frames.count("ack") == 2 and frames[-1] == "offline"


def test_reconnects_after_a_restart_and_resends_the_outbox_once(pages, system_factory):
    system = system_factory()
    alice, bob = friends(system)
    page = pages(system)
    a = page.client(alice.token, backoff=FAST)
    live(a)
    m0 = a.call("send", bob.id, "before the restart")
    a.wait_event("ack", lambda d: d["msgId"] == m0)

    # 1. the gateway stops (1001): the client waits and retries; a chat sent meanwhile waits
    system.stop()
    close = a.wait_event("close")[0]
    assert close["code"] == 1001 and close["reconnect"] is True and close["opened"] is True
    m1 = a.call("send", bob.id, "typed while the gateway was down")
    assert [item["msgId"] for item in a.get("outbox")] == [m1]
    a.wait_event("state", lambda d: d["state"] == "waiting", count=3)   # retrying, refused
    assert not a.chats_sent(m1)
    system.start()
    a.wait_event("connected", count=2, timeout=30)
    a.wait_event("ack", lambda d: d["msgId"] == m1 and d["status"] == "sent")
    pump(a.page, 1.0)
    assert len(a.chats_sent(m1)) == 1 and a.get("outbox") == []

    # 2. written to the socket but never acked (the gateway froze, then died): after
    # the reconnect it goes out once more, with the same msgId, and is stored once
    gateway = system.procs["gateway"]
    gateway.send_signal(signal.SIGSTOP)
    try:
        m2 = a.call("send", bob.id, "sent into a frozen gateway")
        poll(a.page, lambda: a.chats_sent(m2), timeout=5, message="the chat was not written")
        pump(a.page, 0.3)
        assert [item["msgId"] for item in a.get("outbox")] == [m2]
    finally:
        gateway.send_signal(signal.SIGKILL)
        gateway.send_signal(signal.SIGCONT)
        gateway.wait(10)
    a.wait_event("close", count=2, timeout=30)
    system.start()
    a.wait_event("connected", count=3, timeout=30)
    a.wait_event("ack", lambda d: d["msgId"] == m2 and d["status"] == "sent")
    pump(a.page, 1.0)
    frames = a.chats_sent(m2)
    assert len(frames) == 2 and frames[0] == frames[1], frames   # the original and one resend

    # bob gets each message once (his backlog); alice hears "delivered" for each
    bob_ws = system.connect(bob)
    assert [c["msgId"] for c in bob_ws.backlog] == [m0, m1, m2]
    history = system.history(alice, bob)["messages"]
    assert [m["msgId"] for m in reversed(history)] == [m0, m1, m2]
    assert [m["seq"] for m in reversed(history)] == [1, 2, 3]
    for mid in (m0, m1, m2):
        a.wait_event("ack", lambda d, mid=mid: d["msgId"] == mid and d["status"] == "delivered")


def test_sync_after_a_reconnect_brings_what_was_missed(pages, system_factory):
    """Messages the backlog push does not bring (one's own from another device, and a
    reply read there) arrive by sync, from the newest seq the client holds."""
    system = system_factory()
    alice, bob = friends(system)
    page = pages(system)
    # after a drop, the next try waits an hour: the test says when (as "Retry now" does)
    a = page.client(alice.token, backoff={"baseMs": 3_600_000, "capMs": 3_600_000}, fixedRandom=1)
    live(a)
    bob_ws = system.connect(bob)
    first = bob_ws.chat(alice, "hi alice")
    a.wait_event("chat", lambda d: d["msgId"] == first)
    assert a.get("conversations") == {str(bob.id): 1}

    system.restart()                                  # 1001: alice's client waits
    waiting = a.wait_event("state", lambda d: d["state"] == "waiting")[0]
    assert waiting["attempt"] == 1 and waiting["delay"] == 3_600_000
    phone = system.connect(alice)                     # alice's phone, meanwhile
    own = phone.chat(bob, "from the phone")
    phone.expect_ack(own, "sent")
    bob_ws = system.connect(bob)
    reply = bob_ws.chat(alice, "bob's reply")
    assert phone.expect("chat", skip=("pong", "online", "ack"))["msgId"] == reply
    phone.read(bob)
    wait_until(lambda: all(m["status"] == "read" for m in system.history(alice, bob)["messages"]
                           if m["fromUserId"] == bob.id), message="read on the phone")
    phone.close()

    chats_before = len(a.events("chat"))
    a.call("connect")
    a.wait_event("connected", count=2)
    complete = a.wait_event("sync_complete")[0]
    assert complete["conversations"] == [{"peerId": bob.id, "lastSeq": 3, "hasMore": False}]
    syncs = [f["data"] for _, f in page.sent if f.get("type") == "sync"]
    assert syncs[-1]["conversations"] == [{"peerId": bob.id, "afterSeq": 1}]
    pages_ = a.events("sync_messages")
    assert [(m["msgId"], m["seq"]) for p in pages_ for m in p["messages"]] == [(own, 2), (reply, 3)]
    assert len(a.events("chat")) == chats_before           # nothing came as a chat frame
    assert a.get("conversations") == {str(bob.id): 3}


def test_backoff_grows_with_full_jitter_and_starts_over_after_connected(pages, system_factory):
    system = system_factory()
    alice, bob = friends(system)
    page = pages(system)
    ceiling = {"baseMs": 100, "capMs": 800}
    top = page.client(alice.token, backoff=ceiling, fixedRandom=1)      # always the ceiling
    jittered = page.client(bob.token, backoff=ceiling)                  # Math.random
    live(top)
    live(jittered)
    system.stop()
    waits = top.wait_event("state", lambda d: d["state"] == "waiting", count=6, timeout=30)
    assert [(w["attempt"], w["delay"]) for w in waits] == \
        [(1, 100), (2, 200), (3, 400), (4, 800), (5, 800), (6, 800)]
    # each attempt really waited that long: the next "connecting" came no sooner
    events = top.timed_events("state")
    for before, after in zip(events, events[1:]):
        if before["data"]["state"] == "waiting" and after["data"]["state"] == "connecting":
            assert after["at"] - before["at"] >= before["data"]["delay"] - 5, (before, after)
    closes = top.events("close")[1:]
    assert closes and all(c["opened"] is False and c["reconnect"] for c in closes)
    spread = jittered.wait_event("state", lambda d: d["state"] == "waiting", count=6, timeout=30)
    bounds = [min(800, 100 * 2 ** (w["attempt"] - 1)) for w in spread]
    assert all(0 <= w["delay"] <= b for w, b in zip(spread, bounds)), spread
    assert any(w["delay"] < b for w, b in zip(spread, bounds)), spread    # jitter, not the ceiling
    system.start()
    top.wait_event("connected", count=2, timeout=30)
    mark = len(top.events("state"))
    system.stop()
    again = top.wait_event("state", lambda d: d["state"] == "waiting", since=mark, timeout=30)[0]
    assert (again["attempt"], again["delay"]) == (1, 100)              # a new series


def test_replaced_and_expired_end_the_connection_without_a_retry(pages, system_factory):
    system = system_factory(ws={"Auth": {"EnforceExpiry": True, "ExpiryWarning": 2}})
    alice, bob = friends(system)
    page = pages(system)
    a = page.client(alice.token)
    live(a)
    system.connect(alice)                               # a newer login: 4001
    close = a.wait_event("close")[0]
    assert close["code"] == 4001 and close["reconnect"] is False
    pump(a.page, 2.0)
    assert a.states()[-1] == "replaced" and len(page.sockets) == 1    # no retry by itself
    a.call("connect")                                   # the user asks: it takes over
    a.wait_event("connected", count=2)

    short = system.token_for(bob.id, exp_in=4)          # inside the warning window soon
    b = page.client(short)
    live(b)
    warning = b.wait_event("token_expiring", timeout=10)[0]
    assert abs(warning["expiresAt"] - (time.time() + 4) * 1000) < 3000
    close = b.wait_event("close", timeout=15)[0]
    assert close["code"] == 4003 and close["reconnect"] is False
    pump(b.page, 2.0)
    assert b.states()[-1] == "expired"
    assert len([u for u in page.sockets if short in u]) == 1


def test_server_frames_of_v1_1_are_typed_events(pages, system):
    """notice, friend_added, friend_removed (PROTOCOL.md 9.2, 9.5), injected into a
    live connection to the real gateway; a malformed frame is only a "frame" event."""
    alice = system.register_user("alice")
    page = pages(system)
    tap = SocketTap(page.page)
    a = page.client(alice.token)
    live(a)
    frames = [
        ("notice", {"event": "maintenance", "data": {"text": "at 22:00"}, "timestamp": 1}),
        ("friend_added", {"userId": 77, "username": "carol", "online": True}),
        ("friend_removed", {"userId": 77}),
        ("friend_added", {"userId": "77", "username": "carol", "online": True}),   # malformed
        ("brand_new_type", {"x": 1}),                                             # unknown
    ]
    for type_, data in frames:
        tap.inject(type_, data)
    a.wait_event("frame", lambda f: f["type"] == "brand_new_type")
    assert a.events("notice") == [frames[0][1]]
    assert a.events("friend_added") == [frames[1][1]]
    assert a.events("friend_removed") == [frames[2][1]]
    assert [f["type"] for f in a.events("frame")][-5:] == [t for t, _ in frames]
    assert set(page.server_frame_types) >= {
        "connected", "pong", "chat", "ack", "read", "online", "offline", "error", "token_expiring",
        "notice", "friend_added", "friend_removed"}


def test_the_outbox_survives_a_reload_and_goes_out_with_the_same_msg_id(pages, system):
    alice, bob = friends(system)
    page = pages(system)
    options = {"storage": "session", "storageKey": f"outbox.{alice.id}"}
    a = page.client(alice.token, **options)
    msg_id = a.call("send", bob.id, "written before the reload")   # never connected
    page.open()                                                     # reload: sessionStorage stays
    a = page.client(alice.token, **options)
    assert [(i["msgId"], i["content"]) for i in a.get("outbox")] == [(msg_id, "written before the reload")]
    live(a)
    a.wait_event("ack", lambda d: d["msgId"] == msg_id and d["status"] == "sent")
    assert a.get("outbox") == []
    assert page.page.evaluate(f"sessionStorage.getItem('outbox.{alice.id}')") == "[]"
    assert [m["msgId"] for m in system.history(alice, bob)["messages"]] == [msg_id]


def test_group_recall_edit_and_membership_changes_are_events(pages, system):
    """recall/edit with a groupId (docs/protocol.md "Recall, edit, delete"): the events
    carry groupId instead of toUserId; group_changed join and leave are events too."""
    alice, bob, carol = (system.register_user(n) for n in ("jsg_alice", "jsg_bob", "jsg_carol"))
    r = system.api("POST", "/api/groups", alice, json_body={"name": "js", "memberIds": [bob.id]})
    gid = r.json()["groupId"]
    page = pages(system)
    a = page.client(alice.token)
    live(a)
    bob_ws = system.connect(bob)
    msg_id = "js-group-1"
    assert a.call("sendFrame", "groupchat", {"groupId": gid, "msgId": msg_id, "content": "teh"})
    a.wait_event("ack", lambda d: d["msgId"] == msg_id)
    bob_ws.expect("groupchat", skip=("pong", "group_unread"))
    assert a.call("edit", msg_id, "the", gid) is True
    edited = a.wait_event("message_edited")[0]
    assert (edited["groupId"], edited["content"], "toUserId" in edited) == (gid, "the", False)
    assert a.call("recall", msg_id, gid) is True
    assert a.wait_event("message_recalled")[0]["groupId"] == gid
    assert bob_ws.expect("message_recalled", skip=("pong", "group_unread", "message_edited"))[
        "groupId"] == gid
    system.api("POST", f"/api/groups/{gid}/members", bob, json_body={"userIds": [carol.id]})
    joined = a.wait_event("group_changed")[0]
    assert (joined["change"], joined["userIds"]) == ("join", [carol.id])
    system.api("POST", f"/api/groups/{gid}/leave", carol)
    left = a.wait_event("group_changed", lambda d: d["change"] == "leave")[0]
    assert (left["userId"], left["ownerId"]) == (carol.id, alice.id)
