"""examples/flask_app against a live SkyeIM (PROTOCOL.md section 9, issue 14):
the team's app issues the gateway's tokens, makes friendships and sends a welcome
through the server API, receives signed webhooks and moderates through the
before-send hook; its page chats through skyeim-client.js in chromium."""
from __future__ import annotations

import json
import time

import pytest
import requests

from skyeim.protocol.signatures import sign

from example_harness import ExampleApp, example_system
from harness import new_msg_id, unique


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> ExampleApp:
    with example_system(tmp_path_factory.mktemp("example")) as running:
        yield running


def wait_for_event(app: ExampleApp, token: str, predicate, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in app.events(token):
            if predicate(event):
                return event
        time.sleep(0.2)
    raise AssertionError(f"no such webhook event within {timeout:g}s: {app.events(token)!r}")


def test_a_user_of_the_app_gets_the_welcome_from_the_system_account(app):
    bob = app.signup_and_login(unique("bob"))
    conn = app.system.connect(token=bob["token"])
    welcome = [m for m in conn.backlog if m["fromUserId"] == 1]
    assert len(welcome) == 1 and welcome[0]["content"].startswith("Welcome, "), conn.backlog
    assert welcome[0]["msgId"] == f"welcome-{bob['userId']}"


def test_friends_made_in_the_app_chat_and_the_hook_moderates(app):
    alice, bob = app.signup_and_login(unique("alice")), app.signup_and_login(unique("bob"))
    a = app.system.connect(token=alice["token"])
    b = app.system.connect(token=bob["token"])
    # Not friends yet: the gateway's RequireFriendship refuses.
    refused = a.chat(bob["userId"], "before friendship")
    a.expect_error("not_friends", refused)

    r = app.post("/friends", {"username": app_username(app, bob)}, token=alice["token"])
    assert r.status_code == 200, r.text
    added = b.expect("friend_added", skip=("pong", "online", "offline"))
    assert added["userId"] == alice["userId"]

    ok = a.chat(bob["userId"], "hello bob")
    a.expect_ack(ok, "sent", skip=("pong", "friend_added", "online", "offline"))
    got = b.expect("chat", skip=("pong", "online", "offline"))
    assert (got["fromUserId"], got["msgId"], got["content"]) == (alice["userId"], ok, "hello bob")

    spam = a.chat(bob["userId"], "buy spam now")
    err = a.expect_error("rejected", spam, skip=("pong", "ack", "online", "offline"))
    assert err["message"] == "this message looks like spam"

    masked = a.chat(bob["userId"], "oh darn it")
    got = b.expect("chat", skip=("pong", "online", "offline"))
    assert (got["msgId"], got["content"]) == (masked, "oh d**n it")

    history = app.system.api("GET", f"/api/messages?peerId={alice['userId']}", token=bob["token"])
    contents = [m["content"] for m in history.json()["messages"]]
    assert "oh d**n it" in contents and "hello bob" in contents
    assert not any("spam" in c for c in contents)


def test_the_app_receives_signed_webhooks(app):
    alice, bob = app.signup_and_login(unique("alice")), app.signup_and_login(unique("bob"))
    assert app.post("/friends", {"username": app_username(app, bob)}, token=alice["token"]).status_code == 200
    wait_for_event(app, alice["token"], lambda e: e["event"] == "friend.added"
                   and {e["data"]["userId"], e["data"]["friendId"]} == {alice["userId"], bob["userId"]})
    a = app.system.connect(token=alice["token"])
    wait_for_event(app, alice["token"], lambda e: e["event"] == "user.online"
                   and e["data"]["userId"] == alice["userId"])
    # bob is offline: his chat is a message.offline event, for a push notification.
    msg_id = a.chat(bob["userId"], "are you there?")
    a.expect_ack(msg_id, "sent", skip=("pong", "online", "offline", "friend_added"))
    event = wait_for_event(app, alice["token"], lambda e: e["event"] == "message.offline"
                           and e["data"]["message"]["msgId"] == msg_id)
    assert event["data"]["message"]["toUserId"] == bob["userId"]
    a.close()
    wait_for_event(app, alice["token"], lambda e: e["event"] == "user.offline"
                   and e["data"]["userId"] == alice["userId"])


def test_the_app_refuses_a_webhook_with_a_wrong_signature(app):
    body = json.dumps({"id": new_msg_id(), "event": "user.online", "timestamp": 0,
                       "data": {"userId": 5}}).encode()
    r = requests.post(app.url + "/skyeim/webhooks", data=body, timeout=5,
                      headers={"Content-Type": "application/json",
                               "X-SkyeIM-Signature": sign(body, "not the secret")})
    assert r.status_code == 401


def test_the_apps_page_chats_through_the_javascript_client(app, browser):
    alice, bob = unique("alice"), unique("bob")
    pages = {}
    for name in (alice, bob):
        page = browser.new_page()
        page.goto(app.url + "/")
        page.fill("#username", name)
        page.fill("#password", "a good password")
        page.click("#signup")
        page.wait_for_selector("#state:text('live')")
        # the welcome from the system account, pushed as backlog at connect
        page.wait_for_selector("#log p:text('System: Welcome, ')")
        pages[name] = page
    pages[alice].fill("#friend", bob)
    pages[alice].press("#friend", "Enter")
    # bob's page learns of the friendship live (friend_added), without a reload
    pages[bob].wait_for_selector(f"#log p:text('{alice} is now your friend')")
    pages[alice].wait_for_function(
        f"[...document.querySelectorAll('#peer option')].some(o => o.text === '{bob}')")
    pages[alice].select_option("#peer", label=bob)
    pages[alice].fill("#text", "hi from the page")
    pages[alice].press("#text", "Enter")
    pages[bob].wait_for_selector(f"#log p:text('{alice}: hi from the page')")
    pages[alice].wait_for_selector("#log p.me[data-status='delivered']")


def app_username(app: ExampleApp, login: dict) -> str:
    r = requests.get(f"{app.url}/users/{login['userId']}", timeout=5,
                     headers={"Authorization": f"Bearer {login['token']}"})
    assert r.status_code == 200, r.text
    return r.json()["username"]
