"""Open-files limits (issue 12 part 1), with real processes.

* The shipped supervisord.conf under a VM's limits (``prlimit --nofile=1024:20000``,
  soft 1,024 and hard 20,000): every program runs with 20,000 (supervisord's
  ``minfds``, and each program raises its own soft limit to the hard one and
  logs it), and the gateway holds 3,000 WebSocket connections opened at once,
  with no Traceback in any log.
* With the hard limit at 1,024 too: the handshakes past what fits get 503
  ``overloaded`` at once (none hangs, none is reset), the connections already
  open keep chatting, ``/healthz`` answers, the start-up log warns that the
  expected load cannot fit, and nothing is logged as a traceback.
"""
from __future__ import annotations

import secrets

import requests

from harness import System, wait_until
from shipped_layout import ShippedLayout, Storm, nofile_limits, raise_own_fd_limit, tracebacks
from skyeim import tokens

CONNECTIONS = 3_000


def minted_tokens(secret: str, n: int) -> list[str]:
    base = secrets.randbelow(2**40) + 2**50
    return [tokens.issue(secret, base + i, 3600)[0] for i in range(n)]


def test_shipped_supervisord_conf_holds_3000_connections_under_a_vm_soft_limit(tmp_path):
    assert raise_own_fd_limit() >= CONNECTIONS + 100, "the test process needs the descriptors too"
    secret = secrets.token_urlsafe(24)
    layout = ShippedLayout(tmp_path / "vm", env={"SKYEIM_ACCESS_SECRET": secret})
    with layout.start(["prlimit", "--nofile=1024:20000", "--"]):
        for program in ("message", "friend", "auth", "gateway"):
            assert nofile_limits(layout.program_pid(program)) == (20000, 20000), program
        assert "open-files limit 20000" in layout.log_text("gateway")
        for program in ("message", "friend", "auth"):
            assert "open-files limit 20000" in layout.log_text(program), program

        storm = Storm("127.0.0.1", layout.ports["ws"], minted_tokens(secret, CONNECTIONS),
                      tmp_path / "tokens")
        try:
            result = storm.wait()
            health = requests.get(layout.url + "/healthz", timeout=10)
        finally:
            storm.release()
        print(f"\n{CONNECTIONS} handshakes at once under the shipped supervisord.conf: {result}")
        assert result["outcomes"] == {"101": CONNECTIONS}, result
        assert health.status_code == 200
    assert tracebacks(layout.all_logs()) == {}


def test_past_a_hard_limit_of_1024_handshakes_get_503_and_open_connections_keep_chatting(tmp_path):
    raise_own_fd_limit()
    s = System(tmp_path / "small", standalone=False, launcher=["prlimit", "--nofile=1024:1024", "--"])
    try:
        s.start()
        log = s.log_text("gateway")
        assert "open-files limit 1024" in log, log[-2000:]
        assert "leaves room for about" in log        # the start-up warning: 10,000 cannot fit
        alice, bob = s.minted_user("fd_a"), s.minted_user("fd_b")
        ca, cb = s.connect(alice), s.connect(bob)

        n = 1_500
        storm = Storm(s.host, s.port, [s.minted_user(f"fd{i}").token for i in range(n)],
                      tmp_path / "tokens")
        try:
            result = storm.wait()
            outcomes = result["outcomes"]
            print(f"\n{n} handshakes at once with the hard limit at 1,024: {result}")
            assert set(outcomes) <= {"101", "503 overloaded"}, outcomes   # no hang, no reset
            assert result["answered"] == n
            # all at once: the handshakes in flight hold descriptors too, so fewer than
            # the ~890 the start-up line names fit
            assert 200 <= outcomes.get("101", 0) < n, outcomes
            assert outcomes.get("503 overloaded", 0) == n - outcomes.get("101", 0)
            assert requests.get(s.url + "/healthz", timeout=10).status_code == 200
            # those already open keep chatting, both ways
            mid = ca.chat(bob, "still here")
            ca.expect_ack(mid, "sent")
            assert cb.expect("chat", skip=("pong", "ack"))["msgId"] == mid
            back = cb.chat(alice, "me too")
            cb.expect_ack(back, "sent")
            assert ca.expect("chat", skip=("pong", "ack"))["msgId"] == back
        finally:
            storm.release()
        # the descriptors come back: a new connection gets in again
        carol = s.minted_user("fd_c")
        wait_until(lambda: s.handshake(carol.token).status == 101, timeout=30, interval=0.5)
        assert s.procs["gateway"].poll() is None
    finally:
        s.stop()
    logs = {name: s.log_text(name) for name in ("gateway", "message", "friend", "auth")}
    assert tracebacks(logs) == {}
    # the descriptors kept in reserve served the calls to the services all along
    assert "ConnectionError" not in logs["gateway"]
