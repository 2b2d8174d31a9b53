"""A chat page (skyeim/gateway/static/) in a browser tab, as far as the file tests
need it: sign in, open a friend's chat, hand files to the page the three ways a
person does (the attach button's file input, a paste, a drop)."""
from __future__ import annotations

import base64

from browser_harness import TIMEOUT_MS, VIEWPORT
from harness import PASSWORD

# builds a File from base64 in the page, then fires the event a person's action would
_FIRE = """([kind, name, type, b64]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const dt = new DataTransfer();
  dt.items.add(new File([bytes], name, { type }));
  if (kind === "paste") {
    document.getElementById("composer-input").dispatchEvent(
      new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
  } else {
    const target = document.getElementById("messages");
    for (const t of ["dragover", "drop"]) {
      target.dispatchEvent(new DragEvent(t, { dataTransfer: dt, bubbles: true, cancelable: true }));
    }
  }
}"""


def expect(locator):
    from playwright.sync_api import expect as pw_expect
    return pw_expect(locator)


class ChatTab:
    def __init__(self, browser, system):
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(system.url + "/")

    def q(self, selector: str):
        return self.page.locator(selector)

    def sign_in(self, username: str, password: str = PASSWORD) -> None:
        self.q("#login-username").fill(username)
        self.q("#login-password").fill(password)
        self.q("#login-button").click()
        expect(self.q("#me-name")).to_have_text(username)

    def open_chat(self, user_id: int) -> None:
        self.q(f'.friend[data-user-id="{user_id}"]').click()
        expect(self.q("#conv-head")).to_be_visible()

    def attach(self, name: str, mime: str, data: bytes) -> None:
        self.q("#file-input").set_input_files(files=[{"name": name, "mimeType": mime, "buffer": data}])

    def paste(self, name: str, mime: str, data: bytes) -> None:
        self.page.evaluate(_FIRE, ["paste", name, mime, base64.b64encode(data).decode()])

    def drop(self, name: str, mime: str, data: bytes) -> None:
        self.page.evaluate(_FIRE, ["drop", name, mime, base64.b64encode(data).decode()])

    def messages(self, side: str):
        return self.q(f"#message-list .msg.{side}")

    def close(self) -> None:
        self.context.close()
