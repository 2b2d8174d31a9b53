"""Make docs/screenshot.png: the web chat page with a real conversation.

    .venv/bin/python tests/support/web_screenshot.py [OUT.png]

Starts a throwaway standalone system (harness.System), four users chat through
the page and a plain WebSocket client, and alice's page is captured at 1280x800.
Needs what tests/test_web_page.py needs (playwright, Debian's chromium).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import PASSWORD, REPO, System  # noqa: E402
from browser_harness import CHROMIUM, CHROMIUM_ARGS, VIEWPORT  # noqa: E402

CONVERSATION = [
    ("bob", "Hey Alice, are you around today?"),
    ("alice", "Yes, in the office all day. What's up?"),
    ("bob", "I'm rolling the new gateway build out to both nodes at noon."),
    ("alice", "Great. Anything I should watch for?"),
    ("bob", "Clients may drop for a second. The web page shows a banner and "
            "reconnects by itself."),
    ("alice", "And messages typed during the blip?"),
    ("bob", "They wait in the outbox and go out after the reconnect, with the same "
            "msgId, so nothing is doubled."),
    ("alice", "Perfect. Lunch after the rollout?"),
    ("bob", "Sounds good, 12:30 at the usual place."),
]


def main(out: Path) -> None:
    from playwright.sync_api import expect, sync_playwright
    expect.set_options(timeout=15_000)
    with tempfile.TemporaryDirectory() as tmp:
        system = System(Path(tmp))
        system.start()
        try:
            _register(system, "carol")
            dave = system.login(_register(system, "dave"))
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                pages = {}
                for name in ("alice", "bob"):
                    page = browser.new_context(viewport=VIEWPORT).new_page()
                    page.goto(system.url + "/")
                    page.fill("#login-username", name)
                    page.fill("#login-password", PASSWORD)
                    page.click("#register-button")
                    expect(page.locator("#chat-view")).to_be_visible()
                    pages[name] = page
                alice, bob = pages["alice"], pages["bob"]
                for friend in ("bob", "carol", "dave"):
                    alice.fill("#add-friend-input", friend)
                    alice.click("#add-friend-button")
                    expect(alice.locator("#add-friend-status")).to_have_text(
                        f"{friend} is now your friend.")
                bob.fill("#add-friend-input", "alice")
                bob.click("#add-friend-button")
                expect(bob.locator("#conv-name")).to_have_text("alice")
                alice.locator(".friend", has_text="carol").click()
                _say(alice, "Hi Carol, the slides are in the shared folder.")
                alice.locator(".friend", has_text="bob").click()
                for who, text in CONVERSATION:
                    _say(pages[who], text)
                    time.sleep(0.3)
                expect(alice.locator("#message-list .msg.mine").last).to_have_attribute(
                    "data-status", "read")
                bob.locator("#back-button").evaluate("b => b.click()")   # bob leaves the chat
                _say(alice, "I'll book a table.")
                expect(alice.locator("#message-list .msg.mine").last).to_have_attribute(
                    "data-status", "delivered")
                ws = system.connect(dave)
                alice_id = system.login("alice").id
                ws.chat(alice_id, "Are you joining the retro at 4?")
                ws.chat(alice_id, "I can move it if that's better.")
                expect(alice.locator(".friend", has_text="dave").locator(".badge")).to_have_text("2")
                expect(alice.locator("#add-friend-status")).to_be_hidden(timeout=10_000)
                alice.locator("#composer-input").fill("")
                alice.locator("#composer-input").blur()
                time.sleep(0.5)
                alice.screenshot(path=str(out))
                ws.close()
                browser.close()
        finally:
            system.stop()
    print(f"wrote {out}")


def _register(system: System, name: str) -> str:
    r = system.api("POST", "/api/register", json_body={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return name


def _say(page, text: str) -> None:
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "screenshot.png")
