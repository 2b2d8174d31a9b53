"""Debian's chromium under Playwright, for the web page's and the JavaScript client's tests.

- ``chromium()``: a launched browser (skips with the reason when playwright or
  chromium is missing, fails instead under SKYEIM_REQUIRE_SERVICES=1);
- ``SocketTap``: routes a page's /ws through Playwright to the real gateway,
  records the frames both ways, and can inject a frame into the page, for server
  frames a test cannot yet make the gateway send;
- ``JsClients``: a page of the gateway's origin that imports
  /static/skyeim-client.js and drives SkyeClient instances from the test.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from typing import Any, Callable, Iterator

import pytest

CHROMIUM = os.environ.get("SKYEIM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 800}
TIMEOUT_MS = 15_000


def missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r tests/requirements.txt)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless chromium (Playwright's Browser), closed afterwards."""
    reason = missing()
    if reason:
        if os.environ.get("SKYEIM_REQUIRE_SERVICES") == "1":
            pytest.fail(f"SKYEIM_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


def pump(page, seconds: float) -> None:
    """Wait while Playwright keeps dispatching the page's events (time.sleep would not)."""
    page.wait_for_timeout(seconds * 1000)


def poll(page, predicate: Callable[[], Any], timeout: float = TIMEOUT_MS / 1000,
         message: str = "") -> Any:
    """Poll ``predicate`` while the page's events are dispatched; its first true value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, message or "condition not met in time"
        pump(page, 0.05)


def _decode(payload: Any) -> dict:
    try:
        frame = json.loads(payload)
    except (TypeError, ValueError):
        return {}
    return frame if isinstance(frame, dict) else {}


class SocketTap:
    """The page's sockets to /ws, passed through Playwright to the real gateway:
    ``received`` and ``sent`` hold the frames of every socket (the page's view),
    ``inject(type, data)`` hands the page a frame as if the gateway sent it."""

    def __init__(self, page):
        self.page = page
        self.routes: list[Any] = []
        self.received: list[dict] = []
        self.sent: list[dict] = []
        page.route_web_socket(re.compile(r"/ws(\?|$)"), self._route)

    def _route(self, ws) -> None:
        server = ws.connect_to_server()
        self.routes.append(ws)

        def to_server(message) -> None:
            self.sent.append(_decode(message))
            server.send(message)

        def to_page(message) -> None:
            self.received.append(_decode(message))
            ws.send(message)

        ws.on_message(to_server)
        server.on_message(to_page)

    def inject(self, type: str, data: Any) -> None:
        assert self.routes, "the page has no socket yet"
        self.routes[-1].send(json.dumps({"type": type, "data": data}))

    def received_types(self) -> list[str]:
        return [f.get("type") for f in self.received]


JS_SETUP = """async () => {
  const mod = await import("/static/skyeim-client.js");
  const types = [...mod.SERVER_FRAME_TYPES, "state", "close", "frame"];
  window.skye = { mod, clients: [], log: [] };
  window.skye.make = (opts) => {
    const i = window.skye.clients.length;
    const o = { url: `ws://${location.host}/ws`, ...opts };
    if (opts.fixedRandom != null) o.random = () => opts.fixedRandom;
    if (opts.storage === "session") o.storage = sessionStorage;
    const c = new mod.SkyeClient(o);
    for (const type of types) {
      c.on(type, (data) => window.skye.log.push({ i, type, data, at: Date.now() }));
    }
    window.skye.clients.push(c);
    return i;
  };
  return mod.SERVER_FRAME_TYPES;
}"""


class JsClients:
    """A page at the gateway's origin with skyeim-client.js imported. Every
    event of every client made here is logged (``events``); the frames the page's
    sockets send are in ``sent`` (with each socket's URL)."""

    def __init__(self, browser, base_url: str):
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.sent: list[tuple[str, dict]] = []
        self.sockets: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("websocket", self._websocket)
        self.base_url = base_url
        self.open()

    def open(self) -> None:
        """(Re)load the page: clients are gone, sessionStorage stays."""
        self.page.goto(self.base_url + "/healthz")
        self.server_frame_types = self.page.evaluate(JS_SETUP)

    def _websocket(self, ws) -> None:
        self.sockets.append(ws.url)
        ws.on("framesent", lambda payload: self.sent.append((ws.url, _decode(payload))))

    def client(self, token: str, **options: Any) -> "JsClient":
        return JsClient(self, self.page.evaluate("(o) => window.skye.make(o)", {"token": token, **options}))

    def events(self) -> list[dict]:
        return self.page.evaluate("() => window.skye.log")

    def close(self) -> None:
        self.context.close()

    def assert_clean(self) -> None:
        assert not self.errors, f"JavaScript errors on the page: {self.errors}"


class JsClient:
    """One SkyeClient on a JsClients page, driven from Python."""

    def __init__(self, pages: JsClients, index: int):
        self.pages, self.page, self.index = pages, pages.page, index

    def call(self, method: str, *args: Any) -> Any:
        return self.page.evaluate("([i, m, a]) => { const r = window.skye.clients[i][m](...a); "
                                  "return r instanceof Map ? Object.fromEntries(r) : r; }",
                                  [self.index, method, list(args)])

    def get(self, prop: str) -> Any:
        return self.page.evaluate("([i, p]) => { const r = window.skye.clients[i][p]; "
                                  "return r instanceof Map ? Object.fromEntries(r) : r; }",
                                  [self.index, prop])

    def events(self, type: str | None = None) -> list[dict]:
        """The data of this client's events (of ``type``), in order."""
        return [e["data"] for e in self.timed_events(type)]

    def timed_events(self, type: str | None = None) -> list[dict]:
        return [e for e in self.pages.events()
                if e["i"] == self.index and (type is None or e["type"] == type)]

    def wait_event(self, type: str, where: Callable[[dict], bool] = lambda d: True,
                   count: int = 1, timeout: float = TIMEOUT_MS / 1000, since: int = 0) -> list[dict]:
        """The first ``count`` events of ``type`` that satisfy ``where`` (among those
        from the ``since``-th event of that type on), waiting for them."""
        def found():
            hits = [d for d in self.events(type)[since:] if where(d)]
            return hits[:count] if len(hits) >= count else None
        return poll(self.page, found, timeout, f"no {count} {type} event(s) as expected: "
                                               f"{self.events(type)[-5:]}")

    def states(self) -> list[str]:
        return [d["state"] for d in self.events("state")]

    def chats_sent(self, msg_id: str) -> list[dict]:
        """The chat frames with ``msg_id`` the page's sockets wrote."""
        return [f["data"] for _, f in self.pages.sent
                if f.get("type") == "chat" and f.get("data", {}).get("msgId") == msg_id]


def sign_in_page(browser, url: str, username: str, password: str, register: bool = False):
    """A new context's page of the chat app at ``url``, signed in as ``username``
    (registered by the page's Register button with ``register``);
    (page, JavaScript errors seen so far: a list that keeps filling)."""
    from playwright.sync_api import expect
    page = browser.new_context(viewport=VIEWPORT).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    page.locator("#login-username").fill(username)
    page.locator("#login-password").fill(password)
    page.locator("#register-button" if register else "#login-button").click()
    expect(page.locator("#chat-view")).to_be_visible()
    return page, errors
