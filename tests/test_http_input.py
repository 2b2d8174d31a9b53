"""Bad HTTP input (issue 12 part 10): every POST endpoint of the gateway and of
the three services answers bad bodies with 4xx and an error code -- never 5xx,
never a traceback in a log -- and oversized request headers with 431.

The endpoints come from the apps' Flask url_maps at test time (tests/support/
http_input.py), so a new endpoint is covered without editing this file.
"""
from __future__ import annotations

import pytest

from harness import running_system
from http_input import SERVER_API_KEY, bodies, post_routes, raw_request

BODIES = bodies()


def _routes(tmp_path_factory) -> list[tuple[str, str]]:
    return post_routes(tmp_path_factory.mktemp("routes"))


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """The default system, with the server API (PROTOCOL.md 9.2) on."""
    with running_system(tmp_path_factory.mktemp("http_input"),
                        ws={"ServerApi": {"Key": SERVER_API_KEY}}) as s:
        yield s


@pytest.fixture(scope="module")
def routes(tmp_path_factory):
    return _routes(tmp_path_factory)


@pytest.fixture(scope="module")
def caller(system):
    return system.register_user("httpin")


def _url(system, program: str, path: str) -> str:
    return (system.url if program == "gateway" else system.service_url(program)) + path


def _send(system, caller, program: str, path: str, body: bytes):
    headers = {"Content-Type": "application/json"}
    if program == "gateway" and path.startswith("/server/"):
        headers["X-Api-Key"] = SERVER_API_KEY
        session = system.session
    elif program == "gateway":
        headers["Authorization"] = f"Bearer {caller.token}"
        session = system.session
    else:
        session = system.service_session            # carries X-Internal-Secret
    return session.post(_url(system, program, path), data=body, headers=headers, timeout=30)


def _every_item_refused(r) -> bool:
    """A batch call's 200: one result per item, each an error with a code (the contract)."""
    results = r.json().get("results")
    return isinstance(results, list) and bool(results) and all(
        isinstance(x, dict) and isinstance(x.get("error"), dict) and x["error"].get("code")
        for x in results)


def _all_logs(system) -> str:
    return "\n".join(system.log_text(name) for name in system.log_paths)


def test_the_route_list_covers_every_program_and_the_named_endpoints(routes):
    programs = {p for p, _ in routes}
    assert programs == {"gateway", "message", "friend", "auth"}
    paths = {(p, path) for p, path in routes}
    for want in [("gateway", "/api/register"), ("gateway", "/api/login"),
                 ("gateway", "/server/v1/messages"),
                 ("message", "/v1/messages"), ("message", "/v1/messages/batch"),
                 ("friend", "/v1/friends"), ("auth", "/v1/tokens")]:
        assert want in paths, (want, sorted(paths))


def test_every_post_endpoint_answers_every_bad_body_with_4xx_and_a_code(system, caller, routes):
    """A route that answers an empty object with 2xx takes no body (e.g. .../leave): it
    may ignore any body, but never answers 5xx or 4xx without a code."""
    before = len(_all_logs(system))
    failures = []
    bodyless = []
    for program, path in routes:
        takes_no_body = _send(system, caller, program, path, b"{}").status_code < 300
        if takes_no_body:
            bodyless.append(path)
        for name, body in BODIES.items():
            r = _send(system, caller, program, path, body)
            code = None
            try:
                got = r.json()
                code = got.get("code") if isinstance(got, dict) else None
            except ValueError:
                pass
            fine = (400 <= r.status_code < 500 and isinstance(code, str) and code) \
                or (r.status_code == 200 and _every_item_refused(r))
            if not fine and not (takes_no_body and r.status_code < 300):
                failures.append(f"{program} POST {path} {name}: {r.status_code} {r.text[:120]!r}")
    assert not failures, f"{len(failures)} bad answers:\n" + "\n".join(failures[:40])
    assert len(bodyless) <= 2, bodyless       # today: the gateway's and the service's leave
    logs = _all_logs(system)[before:]
    assert "Traceback" not in logs, logs[logs.index("Traceback") - 300:][:3000]


@pytest.mark.parametrize("depth", [100_000])
def test_deep_nesting_is_400_bad_request_on_the_named_endpoints(system, caller, depth):
    body = b"[" * depth + b"]" * depth
    for program, path in [("gateway", "/api/register"), ("gateway", "/api/login"),
                          ("message", "/v1/messages"), ("message", "/v1/messages/batch"),
                          ("friend", "/v1/friends"), ("auth", "/v1/tokens")]:
        r = _send(system, caller, program, path, body)
        assert r.status_code == 400, (program, path, r.status_code, r.text[:200])
        assert r.json()["code"] == "bad_request"


def _head(path: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


OVERSIZED = {
    "101-headers": [(f"X-Junk-{i}", "x") for i in range(101)],
    "1000-headers": [(f"X-Junk-{i}", "y" * 20) for i in range(1000)],
    "70k-header-line": [("X-Long", "z" * 70_000)],
}


@pytest.mark.parametrize("kind", sorted(OVERSIZED))
@pytest.mark.parametrize("program", ["gateway", "message", "friend", "auth"])
def test_oversized_request_headers_get_431_not_a_traceback_and_a_reset(system, program, kind):
    port = system.port if program == "gateway" else system.ports[program]
    before = len(_all_logs(system))
    answer = raw_request("127.0.0.1", port, _head("/healthz", OVERSIZED[kind]))
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 431 "), answer[:300]
    assert b'"code": "bad_request"' in answer
    # the server goes on serving; one log line, no traceback
    assert system.session.get(_url(system, program, "/healthz"), timeout=10).status_code == 200
    logs = _all_logs(system)[before:]
    assert "Traceback" not in logs, logs[:3000]
    assert "431" in logs


def test_up_to_100_headers_are_served(system):
    answer = raw_request("127.0.0.1", system.port,
                         _head("/healthz", [(f"X-Ok-{i}", "v") for i in range(97)] +
                               [("Connection", "close")]))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


def test_a_bad_body_to_a_websocket_route_is_a_plain_4xx(system):
    r = system.session.post(system.url + "/ws", data=b"[" * 100_000, timeout=10)
    assert r.status_code == 400 and r.json()["code"] == "not_websocket"
