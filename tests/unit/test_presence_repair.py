"""Presence repair (features/presence.py): a user whose `online` or `offline`
could not be told because the Friend service failed is told again, from the
hub's state, once the Friend service answers."""
from __future__ import annotations

import json

import pytest

from skyeim.gateway.backends.clients import BackendUnavailable
from skyeim.gateway.features import presence as presence_module
from skyeim.gateway.features.presence import Presence
from skyeim.gateway.routing.hub import Hub


class FriendLists:
    """The Friend service as Presence uses it: friend lists, or a failure while down."""

    timeout = 1.0

    def __init__(self, friends: dict[int, list[int]]):
        self.lists, self.down = friends, False

    def friends(self, user_id: int) -> list[int]:
        if self.down:
            raise BackendUnavailable("friend: connection refused")
        return self.lists.get(user_id, [])


def frames(sink) -> list[tuple[str, int]]:
    return [(f["type"], f["data"]["userId"]) for f in map(json.loads, sink.sent)]


@pytest.fixture
def setup(sink):
    hub = Hub()
    lists = FriendLists({1: [2, 3], 2: [1], 3: [1]})
    presence = Presence(hub, lists)
    sessions = {uid: sink(uid) for uid in (1, 2, 3)}
    yield hub, lists, presence, sessions
    if presence._repairer is not None:
        presence._repairer.kill()


def test_a_user_connecting_without_friend_lists_is_announced_once_they_are_back(setup):
    hub, lists, presence, s = setup
    hub.register(s[2], "kick")                  # friend 2 online; 3 is not
    lists.down = True
    hub.register(s[1], "kick")
    assert presence.online_friends(1) == []     # connected says nobody, friends hear nothing
    assert presence.repair_round() == 0         # still down: still owed
    lists.down = False
    assert presence.repair_round() == 1
    assert frames(s[2]) == [("online", 1)]      # the friend hears the user
    assert frames(s[1]) == [("online", 2)]      # the user hears its online friend
    assert frames(s[3]) == []
    assert presence.repair_round() == 0         # nothing owed any more


def test_an_offline_that_could_not_be_told_is_told_later(setup):
    hub, lists, presence, s = setup
    for uid in (1, 2):
        hub.register(s[uid], "kick")
    lists.down = True
    hub.unregister(s[1])
    presence._notify(1, "offline")              # what report_offline runs in its pool
    assert frames(s[2]) == []
    lists.down = False
    assert presence.repair_round() == 1
    assert frames(s[2]) == [("offline", 1)]


def test_the_state_told_is_the_state_now(setup):
    hub, lists, presence, s = setup
    hub.register(s[2], "kick")
    hub.register(s[1], "kick")
    lists.down = True
    hub.unregister(s[1])
    presence._notify(1, "offline")              # owed an offline ...
    hub.register(s[1], "kick")                  # ... but back meanwhile
    lists.down = False
    presence.repair_round()
    assert frames(s[2]) == [("online", 1)]


def test_owed_users_are_bounded(setup, monkeypatch):
    hub, lists, presence, s = setup
    monkeypatch.setattr(presence_module, "REPAIR_MAX_USERS", 3)
    lists.down = True
    for uid in range(10, 20):
        presence.friends_or_empty(uid)
    assert list(presence._owed) == [17, 18, 19]
