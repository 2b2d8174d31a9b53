"""PROTOCOL.md section 5: with Auth.EnforceExpiry, `token_expiring` comes
ExpiryWarning seconds before `exp`, `auth {token}` refreshes, and a connection
whose token expires is closed with 4003."""
from __future__ import annotations

import time

import pytest

from harness import running_system

WARNING = 3   # Auth.ExpiryWarning, s


@pytest.fixture(scope="module")
def expiry_system(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("expiry"),
                        ws={"Auth": {"EnforceExpiry": True, "ExpiryWarning": WARNING}}) as s:
        yield s


def wall_to_mono(t_wall: float) -> float:
    """A wall-clock time (e.g. a JWT exp) on the monotonic clock the client records."""
    return time.monotonic() + (t_wall - time.time())


@pytest.mark.timeout(40)
def test_warning_before_exp_then_4003_at_exp(expiry_system):
    s = expiry_system
    alice = s.register_user("exp")
    exp = int(time.time()) + 7
    ca = s.connect(alice, token=s.token_for(alice.id, exp=exp))
    ca.assert_no_frame(exp - WARNING - time.time() - 1.0)      # not too early
    warned = ca.expect("token_expiring", timeout=3)
    assert warned == {"expiresAt": exp * 1000}
    assert abs(time.time() - (exp - WARNING)) <= 1.5, "warning not ExpiryWarning before exp"
    code = ca.expect_close(timeout=WARNING + 3)
    assert code == 4003
    assert abs(ca.closed_at - wall_to_mono(exp)) <= 1.5, "not closed at exp"
    assert [f["type"] for f in ca.before_close] == []


@pytest.mark.timeout(30)
def test_token_inside_warning_window_is_warned_right_after_connected(expiry_system):
    s = expiry_system
    alice = s.register_user("expw")
    exp = int(time.time()) + 2
    ca = s.connect(alice, token=s.token_for(alice.id, exp=exp))
    frame = ca.recv_frame(timeout=1.0)    # the very next frame
    assert frame == {"type": "token_expiring", "data": {"expiresAt": exp * 1000}}
    assert ca.expect_close(timeout=5) == 4003


@pytest.mark.timeout(60)
def test_refresh_resets_the_expiry_and_next_warning_comes_before_new_exp(expiry_system):
    s = expiry_system
    alice, bob = s.users("expr_a", "expr_b")
    exp1 = int(time.time()) + 2
    ca = s.connect(alice, token=s.token_for(alice.id, exp=exp1))
    assert ca.expect("token_expiring", timeout=1) == {"expiresAt": exp1 * 1000}
    exp2 = int(time.time()) + 8
    ca.send("auth", {"token": s.token_for(alice.id, exp=exp2)})
    # no 4003 at the old exp, and no new warning before exp2 - ExpiryWarning
    ca.assert_no_frame(max(exp2 - WARNING - time.time() - 0.8, 0.1))
    warned = ca.expect("token_expiring", timeout=3)
    assert warned == {"expiresAt": exp2 * 1000}
    assert abs(time.time() - (exp2 - WARNING)) <= 1.5
    # refresh again with a long token: it survives exp2
    ca.send("auth", {"token": s.token_for(alice.id, exp_in=3600)})
    ca.assert_no_frame(max(exp2 + 1.5 - time.time(), 0.1))
    assert not ca.closed
    cb = s.connect(bob)
    mid = ca.chat(bob, "still here")
    ca.expect_ack(mid, "sent")
    assert cb.expect("chat")["fromUserId"] == alice.id


@pytest.mark.timeout(30)
def test_refresh_with_login_token_works(expiry_system):
    s = expiry_system
    alice = s.register_user("expl")
    exp = int(time.time()) + 2
    ca = s.connect(alice, token=s.token_for(alice.id, exp=exp))
    ca.expect("token_expiring", timeout=1)
    fresh = s.login(alice.username, alice.password)
    ca.send("auth", {"token": fresh.token})
    ca.assert_no_frame(max(exp + 1.5 - time.time(), 0.1))
    ca.assert_open()


@pytest.mark.timeout(30)
def test_refresh_with_other_users_token_is_forbidden_and_does_not_extend(expiry_system):
    s = expiry_system
    alice, bob = s.users("expf_a", "expf_b")
    exp = int(time.time()) + 2
    ca = s.connect(alice, token=s.token_for(alice.id, exp=exp))
    ca.expect("token_expiring", timeout=1)
    ca.send("auth", {"token": s.token_for(bob.id, exp_in=3600)})
    ca.expect_error("forbidden", None)
    assert ca.expect_close(timeout=5) == 4003


@pytest.mark.timeout(30)
def test_refresh_with_invalid_token_is_unauthorized_and_does_not_extend(expiry_system):
    s = expiry_system
    alice = s.register_user("expu")
    exp = int(time.time()) + 2
    ca = s.connect(alice, token=s.token_for(alice.id, exp=exp))
    ca.expect("token_expiring", timeout=1)
    ca.send("auth", {"token": s.token_for(alice.id, exp_in=3600, secret="not-the-secret")})
    ca.expect_error("unauthorized", None)
    assert ca.expect_close(timeout=5) == 4003


def test_long_lived_token_gets_no_warning(expiry_system):
    s = expiry_system
    alice = s.register_user("expn")
    ca = s.connect(alice)
    ca.assert_no_frame(1.0)
    ca.assert_open()


@pytest.mark.timeout(30)
def test_expiry_not_enforced_by_default(system):
    """Without EnforceExpiry the token is checked only at the handshake."""
    alice = system.register_user("noexp")
    exp = int(time.time()) + 2
    ca = system.connect(alice, token=system.token_for(alice.id, exp=exp))
    ca.assert_no_frame(max(exp + 1.5 - time.time(), 0.1))
    assert not ca.closed
    ca.assert_open()
    # an auth frame is accepted whether or not EnforceExpiry is on
    ca.send("auth", {"token": system.token_for(alice.id, exp_in=600)})
    ca.assert_no_frame(0.5)
    ca.send("auth", {"token": "garbage"})
    ca.expect_error("unauthorized", None)


@pytest.mark.timeout(30)
def test_refresh_to_an_earlier_exp_is_honoured(expiry_system):
    """After a refresh, the warning and the close follow the NEW exp, even an earlier one."""
    s = expiry_system
    alice = s.register_user("exp_earlier")
    ca = s.connect(alice, token=s.token_for(alice.id, exp=int(time.time()) + 60))
    new_exp = int(time.time()) + WARNING + 2
    ca.send("auth", {"token": s.token_for(alice.id, exp=new_exp)})
    warned = ca.expect("token_expiring", timeout=5)
    assert warned == {"expiresAt": new_exp * 1000}
    assert ca.expect_close(timeout=WARNING + 5) == 4003
    assert abs(ca.closed_at - wall_to_mono(new_exp)) <= 1.5, "not closed at the new exp"
