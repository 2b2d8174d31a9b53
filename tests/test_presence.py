"""PROTOCOL.md sections 1-2: `online` / `offline` presence for friends."""
from __future__ import annotations

from harness import assert_ms_timestamp, now_ms, wait_until


def test_friend_coming_online_is_announced(system):
    alice, bob = system.users("pr_a", "pr_b")
    system.befriend(alice, bob)
    cb = system.connect(bob)
    before = now_ms()
    ca = system.connect(alice)
    online = cb.expect("online")
    assert online["userId"] == alice.id
    assert_ms_timestamp(online["timestamp"], before, slack_ms=5000)
    assert ca.connected["onlineFriends"] == [bob.id]
    ca.assert_no_frame(0.3)          # bob was already online: nothing for alice


def test_friend_going_offline_is_announced(system):
    alice, bob = system.users("pro_a", "pro_b")
    system.befriend(alice, bob)
    cb = system.connect(bob)
    ca = system.connect(alice)
    cb.expect("online")
    before = now_ms()
    ca.close()
    offline = cb.expect("offline")
    assert offline["userId"] == alice.id
    assert_ms_timestamp(offline["timestamp"], before, slack_ms=5000)
    cb.assert_no_frame(0.3)


def test_dropped_tcp_connection_also_goes_offline(system):
    alice, bob = system.users("prd_a", "prd_b")
    system.befriend(alice, bob)
    cb = system.connect(bob)
    ca = system.connect(alice)
    cb.expect("online")
    ca.abort()                       # no close frame
    assert cb.expect("offline", timeout=10)["userId"] == alice.id


def test_non_friends_get_no_presence(system):
    alice, bob, carol = system.users("prn_a", "prn_b", "prn_c")
    system.befriend(alice, bob)
    cc = system.connect(carol)
    cb = system.connect(bob)
    ca = system.connect(alice)
    cb.expect("online")
    ca.close()
    cb.expect("offline")
    cc.assert_no_frame(0.5)


def test_former_friend_gets_no_presence(system):
    alice, bob = system.users("prf_a", "prf_b")
    system.befriend(alice, bob)
    system.unfriend(bob, alice)
    cb = system.connect(bob)
    ca = system.connect(alice)
    assert ca.connected["onlineFriends"] == []
    ca.close()
    cb.assert_no_frame(0.7)


def test_kick_replacement_produces_neither_online_nor_offline(system):
    alice, bob = system.users("prk_a", "prk_b")
    system.befriend(alice, bob)
    cb = system.connect(bob)
    ca1 = system.connect(alice)
    assert cb.expect("online")["userId"] == alice.id
    ca2 = system.connect(alice)
    assert ca1.expect_close() == 4001
    assert ca2.connected["onlineFriends"] == [bob.id]
    cb.assert_no_frame(1.0)
    ca2.close()
    assert cb.expect("offline")["userId"] == alice.id
    cb.assert_no_frame(0.5)


def test_both_friends_see_each_other(system):
    alice, bob = system.users("prb_a", "prb_b")
    system.befriend(alice, bob)
    ca = system.connect(alice)
    ca.assert_no_frame(0.2)
    cb = system.connect(bob)
    assert cb.connected["onlineFriends"] == [alice.id]
    assert ca.expect("online")["userId"] == bob.id
    cb.close()
    assert ca.expect("offline")["userId"] == bob.id


def test_presence_goes_to_every_online_friend(system):
    alice, bob, carol, dave = system.users("prm_a", "prm_b", "prm_c", "prm_d")
    for friend in (bob, carol, dave):
        system.befriend(alice, friend)
    cb, cc = system.connect(bob), system.connect(carol)   # dave stays offline
    ca = system.connect(alice)
    assert sorted(ca.connected["onlineFriends"]) == sorted([bob.id, carol.id])
    for c in (cb, cc):
        assert c.expect("online")["userId"] == alice.id
    ca.close()
    for c in (cb, cc):
        assert c.expect("offline")["userId"] == alice.id


def test_friend_list_online_flag_follows_presence(system):
    alice, bob = system.users("prl_a", "prl_b")
    system.befriend(alice, bob)

    def bob_online() -> bool:
        r = system.api("GET", "/api/friends", alice)
        assert r.status_code == 200
        (entry,) = r.json()["friends"]
        return entry["online"]

    assert bob_online() is False
    cb = system.connect(bob)
    assert bob_online() is True
    ca = system.connect(alice)
    cb.expect("online")
    ca.close()
    cb.expect("offline")
    cb.close()
    # once bob's close has been processed, alice's friend list shows him offline
    wait_until(lambda: bob_online() is False, timeout=5, message="bob still shown online")
