"""Token and auth hardening: algorithms pinned, `exp` required, a small clock
leeway, revocation (4003 for live connections, 401 at the handshake and in
`auth` frames), secrets never logged, and the refusal to start with the shipped
default AccessSecret on a public address (docs/protocol.md, "Tokens")."""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from harness import DELETE, PASSWORD, PYTHON, REPO, free_port, unique, wait_until
from skyeim import tokens

POLL = 1            # Auth.RevocationPollInterval of these systems, s
REVOKED_WITHIN = 8  # s a live connection of a revoked user may take to be closed (poll + load)


@pytest.fixture(scope="module")
def revoking(tmp_path_factory):
    from harness import running_system
    with running_system(tmp_path_factory.mktemp("revoking"),
                        ws={"Auth": {"RevocationPollInterval": POLL}}) as s:
        yield s


def revoke(system, user) -> dict:
    r = system.service("auth", "POST", "/v1/revocations", {"userId": user.id})
    assert r.status_code == 200, r.text
    return r.json()


def change_password(system, user, new: str, old: str | None = None) -> requests.Response:
    return system.api("POST", "/api/password", json_body={
        "username": user.username, "oldPassword": old if old is not None else user.password,
        "newPassword": new})


def assert_401(answer) -> None:
    assert answer.status == 401, f"expected 401, got {answer.status} {answer.body[:200]!r}"
    assert answer.json["code"] == "unauthorized"


# ---------------------------------------------------------------------------
# The token itself

@pytest.mark.parametrize("alg", ["none", "HS512", "HS384", "RS256", "ES256"])
def test_every_algorithm_but_hs256_is_401(revoking, alg):
    user = revoking.minted_user("alg")
    assert_401(revoking.handshake(revoking.token_for(user.id, alg=alg)))
    assert revoking.handshake(revoking.token_for(user.id)).status == 101


def test_a_token_whose_header_claims_rs256_but_is_signed_hs256_is_401(revoking):
    """The classic confusion: the header names an asymmetric algorithm while the
    signature is an HMAC with the shared secret."""
    import base64
    import hashlib
    import hmac
    import json
    user = revoking.minted_user("rs")

    def part(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    signing = part({"alg": "RS256", "typ": "JWT"}) + "." + part(
        {"userId": user.id, "exp": int(time.time()) + 600})
    sig = hmac.new(revoking.secret.encode(), signing.encode(), hashlib.sha256).digest()
    token = signing + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    assert_401(revoking.handshake(token))


def test_a_token_without_exp_is_401(revoking):
    user = revoking.minted_user("noexp")
    assert_401(revoking.handshake(revoking.token_for(user.id, exp=DELETE)))
    assert_401(revoking.handshake(revoking.token_for(user.id, exp="soon")))


def test_exp_just_past_is_within_the_leeway_and_far_past_is_401(revoking):
    user = revoking.minted_user("leeway")
    # passed by 1-2 s: inside the documented leeway (clock skew between hosts)
    assert revoking.handshake(revoking.token_for(user.id, exp=int(time.time()) - 1)).status == 101
    assert_401(revoking.handshake(revoking.token_for(user.id, exp=int(time.time()) - tokens.LEEWAY - 5)))


def test_with_enforce_expiry_a_token_inside_the_leeway_connects_and_is_closed_4003(system_factory):
    s = system_factory(ws={"Auth": {"EnforceExpiry": True, "ExpiryWarning": 3}})
    user = s.minted_user("leeway_enf")
    c = s.connect(user, token=s.token_for(user.id, exp=int(time.time()) - 1), wait_connected=False)
    assert c.expect_close(timeout=5) == 4003


@pytest.mark.parametrize("gen", ["1", -1, 1.5, True, None])
def test_a_gen_claim_that_is_not_a_non_negative_integer_is_401(revoking, gen):
    user = revoking.minted_user("gen")
    assert_401(revoking.handshake(revoking.token_for(user.id, extra={"gen": gen})))


# ---------------------------------------------------------------------------
# Revocation

@pytest.mark.timeout(60)
def test_revoking_a_user_closes_its_live_connection_with_4003_and_refuses_the_old_token(revoking):
    s = revoking
    alice, bob = s.users("rv_a", "rv_b")
    ca, cb = s.connect(alice), s.connect(bob)
    t0 = time.monotonic()
    answer = revoke(s, alice)
    assert answer["userId"] == alice.id and answer["gen"] >= 1
    assert ca.expect_close(timeout=REVOKED_WITHIN) == 4003
    took = ca.closed_at - t0
    assert took <= REVOKED_WITHIN, took
    # the old token: refused at the handshake, over REST, and in an `auth` frame
    assert_401(s.handshake(alice.token))
    assert s.api("GET", "/api/friends", alice).status_code == 401
    fresh = s.login(alice.username)
    ca2 = s.connect(fresh)
    ca2.send("auth", {"token": alice.token})
    ca2.expect_error("unauthorized")
    ca2.send("auth", {"token": fresh.token})
    ca2.assert_no_frame(1.0)
    # other users are not affected; the fresh connection works and stays
    cb.assert_open()
    mid = ca2.chat(bob, "after revocation")
    ca2.expect_ack(mid, "sent")
    assert cb.expect("chat")["content"] == "after revocation"
    ca2.expect_ack(mid, "delivered")
    ca2.assert_no_frame(2 * POLL + 1)       # later polls do not close the new token's connection
    assert s.handshake(fresh.token).status == 101


@pytest.mark.timeout(60)
def test_revoke_then_log_in_within_the_same_second_gives_a_working_token(revoking):
    s = revoking
    alice = s.register_user("rv_same")
    for _ in range(2):                      # a second revocation raises the generation again
        gen = revoke(s, alice)["gen"]
        fresh = s.login(alice.username)     # same second as the revocation, most often
        claims = tokens.verify(s.secret, fresh.token)
        assert claims.gen == gen
        c = s.connect(fresh)
        c.assert_no_frame(2 * POLL + 1)
        c.assert_open()
        assert_401(s.handshake(alice.token))
        alice = fresh


@pytest.mark.timeout(60)
def test_tokens_without_gen_work_for_users_never_revoked_and_not_for_revoked_ones(revoking):
    s = revoking
    never = s.minted_user("rv_never")       # minted by another holder of the secret: no gen
    revoked = s.register_user("rv_minted")
    c_never = s.connect(never)
    revoke(s, revoked)
    wait_until(lambda: s.handshake(s.token_for(revoked.id)).status == 401, timeout=REVOKED_WITHIN,
               interval=0.2, message="a gen-less token of a revoked user still connects")
    c_never.assert_open()
    assert s.handshake(s.token_for(never.id)).status == 101
    # a minted token with the current generation is as good as a login's
    current = tokens.verify(s.secret, s.login(revoked.username).token).gen
    assert s.handshake(s.token_for(revoked.id, extra={"gen": current})).status == 101


@pytest.mark.timeout(60)
def test_a_password_change_revokes_every_token_of_the_user(revoking):
    s = revoking
    alice, bob = s.users("pw_a", "pw_b")
    ca, cb = s.connect(alice), s.connect(bob)
    r = change_password(s, alice, "a brand new password")
    assert r.status_code == 200 and r.json() == {"ok": True}, r.text
    assert ca.expect_close(timeout=REVOKED_WITHIN) == 4003
    assert_401(s.handshake(alice.token))
    old = s.api("POST", "/api/login", json_body={"username": alice.username, "password": PASSWORD})
    assert old.status_code == 401
    fresh = s.login(alice.username, "a brand new password", expect_id=alice.id)
    s.connect(fresh).assert_open()
    cb.assert_open()


def test_a_password_change_with_a_wrong_old_password_is_401_and_changes_nothing(revoking):
    s = revoking
    alice = s.register_user("pw_wrong")
    ca = s.connect(alice)
    r = change_password(s, alice, "another password", old="not the password")
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    r = change_password(s, alice, "short")
    assert r.status_code == 400 and r.json()["code"] == "bad_request"
    ca.assert_no_frame(2 * POLL + 0.5)
    assert s.login(alice.username).id == alice.id


@pytest.mark.timeout(60)
def test_revoking_an_unknown_user_is_404(revoking):
    r = revoking.service("auth", "POST", "/v1/revocations", {"userId": 2**62 + 12345})
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = revoking.service("auth", "POST", "/v1/revocations", {"userId": "1"})
    assert r.status_code == 400


@pytest.mark.timeout(120)
def test_a_restarted_gateway_refuses_a_revoked_token_from_its_first_handshake(system_factory):
    s = system_factory(ws={"Auth": {"RevocationPollInterval": 30}})   # no second poll in this test
    alice = s.register_user("restart")
    revoke(s, alice)
    s.restart()
    assert_401(s.handshake(alice.token))
    s.connect(s.login(alice.username)).assert_open()


@pytest.mark.timeout(120)
def test_with_the_auth_service_down_the_gateway_serves_warns_once_and_catches_up(system_factory):
    s = system_factory(standalone=False, ws={"Auth": {"RevocationPollInterval": 0.5}})
    alice, bob = s.users("down_a", "down_b")
    ca = s.connect(alice)
    assert s.stop_process("auth") == 0
    wait_until(lambda: "revocations unavailable" in s.log_text("gateway"), timeout=10,
               message="no warning about the Auth service being down")
    cb = s.connect(bob)                     # handshakes need no Auth service
    mid = ca.chat(bob, "during the outage")
    ca.expect_ack(mid, "sent")
    assert cb.expect("chat")["content"] == "during the outage"
    ca.expect_ack(mid, "delivered")
    # several more failed polls, still one warning
    ca.assert_no_frame(2.5)
    assert s.log_text("gateway").count("revocations unavailable") == 1
    s.start_service("auth")
    wait_until(lambda: "revocations available again" in s.log_text("gateway"), timeout=10,
               message="the gateway did not notice the Auth service is back")
    revoke(s, alice)
    assert ca.expect_close(timeout=REVOKED_WITHIN) == 4003
    cb.assert_open()


@pytest.mark.timeout(180)
def test_in_a_cluster_every_node_refuses_and_closes_on_its_own(tmp_path):
    """PROTOCOL.md section 8: each node polls the Auth service itself."""
    from cluster_harness import running_cluster
    with running_cluster(tmp_path, "revoke_cluster",
                         ws={"Auth": {"RevocationPollInterval": POLL}}) as cluster:
        alice, bob = cluster.users("cl_a", "cl_b")
        ca, cb = cluster[2].connect(alice), cluster[1].connect(bob)
        revoke(cluster, alice)
        assert ca.expect_close(timeout=REVOKED_WITHIN) == 4003
        for node in cluster.nodes:
            wait_until(lambda: node.api("GET", "/api/friends", alice).status_code == 401,
                       timeout=REVOKED_WITHIN, interval=0.2, message=f"{node} took the old token")
        fresh = cluster.login(alice.username)
        cluster[1].connect(fresh)
        cb.assert_open()


def test_with_polling_off_a_revoked_token_still_connects(system_factory):
    """Auth.RevocationPollInterval: 0 turns revocation off on this gateway (documented)."""
    s = system_factory(ws={"Auth": {"RevocationPollInterval": 0}})
    alice = s.register_user("off")
    revoke(s, alice)
    c = s.connect(alice)
    c.assert_no_frame(1.0)
    assert "token revocation is off" in s.log_text()


# ---------------------------------------------------------------------------
# Failed logins through the gateway

def test_api_login_and_password_are_429_with_retry_after_after_repeated_failures(system_factory):
    s = system_factory(auth={"LoginLimit": {"MaxFailures": 2, "Window": 30}})
    alice, bob = s.users("lim_a", "lim_b")
    wrong = {"username": alice.username, "password": "not the password"}
    for _ in range(2):
        assert s.api("POST", "/api/login", json_body=wrong).status_code == 401
    for r in (s.api("POST", "/api/login", json_body={"username": alice.username, "password": PASSWORD}),
              change_password(s, alice, "a brand new password")):
        assert r.status_code == 429, r.text
        assert r.json()["code"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 30
    assert s.login(bob.username).id == bob.id          # another username is not affected
    s.connect(alice).assert_open()                      # nor alice's token


# ---------------------------------------------------------------------------
# Nothing secret in the logs

@pytest.mark.timeout(120)
def test_tokens_and_passwords_never_appear_in_any_log(system_factory):
    debug = {"Log": {"Level": "debug"}}
    s = system_factory(standalone=False, ws={**debug, "Auth": {"RevocationPollInterval": POLL}},
                       message=debug, friend=debug, auth=debug)
    alice, bob = s.users("log_a", "log_b")
    secrets_seen = {alice.password, alice.token, bob.token, s.secret}
    wrong = "wrong-password-xyz"
    assert s.api("POST", "/api/login", json_body={"username": alice.username,
                                                   "password": wrong}).status_code == 401
    s.befriend(alice, bob)
    ca, cb = s.connect(alice), s.connect(bob, via="header")
    refreshed = s.token_for(alice.id, exp_in=7200)
    ca.send("auth", {"token": refreshed})
    mid = ca.chat(bob, "hello in the logs")
    ca.expect_ack(mid, "sent", skip=("pong", "online"))
    cb.expect("chat")
    new_password = "new-password-for-the-log-test"
    assert change_password(s, alice, new_password).status_code == 200
    assert ca.expect_close(timeout=REVOKED_WITHIN) == 4003
    fresh = s.login(alice.username, new_password)
    s.connect(fresh).assert_open()
    secrets_seen |= {wrong, refreshed, new_password, fresh.token, s.internal_secret}
    s.stop()
    logs = {p.name: p.read_text(errors="replace") for p in s.tmp.glob("*.log")}
    assert {"gateway.1.log", "auth.1.log", "message.1.log", "friend.1.log"} <= set(logs), logs.keys()
    assert "password changed" in logs["auth.1.log"]        # the logs did record these events
    assert "token revoked" in logs["gateway.1.log"]
    for name, text in logs.items():
        for secret in secrets_seen:
            assert secret not in text, f"{name} contains a secret"
        # no JWT-shaped string at all (header.payload.signature, base64url)
        assert not re.search(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", text), name


# ---------------------------------------------------------------------------
# The shipped default AccessSecret

class Started:
    """A program run with its output in a file: up once it logs "listening on"
    (its SIGTERM handler is in place by then) and answers /healthz."""

    def __init__(self, argv: list[str], port: int, out: Path, timeout: float = 30.0):
        self.out = out
        self._file = open(out, "wb")
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=self._file, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: self.proc.poll() is not None
                       or ("listening on" in self.output() and _healthy(port)),
                       timeout=timeout, interval=0.1, message=f"{argv} did not start")
        except AssertionError:
            self.proc.kill()
            raise

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(20)
        self._file.close()
        return self.output()


def _healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _gateway_yaml(tmp_path, host: str, secret: str = tokens.DEFAULT_SECRET) -> tuple[list[str], int]:
    port = free_port()
    p = tmp_path / f"ws-{port}.yaml"
    p.write_text(yaml.safe_dump({"Host": host, "Port": port, "Auth": {"AccessSecret": secret}}))
    return [PYTHON, "wsserver.py", "-f", str(p)], port


def _auth_yaml(tmp_path, host: str) -> tuple[list[str], int]:
    port = free_port()
    p = tmp_path / f"auth-{port}.yaml"
    p.write_text(yaml.safe_dump({"Name": "auth", "Host": host, "Port": port,
                                 "DataSource": f"sqlite:///{tmp_path / 'auth.db'}",
                                 "AccessSecret": tokens.DEFAULT_SECRET}))
    return [PYTHON, "-m", "skyeim.auth", "-f", str(p)], port


@pytest.mark.parametrize("program", [_gateway_yaml, _auth_yaml], ids=["gateway", "auth"])
def test_the_default_secret_on_a_public_address_refuses_to_start(tmp_path, program):
    argv, _ = program(tmp_path, "0.0.0.0")
    r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "default AccessSecret" in lines[0]
    assert "0.0.0.0" in lines[0] and "--insecure-dev" in lines[0]


@pytest.mark.parametrize("program", [_gateway_yaml, _auth_yaml], ids=["gateway", "auth"])
def test_the_default_secret_on_loopback_starts(tmp_path, program):
    argv, port = program(tmp_path, "127.0.0.1")
    started = Started(argv, port, tmp_path / "out.log")
    assert started.proc.poll() is None, started.stop()
    assert _healthy(port)
    out = started.stop()
    assert started.proc.returncode == 0, out


@pytest.mark.parametrize("program", [_gateway_yaml, _auth_yaml], ids=["gateway", "auth"])
def test_insecure_dev_starts_with_the_default_secret_on_a_public_address_and_says_so(tmp_path, program):
    argv, port = program(tmp_path, "0.0.0.0")
    started = Started(argv + ["--insecure-dev"], port, tmp_path / "out.log")
    assert started.proc.poll() is None, started.stop()
    out = started.stop()
    assert started.proc.returncode == 0, out
    assert "--insecure-dev" in out and "default AccessSecret" in out


def test_a_real_secret_on_a_public_address_starts(tmp_path):
    argv, port = _gateway_yaml(tmp_path, "0.0.0.0", secret="a-long-random-secret-" + unique("s"))
    started = Started(argv, port, tmp_path / "out.log")
    assert started.proc.poll() is None, started.stop()
    out = started.stop()
    assert started.proc.returncode == 0, out


def test_standalone_refuses_when_a_service_listens_publicly_with_the_default_secret(tmp_path):
    for name in ("message", "friend"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(
            {"Name": name, "Port": free_port(), "DataSource": f"sqlite:///{tmp_path / name}.db"}))
    (tmp_path / "auth.yaml").write_text(yaml.safe_dump(
        {"Name": "auth", "Host": "0.0.0.0", "Port": free_port(), "AccessSecret": tokens.DEFAULT_SECRET,
         "DataSource": f"sqlite:///{tmp_path / 'auth'}.db"}))
    p = tmp_path / "ws.yaml"
    p.write_text(yaml.safe_dump({"Host": "127.0.0.1", "Port": free_port(),
                                 "Auth": {"AccessSecret": tokens.DEFAULT_SECRET}}))
    r = subprocess.run([PYTHON, "wsserver.py", "--standalone", "-f", str(p)], cwd=REPO,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "0.0.0.0" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_the_shipped_configs_listen_on_loopback():
    from skyeim import config
    ws = config.load(config.GatewayConfig, REPO / "etc" / "ws.yaml")
    auth = config.load(config.AuthServiceConfig, REPO / "etc" / "auth.yaml")
    assert tokens.is_loopback(ws.host) and tokens.is_loopback(auth.host)
    for name in ("message", "friend"):
        assert tokens.is_loopback(config.load(config.ServiceConfig, REPO / "etc" / f"{name}.yaml").host)
    assert config.GatewayConfig().host == "127.0.0.1" and config.ServiceConfig().host == "127.0.0.1"


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
                                           ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                           ("::", False), ("10.0.0.1", False), ("example.com", False)])
def test_what_counts_as_loopback(host, loopback):
    assert tokens.is_loopback(host) is loopback
