"""Shared fixtures for the gateway's black-box acceptance tests (see harness.py).

- ``system``: one standalone system per test module (default configuration);
  tests keep independent by registering fresh, uniquely named users.
- ``system_factory(ws=..., message=..., friend=..., auth=..., standalone=...)``:
  a system with config overrides for one test, stopped after it.
- ``clients``: SDK clients, closed after the test (helpers in sdk_harness.py).
- ``browser``: one headless chromium per test module (browser_harness.chromium:
  skips without playwright or chromium).
- Every client a test opens is closed after the test.
- When a test fails, the tail of each involved system's log is attached to
  the report.
- Tests that need PostgreSQL or Redis skip unless SKYEIM_REQUIRE_SERVICES=1
  (``harness.require_external_services``).
"""
from __future__ import annotations

import time

import pytest

from harness import REQUIRE_SERVICES, SYSTEMS, System, close_open_clients, running_system  # noqa: F401
from harness import require_external_services  # noqa: F401  (re-exported)

_current_test_started = [0.0]


@pytest.fixture(scope="module")
def system(tmp_path_factory, request):
    name = request.module.__name__.rsplit(".", 1)[-1]
    with running_system(tmp_path_factory.mktemp(name)) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    from browser_harness import chromium
    with chromium() as b:
        yield b


@pytest.fixture
def system_factory(tmp_path_factory, request):
    made: list[System] = []

    def make(*, start: bool = True, **overrides) -> System:
        s = System(tmp_path_factory.mktemp(request.node.name[:40]), **overrides)
        made.append(s)
        if start:
            s.start()
        return s

    yield make
    close_open_clients()
    for s in made:
        s.stop()


@pytest.fixture
def clients():
    """SDK clients (skyeim.client.Client), closed after the test:
    ``clients(url, token, connect=True, **Client kwargs)``."""
    from sdk_harness import FAST
    from skyeim.client import Backoff, Client
    made: list = []

    def make(url: str, token: str | None, connect: bool = True, **kw):
        kw.setdefault("backoff", Backoff(**FAST))
        c = Client(url, token, **kw)
        made.append(c)
        if connect:
            c.connect()
        return c

    yield make
    for c in made:
        c.close(timeout=3)


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    close_open_clients()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _current_test_started[0] = time.monotonic()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        start = _current_test_started[0]
        for s in SYSTEMS:
            if s.started_at is None:
                continue
            if s.running or (s.stopped_at or 0) >= start:
                report.sections.append((f"log tail of system in {s.tmp}", s.log_tail(80)))
