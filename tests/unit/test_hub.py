"""The hub: who is online here and their connections (routing/hub.py)."""
from __future__ import annotations

from skyeim.gateway.routing.hub import Hub, replaces


def test_register_says_first_and_unregister_says_last(sink):
    hub, a, b = Hub(), sink(1), sink(1)
    assert hub.register(a, "allow") == (True, [])
    assert hub.register(b, "allow") == (False, [])
    assert hub.unregister(a) is False
    assert hub.unregister(b) is True
    assert not hub.is_online(1)


def test_kick_replaces_the_older_connection_which_then_says_nothing(sink):
    hub, old, new = Hub(), sink(1), sink(1)
    hub.register(old, "kick")
    assert hub.register(new, "kick") == (False, [old])
    assert hub.unregister(old) is False          # replaced: no offline for its friends
    hub.send_to_user(1, "x")
    assert (old.sent, new.sent) == ([], ["x"])


def test_one_per_platform_replaces_only_the_same_platform(sink):
    hub, web, ios, web2 = Hub(), sink(1, "web"), sink(1, "ios"), sink(1, "web")
    hub.register(web, "one-per-platform")
    hub.register(ios, "one-per-platform")
    assert hub.register(web2, "one-per-platform") == (False, [web])
    assert hub.local_count(1) == 2


def test_replaces_by_mode(sink):
    a, b = sink(1, "web"), sink(1, "ios")
    assert replaces("kick", a, b) and not replaces("allow", a, b)
    assert not replaces("one-per-platform", a, b)
    assert replaces("one-per-platform", a, sink(1, "web"))


def test_take_older_removes_lower_login_numbers(sink):
    hub, old, new = Hub(), sink(1, gen=1), sink(1, gen=3)
    hub.register(old, "allow")
    hub.register(new, "allow")
    assert hub.take_older(1, 2) == [old]
    assert hub.local_count(1) == 1 and hub.take_older(1, 2) == []


def test_send_to_user_and_to_the_users_other_devices(sink):
    hub, a, b, c = Hub(), sink(1), sink(1), sink(2, accepts=False)
    for s in (a, b, c):
        hub.register(s, "allow")
    assert hub.send_to_user(1, "hello") == 2
    assert hub.send_to_others(1, "copy", exclude=a) == 1
    assert hub.send_to_user(2, "full") == 0          # a session going away takes nothing
    assert hub.send_to_user(3, "nobody") == 0
    assert (a.sent, b.sent) == (["hello"], ["hello", "copy"])


def test_send_among_reaches_the_online_members_but_one(sink):
    hub = Hub()
    sessions = {uid: sink(uid) for uid in (1, 2, 3, 4)}
    for s in sessions.values():
        hub.register(s, "kick")
    members = frozenset({1, 2, 3, 9, 10, 11, 12})   # more members than online users
    assert hub.send_among(members, "g", exclude=sessions[1]) == 2
    assert [uid for uid, s in sessions.items() if s.sent] == [2, 3]
    assert hub.send_among(frozenset({4}), "h") == 1  # fewer members than online users
    assert sessions[4].sent == ["h"]


def test_presence_figures(sink):
    hub = Hub()
    hub.register(sink(1), "allow")
    hub.register(sink(1), "allow")
    hub.register(sink(2), "allow")
    assert hub.online_among([3, 2, 1]) == [2, 1]
    assert (hub.online_count(), hub.local_users(), hub.device_count(1)) == (2, 2, 2)
    hub.broadcast(None)            # alone, nobody to tell
    assert hub.healthy() and not hub.clustered
