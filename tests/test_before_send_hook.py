"""PROTOCOL.md 9.4: the before-send hook, against real processes and a real HTTP
hook (tests/support/webhook_receiver.py) that checks every X-SkyeIM-Signature.

allow, rewrite (stored, acked and delivered rewritten), refuse (`rejected`,
nothing stored), OnError allow / reject when the hook hangs or answers 500,
a duplicate resend not asked again, and groupchat the same way.
"""
from __future__ import annotations

import time

import pytest

from harness import new_msg_id
from load_harness import scrape
from webhook_receiver import Receiver

SECRET = "hook-test-secret"
SKIP = ("pong", "online", "offline", "group_unread")


def hooked(url: str, **before_send) -> dict:
    # Webhooks.Url stays empty: only its Secret signs the hook's calls
    return {"Webhooks": {"Secret": SECRET},
            "Hooks": {"BeforeSend": {"Url": url, "Timeout": 1000, **before_send}}}


@pytest.fixture
def hook():
    with Receiver(SECRET) as r:
        yield r


@pytest.fixture
def hooked_system(system_factory, hook):
    return system_factory(ws=hooked(hook.url))


def moderate(body: dict) -> dict:
    """The team's policy in these tests: "spam" is refused, "darn" is rewritten."""
    if "spam" in body["content"]:
        return {"allow": False, "reason": "no spam here"}
    if "darn" in body["content"]:
        return {"allow": True, "content": body["content"].replace("darn", "****")}
    return {"allow": True}


def contents(system, user, peer) -> list[str]:
    return [m["content"] for m in system.history(user, peer)["messages"]]


def test_allowed_chats_are_posted_signed_then_stored_and_delivered(hooked_system, hook):
    system = hooked_system
    alice, bob = system.users("hk_a1", "hk_b1")
    ca, cb = system.connect(alice), system.connect(bob)
    mid = ca.chat(bob, "hello there", content_type=2)
    ca.expect_ack(mid, "sent", skip=SKIP)
    assert cb.expect("chat", skip=SKIP)["content"] == "hello there"
    asked = hook.received[-1]
    assert asked.signed_ok
    assert asked.body == {"fromUserId": alice.id, "toUserId": bob.id, "msgId": mid,
                          "content": "hello there", "contentType": 2}
    assert contents(system, alice, bob) == ["hello there"]


def test_a_rewrite_is_stored_acked_and_delivered_instead(hooked_system, hook):
    system = hooked_system
    hook.answer = moderate
    alice, bob = system.users("hk_a2", "hk_b2")
    ca, cb = system.connect(alice), system.connect(bob)
    mid = ca.chat(bob, "oh darn it")
    ca.expect_ack(mid, "sent", skip=SKIP)
    chat = cb.expect("chat", skip=SKIP)
    assert (chat["msgId"], chat["content"]) == (mid, "oh **** it")
    assert contents(system, alice, bob) == ["oh **** it"]
    assert contents(system, bob, alice) == ["oh **** it"]


def test_a_refusal_answers_rejected_and_stores_nothing(hooked_system, hook):
    system = hooked_system
    hook.answer = moderate
    alice, bob = system.users("hk_a3", "hk_b3")
    ca, cb = system.connect(alice), system.connect(bob)
    mid = ca.chat(bob, "buy spam now")
    err = ca.expect_error("rejected", mid, skip=SKIP)
    assert err["message"] == "no spam here"
    ok = ca.chat(bob, "a fine message")
    ca.expect_ack(ok, "sent", skip=SKIP)
    assert cb.expect("chat", skip=SKIP)["msgId"] == ok      # the refused one never came
    assert contents(system, alice, bob) == ["a fine message"]
    values = scrape(system.metrics_url)
    assert values['skyeim_before_send_hook_seconds_count{outcome="refuse"}'] == 1
    assert values['skyeim_before_send_hook_seconds_count{outcome="allow"}'] == 1


def test_a_duplicate_resend_is_not_asked_again(hooked_system, hook):
    system = hooked_system
    hook.answer = moderate
    alice, bob = system.users("hk_a4", "hk_b4")
    ca = system.connect(alice)
    mid = new_msg_id()
    ca.chat(bob, "darn, once", msg_id=mid)
    first = ca.expect_ack(mid, "sent", skip=SKIP)
    asked = len(hook.received)
    ca.chat(bob, "darn, once", msg_id=mid)                   # the client lost its ack
    again = ca.expect_ack(mid, "sent", skip=SKIP)
    assert again.get("duplicate") is True and again["seq"] == first["seq"]
    time.sleep(0.5)
    assert len(hook.received) == asked
    assert [b["msgId"] for b in hook.bodies()].count(mid) == 1
    assert contents(system, alice, bob) == ["****, once"]


@pytest.mark.parametrize("failure", ["hang", "500"])
def test_on_error_allow_stores_the_chat_as_sent(system_factory, hook, failure):
    system = system_factory(ws=hooked(hook.url, Timeout=300, OnError="allow"))
    alice, bob = system.users("hk_a5", "hk_b5")
    ca = system.connect(alice)
    if failure == "hang":
        hook.hang()
    else:
        hook.fail_next(1, 500)
    t0 = time.monotonic()
    mid = ca.chat(bob, "moderation is down")
    ca.expect_ack(mid, "sent", skip=SKIP)
    assert time.monotonic() - t0 < 4.0
    hook.release()
    assert contents(system, alice, bob) == ["moderation is down"]
    assert scrape(system.metrics_url)['skyeim_before_send_hook_seconds_count{outcome="error"}'] == 1


@pytest.mark.parametrize("failure", ["hang", "500"])
def test_on_error_reject_answers_unavailable_and_stores_nothing(system_factory, hook, failure):
    system = system_factory(ws=hooked(hook.url, Timeout=300, OnError="reject"))
    alice, bob = system.users("hk_a6", "hk_b6")
    ca = system.connect(alice)
    if failure == "hang":
        hook.hang()
    else:
        hook.fail_next(1, 500)
    mid = ca.chat(bob, "moderation is down")
    ca.expect_error("unavailable", mid, skip=SKIP)
    hook.release()
    assert contents(system, alice, bob) == []
    # the client may resend the same msgId once the hook is back: now it is asked and stored
    ca.chat(bob, "moderation is down", msg_id=mid)
    ack = ca.expect_ack(mid, "sent", skip=SKIP)
    assert not ack.get("duplicate")
    assert contents(system, alice, bob) == ["moderation is down"]


def test_groupchat_goes_through_the_hook(hooked_system, hook):
    system = hooked_system
    hook.answer = moderate
    alice, bob = system.users("hk_ga", "hk_gb")
    r = system.api("POST", "/api/groups", alice, json_body={"name": "hooked",
                                                            "memberIds": [bob.id]})
    assert r.status_code == 200, r.text
    gid = r.json()["groupId"]
    ca, cb = system.connect(alice), system.connect(bob)

    refused = new_msg_id()
    ca.send("groupchat", {"groupId": gid, "msgId": refused, "content": "group spam"})
    assert ca.expect_error("rejected", refused, skip=SKIP)["message"] == "no spam here"

    mid = new_msg_id()
    ca.send("groupchat", {"groupId": gid, "msgId": mid, "content": "darn group"})
    ca.expect_ack(mid, "sent", skip=SKIP)
    chat = cb.expect("groupchat", skip=SKIP)
    assert (chat["msgId"], chat["content"]) == (mid, "**** group")
    asked = [b for b in hook.bodies() if b["msgId"] == mid]
    assert asked == [{"fromUserId": alice.id, "groupId": gid, "msgId": mid,
                      "content": "darn group", "contentType": 1}]
    assert all(r.signed_ok for r in hook.received)

    history = system.api("GET", f"/api/groups/{gid}/messages", alice)
    assert history.status_code == 200, history.text
    assert [m["content"] for m in history.json()["messages"]] == ["**** group"]


def test_in_a_cluster_a_resend_to_another_node_is_not_asked_again(tmp_path_factory, hook):
    from cluster_harness import running_cluster
    hook.answer = moderate
    ws = {**hooked(hook.url), "WebSocket": {"MultiLogin": "allow"}}
    with running_cluster(tmp_path_factory.mktemp("hookcluster"), "hookcluster", nodes=2,
                         heartbeat_interval=1, node_ttl=3, ws=ws) as system:
        alice, bob = system.users("hkc_a", "hkc_b")
        on1, on2 = system[1].connect(alice), system[2].connect(alice)
        mid = new_msg_id()
        on1.chat(bob, "darn, from node 1", msg_id=mid)
        first = on1.expect_ack(mid, "sent", skip=SKIP)
        on2.chat(bob, "darn, from node 1", msg_id=mid)       # the resend lands on node 2
        again = on2.expect_ack(mid, "sent", skip=SKIP + ("chat",))
        assert again.get("duplicate") is True and again["seq"] == first["seq"]
        assert [b["msgId"] for b in hook.bodies()].count(mid) == 1
        assert contents(system, alice, bob) == ["****, from node 1"]
