"""``python -m skyeim.contract check`` (docs/integration.md, "Replacing a service"),
run as a team would run it, against real service processes on 127.0.0.1:

- the shipped Message, Friend and Auth services (SQLite): every check passes;
- the stand-ins of tests/support/standins.py, written from PROTOCOL.md section 6
  alone: every check passes;
- a stand-in with a deliberate contract violation (``--bug``): the run fails, and
  exactly the endpoints concerned fail, naming the broken rule;
- a service that is down or hangs: every endpoint fails, quickly, saying why.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from service_harness import REPO, database_url, running_service
from standin_harness import running_standin

SECRET = "contract-internal-secret"
ACCESS_SECRET = "contract-access-secret-of-32-bytes-or-more"
RUN_TIMEOUT = 240            # s for one whole run of the checker

MESSAGE_ENDPOINTS = ["GET /healthz", "POST /v1/messages", "GET /v1/messages/unread",
                     "POST /v1/messages/delivered", "POST /v1/messages/read", "GET /v1/messages/history"]
FRIEND_ENDPOINTS = ["GET /healthz", "GET /v1/friends/<userId>", "POST /v1/friends",
                    "DELETE /v1/friends/<userId>/<friendId>"]
AUTH_ENDPOINTS = ["GET /healthz", "POST /v1/users", "POST /v1/tokens", "GET /v1/users"]
ENDPOINTS = {"message": MESSAGE_ENDPOINTS, "friend": FRIEND_ENDPOINTS, "auth": AUTH_ENDPOINTS}
LINE = re.compile(r"^(PASS|FAIL)  (message|friend|auth) +(\S+ \S+) +(.*)$")

pytestmark = pytest.mark.timeout(600)


def run_check(*args: str) -> tuple[int, str]:
    """The checker as a separate process; (exit code, stdout). Its stderr must be empty."""
    proc = subprocess.run([sys.executable, "-m", "skyeim.contract", "check", *args],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.stderr == "", proc.stderr
    return proc.returncode, proc.stdout


def endpoint_results(out: str) -> dict[tuple[str, str], tuple[str, list[str]]]:
    """(service, endpoint) -> (PASS or FAIL, the check lines under it)."""
    results: dict[tuple[str, str], tuple[str, list[str]]] = {}
    current = None
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            current = (m.group(2), m.group(3))
            results[current] = (m.group(1), [])
        elif line.startswith("      ") and current is not None:
            results[current][1].append(line.strip())
    return results


def assert_all_pass(rc: int, out: str, services: tuple[str, ...]) -> None:
    results = endpoint_results(out)
    expected = {(s, e) for s in services for e in ENDPOINTS[s]}
    assert set(results) == expected, out
    failed = {k: v for k, v in results.items() if v[0] != "PASS"}
    assert not failed, out
    assert rc == 0, out
    assert out.rstrip().endswith(f"{len(expected)} endpoints: {len(expected)} passed, 0 failed"), out


def urls(**services) -> list[str]:
    return [arg for name, svc in services.items() for arg in (f"--{name}", svc.url)]


# -- the shipped services and the stand-ins: everything passes ---------------------------

@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("shipped")
    common = {"InternalSecret": SECRET}
    with database_url("sqlite", workdir, "message") as m_db, \
            database_url("sqlite", workdir, "friend") as f_db, \
            database_url("sqlite", workdir, "auth") as a_db, \
            running_service("skyeim.message", {"Name": "message", "DataSource": m_db, **common},
                            workdir) as message, \
            running_service("skyeim.friend", {"Name": "friend", "DataSource": f_db, **common},
                            workdir) as friend, \
            running_service("skyeim.auth", {"Name": "auth", "DataSource": a_db, **common,
                                            "AccessSecret": ACCESS_SECRET}, workdir) as auth:
        yield {"message": message, "friend": friend, "auth": auth}


def test_the_shipped_services_pass_every_check(shipped):
    rc, out = run_check(*urls(**shipped), "--internal-secret", SECRET,
                        "--access-secret", ACCESS_SECRET, "-v")
    assert_all_pass(rc, out, ("message", "friend", "auth"))
    checks = [c for _, lines in endpoint_results(out).values() for c in lines]
    assert len(checks) >= 60 and all(c.startswith("ok ") for c in checks), out
    assert "refuses a call without X-Internal-Secret" in out
    # the bad input it sent was answered 400, never with a traceback in a service's log
    for name, svc in shipped.items():
        assert "Traceback" not in svc.log(), f"{name}:\n{svc.log()[-3000:]}"


def test_a_second_run_against_the_same_services_passes_too(shipped):
    """Random test data: the checker can run again and again against a live service."""
    rc, out = run_check(*urls(**shipped), "--internal-secret", SECRET)
    assert_all_pass(rc, out, ("message", "friend", "auth"))


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("standins")
    with running_standin("message", workdir, internal_secret=SECRET) as message, \
            running_standin("friend", workdir, internal_secret=SECRET) as friend, \
            running_standin("auth", workdir, internal_secret=SECRET,
                            access_secret=ACCESS_SECRET) as auth:
        yield {"message": message, "friend": friend, "auth": auth}


def test_the_standins_written_from_section_6_pass_every_check(standins):
    rc, out = run_check(*urls(**standins), "--internal-secret", SECRET,
                        "--access-secret", ACCESS_SECRET)
    assert_all_pass(rc, out, ("message", "friend", "auth"))


def test_without_an_internal_secret_the_secret_is_not_checked(tmp_path):
    with running_standin("friend", tmp_path) as friend:
        rc, out = run_check("--friend", friend.url, "-v")
    assert_all_pass(rc, out, ("friend",))
    assert "X-Internal-Secret or with a wrong one" not in out


# -- a broken service: the failures are named ------------------------------------------------

SHAPES = "answers in the contract's shapes and types"
NOT_JSON = "a body that is not a JSON object"
BROKEN = {
    # bugs: (service, {failing endpoint: [[words of one failing check's line], ...]})
    "history-oldest-first": ("message", {
        "GET /v1/messages/history": [["lists both directions newest first",
                                      "expected newest first [5, 4, 3, 2, 1]"],
                                     ["beforeSeq is exclusive"],
                                     ["limit defaults to 50 and is capped at 200", "the newest seq was"]]}),
    "no-idempotency": ("message", {
        "POST /v1/messages": [["idempotent on (fromUserId, msgId)", "duplicate must be true, got false"]],
        "POST /v1/messages/delivered": [["a delivered message shows it"],
                                        ["delivered messages stay unread until read"]]}),
    "string-ids": ("friend", {
        "GET /v1/friends/<userId>": [[SHAPES, 'friends[0] must be a JSON integer', 'got "']]}),
    "bad-json-500": ("auth", {
        "POST /v1/users": [[NOT_JSON, "answered 500"]],
        "POST /v1/tokens": [[NOT_JSON, "answered 500"]]}),
    "seconds-timestamps": ("message", {
        e: [[SHAPES, "createdAt must be milliseconds since the epoch"]]
        for e in ("POST /v1/messages", "GET /v1/messages/unread", "GET /v1/messages/history")}),
    "one-way-friends": ("friend", {"POST /v1/friends": [["befriends in both directions", "appears 0 times"],
                                                        ["the largest user id, 2^63-1, works"],
                                                        ["friends can be added again after a removal"]]}),
    "case-sensitive-usernames": ("auth", {
        "POST /v1/users": [["a taken username is 409 conflict, also in another case"]],
        "POST /v1/tokens": [["the username matches without regard to case"]],
        "GET /v1/users": [["?username= finds the user in any case"]]}),
    "ignore-secret": ("friend", {
        e: [["refuses a call without X-Internal-Secret", "expected 401"]] for e in FRIEND_ENDPOINTS[1:]}),
    # several at once: each is named, none hides another
    "string-ids,no-idempotency,history-oldest-first,bad-json-500": ("message", {
        "POST /v1/messages": [[SHAPES, "fromUserId must be a JSON integer"],
                              ["idempotent on (fromUserId, msgId)"], [NOT_JSON, "answered 500"]],
        "GET /v1/messages/unread": [[SHAPES]],
        "POST /v1/messages/delivered": [[SHAPES], [NOT_JSON, "answered 500"],
                                        ["a delivered message shows it"],
                                        ["delivered messages stay unread until read"]],
        "POST /v1/messages/read": [[NOT_JSON, "answered 500"]],
        "GET /v1/messages/history": [["lists both directions newest first"], ["beforeSeq is exclusive"],
                                     ["limit defaults to 50", "the newest seq was"], [SHAPES]]}),
}


@pytest.mark.parametrize("bugs", sorted(BROKEN))
def test_a_broken_standin_fails_where_it_breaks_the_contract(bugs, tmp_path):
    service, expected = BROKEN[bugs]
    with running_standin(service, tmp_path, internal_secret=SECRET, access_secret=ACCESS_SECRET,
                         bugs=tuple(bugs.split(","))) as svc:
        rc, out = run_check(f"--{service}", svc.url, "--internal-secret", SECRET)
    assert rc == 1, out
    results = endpoint_results(out)
    assert set(results) == {(service, e) for e in ENDPOINTS[service]}, out
    failed = {e for (_, e), (verdict, _) in results.items() if verdict == "FAIL"}
    assert failed == set(expected), out
    for endpoint, checks in expected.items():
        lines = [line for line in results[(service, endpoint)][1] if line.startswith("FAIL")]
        for words in checks:
            assert any(all(w in line for w in words) for line in lines), \
                f"{endpoint}: no failing check with {words}:\n{out}"
        assert len(lines) == len(checks), f"{endpoint}: more failures than expected:\n{out}"


# -- a service that is not there, or hangs ---------------------------------------------------

def test_a_service_that_is_down_fails_every_endpoint_at_once(tmp_path):
    with running_standin("message", tmp_path) as svc:
        svc.go_away()
        started = time.monotonic()
        rc, out = run_check("--message", svc.url)
    assert rc == 1
    assert time.monotonic() - started < 30, out
    results = endpoint_results(out)
    assert {e for (_, e), (verdict, _) in results.items() if verdict == "FAIL"} == set(MESSAGE_ENDPOINTS)
    assert "connection refused" in results[("message", "GET /healthz")][1][0], out
    assert all("does not answer GET /healthz" in results[("message", e)][1][0]
               for e in MESSAGE_ENDPOINTS[1:]), out


def test_a_service_that_hangs_fails_within_a_few_timeouts(tmp_path):
    with running_standin("friend", tmp_path) as svc:
        svc.hang()                    # /healthz still answers; every /v1/ call hangs
        started = time.monotonic()
        rc, out = run_check("--friend", svc.url, "--timeout", "1")
        elapsed = time.monotonic() - started
        svc.heal()
    assert rc == 1, out
    assert elapsed < 30, f"{elapsed:.1f} s:\n{out}"
    results = endpoint_results(out)
    assert results[("friend", "GET /healthz")][0] == "PASS"
    for endpoint in FRIEND_ENDPOINTS[1:]:
        verdict, lines = results[("friend", endpoint)]
        rules = [line for line in lines if SHAPES not in line]
        assert verdict == "FAIL" and all("no answer within 1 s" in line for line in rules), out


def test_usage_errors_exit_2():
    proc = subprocess.run([sys.executable, "-m", "skyeim.contract", "check"], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "give at least one of --message, --friend, --auth" in proc.stderr
    assert "Traceback" not in proc.stderr


BLOCKING_IMPORTER = """
import importlib.abc, runpy, sys
SERVER_ONLY = {"flask", "werkzeug", "gevent", "geventwebsocket", "sqlalchemy", "psycopg", "yaml",
               "jwt", "redis", "orjson", "prometheus_client", "websocket", "wsaccel"}
class ServerOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        ours = name == "skyeim" or name.startswith(("skyeim.protocol", "skyeim.contract"))
        if top in SERVER_ONLY or (top == "skyeim" and not ours):
            raise ImportError(f"{name} is not in the SDK-only install")
        return None
sys.meta_path.insert(0, ServerOnly())
sys.argv = ["skyeim.contract", "check", "--message", sys.argv[1]]
runpy.run_module("skyeim.contract", run_name="__main__")
"""


def test_it_needs_only_the_standard_library_requests_and_skyeim_protocol(tmp_path):
    with running_standin("message", tmp_path) as svc:
        proc = subprocess.run([sys.executable, "-c", BLOCKING_IMPORTER, svc.url], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                              text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_all_pass(proc.returncode, proc.stdout, ("message",))
