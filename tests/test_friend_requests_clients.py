"""Friend requests and blocking through the Python SDK (Api methods, typed frames)
and the CLI (`friends requests|accept|decline|block|unblock|blocks`)."""
from __future__ import annotations

import pytest

from harness import running_system
from sdk_harness import account, cli, frames_until, next_of, ok, one_line_error
from skyeim.client import (Api, Conflict, FriendAdded, FriendRequest, FriendRequestAnswered,
                           FriendRequests, NotFound)


@pytest.fixture(scope="module")
def accepting(tmp_path_factory):
    ws = {"Friends": {"RequireAcceptance": True}, "AuthRpc": {"Timeout": 15000}}
    with running_system(tmp_path_factory.mktemp("fr_clients"), ws=ws) as s:
        yield s


def test_the_sdk_requests_accepts_declines_and_blocks(accepting, clients):
    alice, bob, carol = accepting.users("frs_a", "frs_b", "frs_c")
    a, b, c = (Api(accepting.url, token=u.token) for u in (alice, bob, carol))
    ca = clients(accepting.url, alice.token)
    cb = clients(accepting.url, bob.token)
    assert a.request_friend(bob.id) == "requested"
    got = next_of(cb, FriendRequest)
    assert (got.from_user_id, got.username) == (alice.id, alice.username)
    incoming, outgoing = b.friend_requests()
    assert [(r.user_id, r.username) for r in incoming] == [(alice.id, alice.username)]
    assert outgoing == []
    b.accept_friend(alice.id)
    seen = frames_until(ca, lambda f: isinstance(f, FriendRequestAnswered))   # friend_added first
    assert seen[-1] == FriendRequestAnswered(bob.id, True)
    assert [f.user_id for f in seen if isinstance(f, FriendAdded)] == [bob.id]
    with pytest.raises(NotFound):
        b.accept_friend(alice.id)
    # carol asks bob while he is away; his next connection hears it after connected
    cb.close(timeout=3)
    assert c.request_friend(bob.username) == "requested"
    cb = clients(accepting.url, bob.token)
    pending = next_of(cb, FriendRequests)
    assert [(r.from_user_id, r.username) for r in pending.requests] == [(carol.id, carol.username)]
    b.decline_friend(carol.id)
    assert b.friend_requests() == ([], [])
    # a block: unfriends; the blocker cannot befriend until unblocking
    b.block(alice.id)
    assert [x.user_id for x in b.blocks()] == [alice.id] and b.friends() == []
    with pytest.raises(Conflict):
        b.request_friend(alice.id)
    assert a.request_friend(bob.id) == "requested"      # dropped silently
    assert b.friend_requests() == ([], [])
    b.unblock(alice.id)
    assert b.blocks() == []


def test_the_cli_friends_requests_accept_decline_block(accepting, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    alice, ta, alice_id = account(accepting, home, "frc_a")
    bob, tb, bob_id = account(accepting, home, "frc_b")
    carol, tc, carol_id = account(accepting, home, "frc_c")
    assert ok(cli(accepting, home, "friends", "add", bob, token_file=ta)) == \
        f"requested {bob}: they must accept\n"
    ok(cli(accepting, home, "friends", "add", str(bob_id), token_file=tc))
    rows = [line.split("\t")[:3] for line in
            ok(cli(accepting, home, "friends", "requests", token_file=tb)).splitlines()]
    assert rows == [["from", str(alice_id), alice], ["from", str(carol_id), carol]]
    assert ok(cli(accepting, home, "friends", "accept", alice, token_file=tb)) == \
        f"accepted user {alice_id}\n"
    assert ok(cli(accepting, home, "friends", "decline", str(carol_id), token_file=tb)) == \
        f"declined user {carol_id}\n"
    assert "requested you" in one_line_error(
        cli(accepting, home, "friends", "accept", carol, token_file=tb))
    assert ok(cli(accepting, home, "friends", "list", token_file=tb)).startswith(f"{alice_id}\t")
    assert ok(cli(accepting, home, "friends", "block", alice, token_file=tb)) == \
        f"blocked user {alice_id}\n"
    assert ok(cli(accepting, home, "friends", "blocks", token_file=tb)).startswith(
        f"{alice_id}\t{alice}\t")
    assert ok(cli(accepting, home, "friends", "list", token_file=tb)) == ""
    assert ok(cli(accepting, home, "friends", "unblock", alice, token_file=tb)) == \
        f"unblocked user {alice_id}\n"
    assert ok(cli(accepting, home, "friends", "blocks", token_file=tb)) == ""
