"""The web page's conversation list (docs/protocol.md "Conversation list"), in
chromium: the friend list in the list's order (pinned first, then newest first)
with the server's unread counts as badges, Pin and Mute in the conversation's
header, and a chat arriving live moving its friend up."""
from __future__ import annotations

from browser_harness import sign_in_page
from harness import PASSWORD


def order(page) -> list[int]:
    return [int(x) for x in page.locator("#friend-list .friend").evaluate_all(
        "els => els.map(e => e.dataset.userId)")]


def test_the_friend_list_follows_the_conversation_list_with_badges_pin_and_mute(browser, system):
    from playwright.sync_api import expect
    me, a, b, c = system.users("wc_me", "wc_a", "wc_b", "wc_c")
    for peer in (a, b, c):
        system.befriend(me, peer)
    system.seed_message(a, me, "first")
    system.seed_message(b, me, "second")
    system.seed_message(b, me, "third")
    page, errors = sign_in_page(browser, system.url, me.username, PASSWORD)
    friend = lambda u: page.locator(f'#friend-list .friend[data-user-id="{u.id}"]')  # noqa: E731
    expect(friend(c)).to_be_visible()
    page.wait_for_function(f"() => [...document.querySelectorAll('#friend-list .friend')]"
                           f".map(e => Number(e.dataset.userId)).join() === '{b.id},{a.id},{c.id}'")
    expect(friend(b).locator(".badge")).to_have_text("2")
    expect(friend(a).locator(".badge")).to_have_text("1")
    expect(friend(c).locator(".badge")).to_have_count(0)

    friend(a).click()
    expect(page.locator("#conv-pin")).to_have_text("Pin")
    page.locator("#conv-pin").click()
    expect(page.locator("#conv-pin")).to_have_text("Unpin")
    expect(friend(a)).to_have_attribute("data-pinned", "true")
    page.locator("#conv-mute").click()
    expect(page.locator("#conv-mute")).to_have_text("Unmute")
    expect(friend(a)).to_have_attribute("data-muted", "true")
    assert order(page) == [a.id, b.id, c.id]
    first = system.api("GET", "/api/conversations", me).json()["items"][0]
    assert (first["peerId"], first["pinned"], first["muted"]) == (a.id, True, True)

    # a chat arriving live moves its friend up, under the pinned one, with a badge
    sender = system.connect(c)
    sender.chat(me.id, "news")
    page.wait_for_function(f"() => [...document.querySelectorAll('#friend-list .friend')]"
                           f".map(e => Number(e.dataset.userId)).join() === '{a.id},{c.id},{b.id}'")
    expect(friend(c).locator(".badge")).to_have_text("1")
    r = system.api("GET", "/api/conversations", me).json()["items"]
    assert [i["peerId"] for i in r] == [a.id, c.id, b.id]
    page.reload()                            # the same order from the server's list
    page.wait_for_function(f"() => [...document.querySelectorAll('#friend-list .friend')]"
                           f".map(e => Number(e.dataset.userId)).join() === '{a.id},{c.id},{b.id}'")
    expect(friend(c).locator(".badge")).to_have_text("1")
    expect(friend(a)).to_have_attribute("data-pinned", "true")
    assert not errors, errors
