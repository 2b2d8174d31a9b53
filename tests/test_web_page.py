"""The web chat page at / (skyeim/gateway/static/), in a real browser.

Debian's chromium, driven by Playwright for Python (the PyPI wheel ships its own
driver; no browser is downloaded). Two browser contexts are two users: they
register, befriend each other and chat through the page, against a real
gateway process (harness.System).

Without playwright or chromium these tests skip with the reason, unless
SKYEIM_REQUIRE_SERVICES=1 (as in CI), which makes that a failure.
"""
from __future__ import annotations

import json
import signal
import time

from browser_harness import TIMEOUT_MS, VIEWPORT, SocketTap, poll
from harness import PASSWORD, unique, wait_until

XSS = "<img src=x onerror=alert(1)>"


def expect(locator_or_page):
    from playwright.sync_api import expect as pw_expect
    return pw_expect(locator_or_page)


class Tab:
    """One page of the chat app in its own browser context (= one user's browser)."""

    def __init__(self, browser, system, context=None):
        self.system = system
        self.context = context or browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.chat_frames: list[dict] = []      # chat frames this page sent, over all sockets
        self.sent: list[tuple[float, str]] = []      # (monotonic time, type) of every frame sent
        self.received: list[tuple[float, str]] = []  # the same for frames received
        self.sockets = 0
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("websocket", self._websocket)
        self.page.goto(system.url + "/")

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _websocket(self, ws) -> None:
        self.sockets += 1

        def parse(payload) -> dict:
            try:
                frame = json.loads(payload)
            except (TypeError, ValueError):
                return {}
            return frame if isinstance(frame, dict) else {}

        def sent(payload) -> None:
            frame = parse(payload)
            self.sent.append((time.monotonic(), frame.get("type")))
            if frame.get("type") == "chat":
                self.chat_frames.append(frame["data"])

        ws.on("framesent", sent)
        ws.on("framereceived", lambda p: self.received.append((time.monotonic(), parse(p).get("type"))))

    # -- the page's parts ------------------------------------------------------------
    def q(self, selector: str):
        return self.page.locator(selector)

    def friend(self, user_id: int):
        return self.q(f'.friend[data-user-id="{user_id}"]')

    def message(self, msg_id: str):
        return self.q(f'#message-list .msg[data-msg-id="{msg_id}"]')

    @property
    def user_id(self) -> int:
        return self.page.evaluate("JSON.parse(sessionStorage.getItem('skyeim.session')).userId")

    # -- actions ----------------------------------------------------------------------
    def sign_in(self, username: str, password: str = PASSWORD, register: bool = False) -> int:
        self.q("#login-username").fill(username)
        self.q("#login-password").fill(password)
        self.q("#register-button" if register else "#login-button").click()
        expect(self.q("#chat-view")).to_be_visible()
        expect(self.q("#me-name")).to_have_text(username)
        return self.user_id

    def add_friend(self, username: str) -> None:
        self.q("#add-friend-input").fill(username)
        self.q("#add-friend-button").click()
        expect(self.q("#add-friend-status")).to_have_text(f"{username} is now your friend.")

    def open_chat(self, user_id: int) -> None:
        self.friend(user_id).click()
        expect(self.friend(user_id)).to_have_class("friend active")
        expect(self.q("#conv-head")).to_be_visible()

    def send(self, text: str) -> str:
        """Type ``text`` and press Enter; the new message's msgId."""
        before = set(self.q("#message-list .msg.mine").evaluate_all(
            "els => els.map(e => e.dataset.msgId)"))
        self.q("#composer-input").fill(text)
        self.q("#composer-input").press("Enter")
        expect(self.q("#composer-input")).to_have_value("")
        new = wait_until(lambda: set(self.q("#message-list .msg.mine").evaluate_all(
            "els => els.map(e => e.dataset.msgId)")) - before, message="sent message not shown")
        assert len(new) == 1, new
        return new.pop()

    def pause(self, seconds: float) -> None:
        """Wait while Playwright keeps dispatching this page's events (time.sleep would not)."""
        self.page.wait_for_timeout(seconds * 1000)

    def wait_for(self, predicate, timeout: float = TIMEOUT_MS / 1000, message: str = "") -> None:
        """Poll ``predicate`` (e.g. over the recorded frames) while events are dispatched."""
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, message or "condition not met in time"
            self.pause(0.05)

    def seqs(self) -> list[int]:
        return self.q("#message-list .msg").evaluate_all(
            "els => els.map(e => Number(e.dataset.seq))")

    def close(self) -> None:
        self.context.close()

    def assert_clean(self) -> None:
        assert not self.errors, f"JavaScript errors on the page: {self.errors}"
        assert not self.dialogs, f"dialogs opened: {self.dialogs}"


def api_user(system, name: str):
    return system.register_user(name)


def friends_chatting(browser, system):
    """alice and bob, friends, each signed in in a tab of their own with the other's
    chat open: (alice, bob, alice's tab, bob's tab)."""
    alice, bob = api_user(system, "alice"), api_user(system, "bob")
    system.befriend(alice, bob)
    a, b = Tab(browser, system), Tab(browser, system)
    a.sign_in(alice.username)
    b.sign_in(bob.username)
    a.open_chat(bob.id)
    b.open_chat(alice.id)
    return alice, bob, a, b


# ---------------------------------------------------------------------------

def test_page_and_assets_are_served(system):
    r = system.api("GET", "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "Content-Security-Policy" in r.headers
    assert "/static/app.js" in r.text and "/static/style.css" in r.text
    assert '<script type="module" src="/static/app.js">' in r.text   # it imports the rest
    assert "http://" not in r.text and "https://" not in r.text      # nothing from outside
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src" not in csp     # scripts: this origin only
    assets = (("/static/app.js", "javascript"), ("/static/groups.js", "javascript"),
              ("/static/skyeim-client.js", "javascript"), ("/static/style.css", "text/css"))
    for path, kind in assets:
        r = system.api("GET", path)
        assert r.status_code == 200 and kind in r.headers["content-type"], (path, r.headers)
        assert "no-cache" in r.headers.get("cache-control", ""), r.headers
        assert r.headers.get("etag"), r.headers
        again = system.api("GET", path, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
        assert "innerHTML" not in r.text and "@import" not in r.text and "url(http" not in r.text
    assert system.api("GET", "/static/nope.js").status_code == 404


def test_register_befriend_chat_ticks_and_presence(browser, system):
    a_name, b_name = unique("alice"), unique("bob")
    a, b = Tab(browser, system), Tab(browser, system)
    a_id = a.sign_in(a_name, register=True)
    b_id = b.sign_in(b_name, register=True)

    # befriend each other through the page; both are online
    a.add_friend(b_name)
    expect(a.friend(b_id)).to_have_attribute("data-online", "true")
    expect(a.q("#conv-name")).to_have_text(b_name)             # adding opens the chat
    b.add_friend(a_name)
    expect(b.friend(a_id)).to_have_attribute("data-online", "true")
    expect(b.friend(a_id).locator(".dot")).to_have_class("dot online")

    # bob closes his browser: alice sees him go offline
    b.close()
    expect(a.friend(b_id)).to_have_attribute("data-online", "false")
    expect(a.friend(b_id).locator(".dot")).to_have_class("dot")
    expect(a.q("#conv-presence")).not_to_have_text("online")

    # a message to an offline friend: stored (sent, one tick), not delivered
    m1 = a.send("Hi Bob, are you there?")
    expect(a.message(m1)).to_have_attribute("data-status", "sent")
    expect(a.message(m1).locator(".tick")).to_have_text("✓")
    a.pause(0.5)
    expect(a.message(m1)).to_have_attribute("data-status", "sent")

    # bob comes back and signs in: online again, the message is delivered (two ticks)
    b = Tab(browser, system)
    assert b.sign_in(b_name) == b_id
    expect(a.friend(b_id)).to_have_attribute("data-online", "true")
    expect(a.message(m1)).to_have_attribute("data-status", "delivered")
    expect(a.message(m1).locator(".tick")).to_have_text("✓✓")
    expect(a.message(m1).locator(".tick")).not_to_have_class("tick read")
    # bob has not opened the chat: an unread badge, and no read receipt yet
    expect(b.friend(a_id).locator(".badge")).to_have_text("1")
    a.pause(0.5)
    expect(a.message(m1)).to_have_attribute("data-status", "delivered")

    # bob opens the chat: he reads it (a backlog message), alice sees blue ticks
    b.open_chat(a_id)
    expect(b.message(m1).locator(".text")).to_have_text("Hi Bob, are you there?")
    expect(b.friend(a_id).locator(".badge")).to_have_count(0)
    expect(a.message(m1)).to_have_attribute("data-status", "read")
    expect(a.message(m1).locator(".tick")).to_have_class("tick read")
    expect(a.message(m1).locator(".tick")).to_have_text("✓✓")

    # bob answers while alice has the chat open: it goes all the way to read
    m2 = b.send("Yes! Hello Alice.")
    expect(a.message(m2).locator(".text")).to_have_text("Yes! Hello Alice.")
    expect(b.message(m2)).to_have_attribute("data-status", "read")
    expect(b.message(m2).locator(".tick")).to_have_class("tick read")

    # and back: live delivery and read while both look at the chat
    m3 = a.send("Great, talk soon")
    expect(b.message(m3).locator(".text")).to_have_text("Great, talk soon")
    expect(a.message(m3)).to_have_attribute("data-status", "read")

    for tab in (a, b):
        assert tab.seqs() == [1, 2, 3]
        for m in (m1, m2, m3):
            expect(tab.message(m)).to_have_count(1)
    history = system.history(system.login(a_name), b_id)["messages"]
    assert [(m["msgId"], m["status"]) for m in history] == [(m3, "read"), (m2, "read"), (m1, "read")]
    a.assert_clean()
    b.assert_clean()
    a.close()
    b.close()


def test_user_content_is_shown_as_text(browser, system):
    alice, bob, a, b = friends_chatting(browser, system)
    tricky = [XSS, '<script>alert("x")</script>', "&lt;b&gt;not bold&lt;/b&gt; <b>nor this</b>",
              "line one\n  line two"]
    ids = [a.send(text) for text in tricky]
    for mid, text in zip(ids, tricky):
        expect(b.message(mid)).to_have_count(1)
        assert b.message(mid).locator(".text").text_content() == text
        assert a.message(mid).locator(".text").text_content() == text
    a.pause(0.5)                       # an injected <img src=x> would have fired onerror by now
    assert a.page.evaluate("document.images.length") == 0
    a.assert_clean()
    a.close()
    # from a plain WebSocket client too (not typed into the page; it would replace alice's page)
    ws = system.connect(alice)
    ws.chat(bob, XSS)
    ws.expect_ack(None, "sent")
    expect(b.q("#message-list .msg.theirs .text").last).to_have_text(XSS)
    # the friend list's preview is text as well
    expect(b.friend(alice.id).locator(".friend-sub")).to_have_text(XSS)
    b.pause(1.0)                       # an injected <img src=x> would have fired onerror by now
    assert b.q("#message-list img, #message-list script, #message-list b").count() == 0
    assert b.page.evaluate("document.images.length") == 0
    b.assert_clean()
    b.close()


def test_read_receipts_wait_until_the_page_is_visible(browser, system):
    alice, bob, a, b = friends_chatting(browser, system)
    # bob's tab goes to the background (another tab in front, window minimized)
    b.page.evaluate("""() => {
        Object.defineProperty(document, "visibilityState", {configurable: true, get: () => "hidden"});
        document.dispatchEvent(new Event("visibilitychange"));
    }""")
    m1 = a.send("Are you reading this?")
    expect(b.message(m1)).to_have_count(1)
    expect(a.message(m1)).to_have_attribute("data-status", "delivered")
    expect(b.friend(alice.id).locator(".badge")).to_have_text("1")
    b.pause(1.0)
    expect(a.message(m1)).to_have_attribute("data-status", "delivered")
    assert "read" not in [t for _, t in b.sent]
    # back in front: the open chat is read now
    b.page.evaluate("""() => {
        Object.defineProperty(document, "visibilityState", {configurable: true, get: () => "visible"});
        document.dispatchEvent(new Event("visibilitychange"));
    }""")
    expect(a.message(m1)).to_have_attribute("data-status", "read")
    expect(b.friend(alice.id).locator(".badge")).to_have_count(0)
    a.assert_clean()
    b.assert_clean()
    a.close()
    b.close()


def test_app_level_ping_every_25_seconds(browser, system):
    alice = api_user(system, "alice")
    a = Tab(browser, system)
    a.page.clock.install()                 # the page's timers on a clock the test moves
    a.page.reload()
    a.sign_in(alice.username)
    expect(a.q("#banner")).to_be_hidden()
    a.wait_for(lambda: "connected" in [t for _, t in a.received], message="no connected frame")
    assert "ping" not in [t for _, t in a.sent]
    a.page.clock.run_for(24_000)
    a.pause(0.3)
    assert "ping" not in [t for _, t in a.sent]
    a.page.clock.run_for(1_500)
    a.wait_for(lambda: [t for _, t in a.sent].count("ping") == 1, message="no ping after 25 s")
    a.wait_for(lambda: "pong" in [t for _, t in a.received], message="no pong")
    a.page.clock.run_for(25_000)
    a.wait_for(lambda: [t for _, t in a.sent].count("ping") == 2, message="no second ping")
    expect(a.q("#banner")).to_be_hidden()
    a.assert_clean()
    a.close()


def test_history_pages_load_as_you_scroll_up(browser, system):
    alice, bob = api_user(system, "alice"), api_user(system, "bob")
    system.befriend(alice, bob)
    ids = []
    for i in range(120):                 # an old conversation, both ways, all read
        sender, recipient = (alice, bob) if i % 2 == 0 else (bob, alice)
        ids.append(system.seed_message(sender, recipient, f"old #{i}")["msgId"])
    for reader, peer in ((alice, bob), (bob, alice)):
        r = system.service("message", "POST", "/v1/messages/read",
                           {"userId": reader.id, "peerId": peer.id})
        assert r.status_code == 200, r.text
    ids += [system.seed_message(alice, bob, f"new #{i}")["msgId"] for i in range(3)]  # unread
    b = Tab(browser, system)
    b.sign_in(bob.username)
    # the 3 unread messages arrive as backlog chat frames: an unread badge
    expect(b.friend(alice.id).locator(".badge")).to_have_text("3")
    b.open_chat(alice.id)
    # the newest page (50), in seq order, scrolled to the end
    expect(b.q("#message-list .msg")).to_have_count(50)
    assert b.seqs() == list(range(74, 124))
    expect(b.q("#message-list .msg").last.locator(".text")).to_have_text("new #2")
    expect(b.q("#message-list .msg.mine")).to_have_count(24)   # bob wrote the odd ones
    box = b.q("#messages")
    assert box.evaluate("e => e.scrollHeight - e.scrollTop - e.clientHeight") < 5
    # opening the chat read the backlog messages
    expect(b.friend(alice.id).locator(".badge")).to_have_count(0)
    wait_until(lambda: all(m["status"] == "read"
                           for m in system.history(alice, bob, limit=200)["messages"]),
               timeout=10, message="opening the chat did not read the backlog")

    # scroll to the top: older pages load, the messages on screen stay in place
    where = ("(e) => e.getBoundingClientRect().top"
             " - e.closest('.messages').getBoundingClientRect().top")
    for count in (100, 123):
        first_shown = b.q("#message-list .msg").first.get_attribute("data-msg-id")
        box.evaluate("e => { e.scrollTop = 0; }")
        before = b.message(first_shown).evaluate(where)
        expect(b.q("#message-list .msg")).to_have_count(count)
        assert box.evaluate("e => e.scrollTop") > 500
        after = b.message(first_shown).evaluate(where)
        assert abs(after - before) < 5, f"the view jumped from {before}px to {after}px"
    expect(b.q("#history-status")).to_have_attribute("data-state", "start")
    expect(b.q("#history-status")).to_contain_text("beginning")
    assert b.seqs() == list(range(1, 124))
    shown = b.q("#message-list .msg").evaluate_all("els => els.map(e => e.dataset.msgId)")
    assert shown == ids
    # at the start, scrolling up again asks for nothing more
    box.evaluate("e => { e.scrollTop = 0; }")
    b.pause(0.5)
    expect(b.q("#message-list .msg")).to_have_count(123)
    b.assert_clean()
    b.close()


def test_reconnect_banner_and_resend_after_restart(browser, system_factory):
    system = system_factory()
    alice, bob, a, b = friends_chatting(browser, system)
    m0 = a.send("before the restart")
    expect(a.message(m0)).to_have_attribute("data-status", "read")
    expect(a.q("#banner")).to_be_hidden()

    # 1. the gateway stops (1001): a banner; a message typed meanwhile waits in the outbox
    system.stop()
    for tab in (a, b):
        expect(tab.q("#banner")).to_be_visible()
        expect(tab.q("#banner")).to_have_attribute("data-kind", "reconnecting")
        expect(tab.q("#banner-text")).to_contain_text("Reconnecting")
    m1 = a.send("typed while the server was down")
    expect(a.message(m1)).to_have_attribute("data-status", "pending")
    assert not [f for f in a.chat_frames if f["msgId"] == m1]
    system.start()
    for tab in (a, b):
        expect(tab.q("#banner")).to_be_hidden(timeout=30_000)
    expect(a.message(m1)).to_have_attribute("data-status", "read", timeout=TIMEOUT_MS)
    expect(b.message(m1)).to_have_count(1)
    a.pause(1.0)                                            # nothing more goes out
    assert len([f for f in a.chat_frames if f["msgId"] == m1]) == 1

    # 2. a message that was written to the socket but never acked (the gateway froze,
    # then died): after the reconnect it is sent again, once, with the same msgId
    gateway = system.procs["gateway"]
    gateway.send_signal(signal.SIGSTOP)
    try:
        m2 = a.send("sent into a frozen server")
        a.wait_for(lambda: [f for f in a.chat_frames if f["msgId"] == m2], timeout=5)
        a.pause(0.3)
        expect(a.message(m2)).to_have_attribute("data-status", "pending")
    finally:
        gateway.send_signal(signal.SIGKILL)
        gateway.send_signal(signal.SIGCONT)
        gateway.wait(10)
    expect(a.q("#banner")).to_be_visible()
    system.start()
    expect(a.q("#banner")).to_be_hidden(timeout=30_000)
    expect(a.message(m2)).to_have_attribute("data-status", "read", timeout=TIMEOUT_MS)
    a.pause(1.0)
    frames = [f for f in a.chat_frames if f["msgId"] == m2]
    assert len(frames) == 2, frames                         # the original and one resend
    assert frames[0] == frames[1]
    expect(b.message(m2)).to_have_count(1)
    history = system.history(alice, bob, limit=200)["messages"]
    assert [m["msgId"] for m in history].count(m2) == 1
    assert [m["msgId"] for m in reversed(history)] == [m0, m1, m2]
    assert a.seqs() == b.seqs() == [1, 2, 3]
    a.assert_clean()
    b.assert_clean()
    a.close()
    b.close()


def test_replaced_by_another_tab_does_not_reconnect(browser, system):
    alice = api_user(system, "alice")
    first = Tab(browser, system)
    first.sign_in(alice.username)
    second = Tab(browser, system, context=first.context)     # same browser, another tab
    second.sign_in(alice.username)
    expect(first.q("#banner")).to_have_attribute("data-kind", "replaced")
    expect(first.q("#banner")).to_be_visible()
    expect(first.q("#banner-text")).to_contain_text("another tab")
    first.pause(3)                                            # no automatic reconnect
    assert first.sockets == 1
    expect(second.q("#banner")).to_be_hidden()
    # on request, the first tab takes over again
    first.q("#banner-action").click()
    expect(second.q("#banner")).to_have_attribute("data-kind", "replaced")
    expect(first.q("#banner")).to_be_hidden()
    first.assert_clean()
    second.assert_clean()
    first.close()


def test_messages_missed_while_away_arrive_by_sync_once(browser, system):
    alice, bob = api_user(system, "alice"), api_user(system, "bob")
    system.befriend(alice, bob)
    a = Tab(browser, system)
    a.sign_in(alice.username)
    cb = system.connect(bob)
    hi = cb.chat(alice, "hi alice")
    expect(a.friend(bob.id).locator(".friend-sub")).to_have_text("hi alice")   # seq 1, known
    # alice opens SkyeIM on her phone: this tab is replaced and stays away
    phone = system.connect(alice)
    expect(a.q("#banner")).to_have_attribute("data-kind", "replaced")
    own = phone.chat(bob, "from the phone")
    reply = None
    for _ in range(20):                      # bounded: acks and bob's reply, in any order
        frame = phone.recv_frame()
        if frame["type"] == "ack" and frame["data"]["msgId"] == own and reply is None:
            reply = cb.chat(alice, "bob's reply")
        if frame["type"] == "chat" and frame["data"]["msgId"] == reply:
            break
    phone.read(bob)                          # read on the phone: never pushed to the tab
    wait_until(lambda: all(m["status"] == "read" for m in system.history(alice, bob)["messages"]
                           if m["fromUserId"] == bob.id), message="read on the phone")
    phone.close()
    received_before = len(a.received)
    a.q("#banner-action").click()            # "Use it here"
    expect(a.q("#banner")).to_be_hidden()
    # the conversation was not open: only sync can have brought these
    expect(a.friend(bob.id).locator(".friend-sub")).to_have_text("bob's reply")
    # the last page shows before sync_complete arrives: wait for the latter
    poll(a.page, lambda: "sync_complete" in [t for _, t in a.received[received_before:]],
         message="no sync_complete")
    since = [t for _, t in a.received[received_before:]]
    assert "sync_messages" in since and "sync_complete" in since and "chat" not in since, since
    assert "sync" in [t for _, t in a.sent]
    a.open_chat(bob.id)
    for mid in (hi, own, reply):
        expect(a.message(mid)).to_have_count(1)
    assert a.seqs() == [1, 2, 3]
    expect(a.message(own)).to_have_class("msg mine")
    a.assert_clean()
    a.close()


def test_expired_token_returns_to_sign_in(browser, system_factory):
    system = system_factory(ws={"Auth": {"EnforceExpiry": True, "ExpiryWarning": 2}},
                            auth={"AccessExpire": 4})
    alice = api_user(system, "alice")
    a = Tab(browser, system)
    a.sign_in(alice.username)
    expect(a.q("#banner")).to_have_attribute("data-kind", "expiring", timeout=10_000)
    expect(a.q("#login-view")).to_be_visible(timeout=15_000)           # closed with 4003
    expect(a.q("#login-error")).to_contain_text("expired")
    expect(a.q("#login-username")).to_have_value(alice.username)
    assert a.page.evaluate("sessionStorage.getItem('skyeim.session')") is None
    a.assert_clean()
    a.close()


def test_typing_indicator_shows_while_the_friend_types(browser, system):
    alice, bob, a, b = friends_chatting(browser, system)
    expect(b.q("#conv-typing")).to_be_hidden()
    a.q("#composer-input").press_sequentially("hello the", delay=20)
    expect(b.q("#conv-typing")).to_be_visible()
    expect(b.q("#conv-typing")).to_have_text(f"{alice.username} is typing…")
    expect(b.q("#conv-presence")).to_be_hidden()
    # nine keystrokes, one signal: the page throttles (one per 3 s at most)
    assert [t for _, t in a.sent].count("typing") == 1
    a.q("#composer-input").press("Enter")                  # the message ends the indicator
    expect(b.q("#conv-typing")).to_be_hidden()
    expect(b.q("#conv-presence")).to_be_visible()
    a.q("#composer-input").press_sequentially("x")
    expect(b.q("#conv-typing")).to_be_visible()
    # no further signal: it goes by itself a few seconds later (5 s)
    expect(b.q("#conv-typing")).to_be_hidden(timeout=10_000)
    assert [t for _, t in a.sent].count("typing") == 2
    a.assert_clean()
    b.assert_clean()
    a.close()
    b.close()


def test_group_chat_create_invite_send_and_catch_up(browser, system):
    """Groups (docs/protocol.md "Groups"): a group is created and a friend invited on
    the page; messages go both ways; one sent while the friend's tab was closed shows
    up after it signs in again (group_unread, then sync by groupId)."""
    a_name, b_name = unique("gwa"), unique("gwb")
    a, b = Tab(browser, system), Tab(browser, system)
    a.sign_in(a_name, register=True)
    b_id = b.sign_in(b_name, register=True)
    a.add_friend(b_name)
    a.q("#new-group-name").fill("Hikers <b>")
    a.q("#new-group-button").click()
    expect(a.q("#group-conversation")).to_be_visible()
    expect(a.q("#group-name")).to_have_text("Hikers <b>")
    gid = int(a.q("#group-list .group.active").get_attribute("data-group-id"))
    a.q("#group-invite-input").fill(b_name)
    a.q("#group-invite-input").press("Enter")
    expect(a.q("#group-status")).to_have_text(f"{b_name} was added.")
    a.q("#group-input").fill("Saturday at 8?")
    a.q("#group-input").press("Enter")
    expect(a.q("#group-message-list .msg.mine .bubble")).to_have_text("Saturday at 8?")
    expect(a.q("#group-message-list .msg.mine .tick")).to_have_text("✓")      # acked sent
    # bob's page learns of the group from the live frame, with a badge
    group_b = b.q(f'#group-list .group[data-group-id="{gid}"]')
    expect(group_b.locator(".badge")).to_have_text("1")
    group_b.click()
    expect(b.q("#group-message-list .msg.theirs .bubble")).to_have_text("Saturday at 8?")
    b.q("#group-input").fill("Yes!")
    expect(a.q("#group-typing")).to_have_text(f"{b_name} is typing…")    # a typing signal
    b.q("#group-input").press("Enter")
    expect(a.q("#group-message-list .msg.theirs .bubble")).to_have_text("Yes!")
    expect(a.q("#group-typing")).to_be_hidden()          # the message it announced arrived
    b.close()
    a.q("#group-input").fill("Bring water")
    a.q("#group-input").press("Enter")
    expect(a.q("#group-message-list .msg.mine")).to_have_count(2)
    b2 = Tab(browser, system)
    b2.sign_in(b_name)
    group_b2 = b2.q(f'#group-list .group[data-group-id="{gid}"]')
    expect(group_b2.locator(".badge")).to_have_text("1")      # read up to 2 (his own reply) of 3
    group_b2.click()
    expect(b2.q("#group-message-list .msg .bubble")).to_have_text(
        ["Saturday at 8?", "Yes!", "Bring water"])
    a_token = a.page.evaluate("JSON.parse(sessionStorage.getItem('skyeim.session')).token")
    wait_until(lambda: {m["userId"]: m["readSeq"] for m in system.api(
        "GET", f"/api/groups/{gid}/members", a_token).json()["members"]}[b_id] == 3,
        message="bob's read cursor did not reach 3 after he opened the group")
    a.assert_clean()
    b2.assert_clean()


def test_notices_and_friendship_changes_show_at_once(browser, system):
    """PROTOCOL.md 9.2 and 9.5 frames (notice, friend_added, friend_removed): the
    friendship changes for real at the Friend service, and the page gets the frame
    the gateway sends for it (injected here: the gateway's side is built elsewhere).
    The friend list follows at once, presence with it; a notice shows as text."""
    alice, bob = api_user(system, "alice"), api_user(system, "bob")
    a = Tab(browser, system)
    tap = SocketTap(a.page)
    a.sign_in(alice.username)
    a.wait_for(lambda: "connected" in tap.received_types(), message="no connected frame")
    expect(a.q("#no-friends")).to_be_visible()
    bob_ws = system.connect(bob)
    # bob befriends alice elsewhere: he appears, online, without a reload
    system.befriend(bob, alice)
    tap.inject("friend_added", {"userId": bob.id, "username": bob.username, "online": True})
    expect(a.friend(bob.id)).to_have_attribute("data-online", "true")
    expect(a.friend(bob.id).locator(".friend-name")).to_have_text(bob.username)
    expect(a.q("#no-friends")).to_be_hidden()
    a.open_chat(bob.id)
    expect(a.q("#conv-presence")).to_have_text("online")
    # presence frames between them now come from the gateway itself
    bob_ws.close()
    expect(a.friend(bob.id)).to_have_attribute("data-online", "false")
    expect(a.q("#conv-presence")).to_contain_text("last seen")
    bob_ws = system.connect(bob)
    expect(a.friend(bob.id)).to_have_attribute("data-online", "true")
    # he unfriends her: gone from the list; the open chat says so
    system.unfriend(bob, alice)
    tap.inject("friend_removed", {"userId": bob.id})
    expect(a.friend(bob.id)).to_have_count(0)
    expect(a.q("#conv-presence")).to_have_text("not in your friends")
    expect(a.q("#no-friends")).to_be_visible()
    bob_ws.close()
    a.pause(0.5)
    expect(a.friend(bob.id)).to_have_count(0)
    # a notice from the team's backend, shown as text, dismissed by a click
    tap.inject("notice", {"event": "maintenance", "data": {"text": f"Down at 22:00 {XSS}"},
                          "timestamp": int(time.time() * 1000)})
    tap.inject("notice", {"event": "promo.weekly", "data": 42, "timestamp": int(time.time() * 1000)})
    notices = a.q("#notices .notice")
    expect(notices).to_have_text([f"Down at 22:00 {XSS}", "promo.weekly"])
    assert notices.first.get_attribute("data-event") == "maintenance"
    assert a.page.evaluate("document.images.length") == 0
    notices.first.click()
    expect(notices).to_have_text(["promo.weekly"])
    # a malformed one changes nothing
    tap.inject("friend_added", {"userId": str(bob.id), "username": bob.username, "online": True})
    a.pause(0.3)
    expect(a.friend(bob.id)).to_have_count(0)
    a.assert_clean()
    a.close()
