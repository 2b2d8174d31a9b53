"""PROTOCOL.md 9.5: a friendship made or ended through the gateway (`/api/friends`)
reaches both users' live connections at once: `friend_added {userId, username,
online}` about the other user, or `friend_removed {userId}`; presence frames start
and stop with the friendship. Standalone, in a cluster (the two users on different
nodes), through the Python SDK's typed callbacks, and on the web page in chromium
(bob's open page shows alice as soon as she adds him)."""
from __future__ import annotations

import time

import pytest

from browser_harness import TIMEOUT_MS, VIEWPORT
from cluster_harness import running_cluster
from harness import Client
from sdk_harness import next_of
from skyeim.client import FriendAdded, FriendRemoved

WITHIN = 2.0            # s: PROTOCOL.md 9.5
SLACK = 3.0             # s more, for a loaded machine


def next_of_type(client: Client, kind: str, timeout: float = WITHIN + SLACK) -> dict:
    """The next ``kind`` frame, skipping others (pongs, presence); its data."""
    return client.skip_to(kind, timeout)


def add(system_or_node, user, friend, by_name: bool = False) -> None:
    body = {"username": friend.username} if by_name else {"friendId": friend.id}
    r = system_or_node.api("POST", "/api/friends", user, json=body)
    assert (r.status_code, r.json()) == (200, {"ok": True}), r.text


def remove(system_or_node, user, friend) -> None:
    r = system_or_node.api("DELETE", f"/api/friends/{friend.id}", user)
    assert (r.status_code, r.json()) == (200, {"ok": True}), r.text


# ---------------------------------------------------------------------------
# standalone

def test_both_users_hear_of_a_new_friendship_and_presence_starts(system):
    alice, bob = system.users("alice", "bob")
    a, b = system.connect(alice), system.connect(bob)
    add(system, alice, bob)
    assert next_of_type(a, "friend_added") == {"userId": bob.id, "username": bob.username,
                                                "online": True}
    assert next_of_type(b, "friend_added") == {"userId": alice.id, "username": alice.username,
                                                "online": True}
    b.close()                                   # presence between them now
    assert next_of_type(a, "offline")["userId"] == bob.id
    b = system.connect(bob)
    assert b.connected["onlineFriends"] == [alice.id]
    assert next_of_type(a, "online")["userId"] == bob.id


def test_both_users_hear_of_an_ended_friendship_and_presence_stops(system):
    alice, bob = system.users("alice", "bob")
    system.befriend(alice, bob)
    a, b = system.connect(alice), system.connect(bob)
    assert next_of_type(a, "online")["userId"] == bob.id
    remove(system, bob, alice)
    assert next_of_type(b, "friend_removed") == {"userId": alice.id}
    assert next_of_type(a, "friend_removed") == {"userId": bob.id}
    b.close()
    a.assert_no_frame(1.0)                      # no offline from a non-friend
    b = system.connect(bob)
    assert b.connected["onlineFriends"] == []
    a.assert_no_frame(0.5)


def test_an_offline_friend_is_added_as_offline_and_by_username(system):
    alice, bob = system.users("alice", "bob")
    a = system.connect(alice)
    add(system, alice, bob, by_name=True)
    assert next_of_type(a, "friend_added") == {"userId": bob.id, "username": bob.username,
                                                "online": False}
    b = system.connect(bob)                     # it came while he was away: not queued
    assert b.connected["onlineFriends"] == [alice.id]
    assert next_of_type(a, "online")["userId"] == bob.id
    b.assert_no_frame(0.5)


def test_a_refused_change_sends_nothing(system):
    alice = system.register_user("alice")
    a = system.connect(alice)
    assert system.api("POST", "/api/friends", alice, json={"friendId": 2**62}).status_code == 404
    assert system.api("POST", "/api/friends", alice, json={"friendId": alice.id}).status_code == 400
    assert system.api("DELETE", "/api/friends/x", alice).status_code == 400
    a.assert_no_frame(0.5)


# ---------------------------------------------------------------------------
# the SDK

def test_sdk_callbacks_get_typed_frames(system, clients):
    alice, bob = system.users("alice", "bob")
    added, removed = [], []
    cb = clients(system.url, bob.token, connect=False)
    cb.on(FriendAdded, added.append)
    cb.on("friend_removed", removed.append)
    cb.connect()
    clients(system.url, alice.token)
    add(system, alice, bob)
    got = next_of(cb, FriendAdded)
    assert (got.user_id, got.username, got.online) == (alice.id, alice.username, True)
    remove(system, alice, bob)
    assert next_of(cb, FriendRemoved).user_id == alice.id
    assert added == [got] and [f.user_id for f in removed] == [alice.id]
    assert isinstance(removed[0], FriendRemoved)


# ---------------------------------------------------------------------------
# a cluster: the two users on different nodes

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("friend-frames"), "friendframes",
                         nodes=2, heartbeat_interval=1, node_ttl=3) as c:
        yield c


def test_cluster_both_nodes_hear_of_changes(cluster):
    alice, bob = cluster.users("alice", "bob")
    a, b = cluster[1].connect(alice), cluster[2].connect(bob)
    add(cluster[1], alice, bob)
    started = time.monotonic()
    assert next_of_type(b, "friend_added") == {"userId": alice.id, "username": alice.username,
                                                "online": True}
    assert next_of_type(a, "friend_added")["userId"] == bob.id
    assert time.monotonic() - started < WITHIN + SLACK
    b.close()
    assert next_of_type(a, "offline")["userId"] == bob.id
    b = cluster[2].connect(bob)
    assert next_of_type(a, "online")["userId"] == bob.id
    remove(cluster[2], bob, alice)
    assert next_of_type(a, "friend_removed") == {"userId": bob.id}
    assert next_of_type(b, "friend_removed") == {"userId": alice.id}
    b.close()
    a.assert_no_frame(1.0)


# ---------------------------------------------------------------------------
# the web page

def test_bobs_open_page_shows_alice_when_she_adds_him(system, browser):
    from playwright.sync_api import expect
    alice, bob = system.users("alice", "bob")
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    received: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("websocket", lambda ws: ws.on(
        "framereceived", lambda p: received.append(str(p)[:40])))
    page.goto(system.url + "/")
    page.locator("#login-username").fill(bob.username)
    page.locator("#login-password").fill(bob.password)
    page.locator("#login-button").click()
    expect(page.locator("#chat-view")).to_be_visible()
    expect(page.locator("#no-friends")).to_be_visible()
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not any('"connected"' in f for f in received):   # bob's page is live
        assert time.monotonic() < deadline, "bob's page got no connected frame"
        page.wait_for_timeout(50)
    a = system.connect(alice)
    add(system, alice, bob)
    friend = page.locator(f'.friend[data-user-id="{alice.id}"]')
    expect(friend).to_have_attribute("data-online", "true", timeout=(WITHIN + SLACK) * 1000)
    expect(friend.locator(".friend-name")).to_have_text(alice.username)
    expect(page.locator("#no-friends")).to_be_hidden()
    a.close()                                # presence follows
    expect(friend).to_have_attribute("data-online", "false")
    remove(system, alice, bob)
    expect(friend).to_have_count(0)
    assert not errors, errors
    context.close()
