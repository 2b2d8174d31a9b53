"""The web page's recall, edit and delete-for-me (issue 16) in chromium against a real
gateway: alice edits and recalls a message from its actions, bob's open page follows
live, a refused recall shows a banner, and delete-for-me hides a message on alice's
page only."""
from __future__ import annotations

import re

import pytest

from browser_harness import sign_in_page
from harness import PASSWORD, running_system, unique


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("recall_page"),
                        ws={"Chat": {"RecallWindow": 8}}) as s:
        yield s


def signed_in(browser, system, username: str):
    """A page of a new user ``username``, registered from the page."""
    return sign_in_page(browser, system.url, username, PASSWORD, register=True)[0]


def open_chat(page, username: str) -> None:
    from playwright.sync_api import expect
    page.fill("#add-friend-input", username)
    page.click("#add-friend-button")
    expect(page.locator("#add-friend-status")).to_have_text(f"{username} is now your friend.")
    page.locator(".friend", has_text=username).click()
    expect(page.locator("#conv-head")).to_be_visible()


def send(page, text: str):
    from playwright.sync_api import expect
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")
    mine = page.locator("#message-list .msg.mine", has_text=text)
    expect(mine).to_have_attribute("data-status", re.compile("delivered|read"))
    return mine.get_attribute("data-msg-id")


def test_edit_recall_and_delete_from_the_page(browser, system):
    from playwright.sync_api import expect
    a_name, b_name = unique("pa"), unique("pb")
    alice, bob = signed_in(browser, system, a_name), signed_in(browser, system, b_name)
    open_chat(alice, b_name)
    bob.reload()                  # (friend_added would show alice live: PROTOCOL.md 9.5)
    bob.locator(".friend", has_text=a_name).click()
    msg_id = send(alice, "meet at 5")
    at_bob = bob.locator(f'#message-list .msg[data-msg-id="{msg_id}"]')
    expect(at_bob).to_contain_text("meet at 5")

    # edit: the page asks for the new text
    alice.once("dialog", lambda d: d.accept("meet at 6"))
    mine = alice.locator(f'#message-list .msg[data-msg-id="{msg_id}"]')
    mine.locator('[data-action="edit"]').click()
    expect(mine).to_contain_text("meet at 6")
    expect(mine.locator(".edited")).to_have_text("edited")
    expect(at_bob).to_contain_text("meet at 6")
    expect(at_bob.locator(".edited")).to_be_visible()

    # recall: both pages show the marker, not the content
    mine.locator('[data-action="recall"]').click()
    expect(mine).to_have_class("msg mine recalled-msg")
    expect(mine).to_contain_text("You recalled this message")
    expect(at_bob).to_contain_text(f"{a_name} recalled this message")
    expect(at_bob).not_to_contain_text("meet at 6")

    # delete for me: gone from alice's page, still on bob's
    other = send(alice, "keep this for bob")
    alice.locator(f'#message-list .msg[data-msg-id="{other}"] [data-action="delete"]').click()
    expect(alice.locator(f'#message-list .msg[data-msg-id="{other}"]')).to_have_count(0)
    expect(bob.locator(f'#message-list .msg[data-msg-id="{other}"]')).to_contain_text("keep this for bob")
    # and after a reload it stays hidden (history leaves it out)
    alice.reload()
    alice.locator(".friend", has_text=b_name).click()
    expect(alice.locator(f'#message-list .msg[data-msg-id="{msg_id}"]')).to_contain_text(
        "You recalled this message")
    expect(alice.locator(f'#message-list .msg[data-msg-id="{other}"]')).to_have_count(0)


def test_a_recall_after_the_window_shows_why(browser, system):
    from playwright.sync_api import expect
    a_name, b_name = unique("pla"), unique("plb")
    alice = signed_in(browser, system, a_name)
    signed_in(browser, system, b_name)
    open_chat(alice, b_name)
    msg_id = send(alice, "old news")
    alice.wait_for_timeout(8500)                 # Chat.RecallWindow is 8 s here
    alice.locator(f'#message-list .msg[data-msg-id="{msg_id}"] [data-action="recall"]').click()
    expect(alice.locator("#banner-text")).to_have_text("It is too late to change that message.")
    expect(alice.locator(f'#message-list .msg[data-msg-id="{msg_id}"]')).to_contain_text("old news")
