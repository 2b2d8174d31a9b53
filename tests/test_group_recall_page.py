"""The web page's pin and mute of a group conversation and recall/edit of one's own group
messages (issue 16) in chromium against a real gateway: the Pin and Mute buttons of an
open group set the flags of docs/protocol.md "Conversation list" (pinned groups first,
kept after a reload); Edit and Recall under my group message reach the other member's
open page live, and the other member's message has no such actions."""
from __future__ import annotations

from browser_harness import sign_in_page
from harness import PASSWORD


def open_group(page, name: str) -> None:
    from playwright.sync_api import expect
    page.locator("#group-list .group", has_text=name).click()
    expect(page.locator("#group-conversation")).to_be_visible()
    expect(page.locator("#group-name")).to_have_text(name)


def flags(system, user, gid) -> tuple[bool, bool]:
    r = system.api("GET", "/api/conversations", user)
    assert r.status_code == 200, r.text
    item = next(i for i in r.json()["items"] if i.get("groupId") == gid)
    return item["pinned"], item["muted"]


def test_group_pin_mute_edit_and_recall_from_the_page(browser, system):
    from playwright.sync_api import expect
    own, mem = system.users("gpr_own", "gpr_mem")
    gids = {}
    for name in ("Alpha club", "Beta club"):
        r = system.api("POST", "/api/groups", own, json_body={"name": name, "memberIds": [mem.id]})
        assert r.status_code == 200, r.text
        gids[name] = r.json()["groupId"]
    (a, a_errors), (b, b_errors) = (sign_in_page(browser, system.url, u.username, PASSWORD)
                                    for u in (own, mem))
    expect(a.locator("#group-list .group")).to_have_count(2)
    first = a.locator("#group-list .group").first
    expect(first).to_contain_text("Alpha club")

    # pin and mute the second group: it comes first, with both flags; the service has them
    open_group(a, "Beta club")
    a.click("#group-pin")
    expect(a.locator("#group-pin")).to_have_text("Unpin")
    expect(first).to_contain_text("Beta club")
    expect(first).to_have_attribute("data-pinned", "true")
    a.click("#group-mute")
    expect(a.locator("#group-mute")).to_have_text("Unmute")
    expect(a.locator("#group-mute")).to_have_attribute("aria-pressed", "true")
    expect(first).to_have_attribute("data-muted", "true")
    assert flags(system, own, gids["Beta club"]) == (True, True)
    assert flags(system, mem, gids["Beta club"]) == (False, False)    # flags are per user
    # after a reload the page has them from the conversation list
    a.reload()
    expect(a.locator("#group-list .group").first).to_contain_text("Beta club")
    expect(a.locator("#group-list .group").first).to_have_attribute("data-muted", "true")
    open_group(a, "Beta club")
    expect(a.locator("#group-pin")).to_have_text("Unpin")
    a.click("#group-mute")
    expect(a.locator("#group-mute")).to_have_text("Mute")
    assert flags(system, own, gids["Beta club"]) == (True, False)

    # edit and recall my group message: the other member's open page follows live
    open_group(b, "Beta club")
    a.fill("#group-input", "meet at 5")
    a.press("#group-input", "Enter")
    mine = a.locator("#group-message-list .msg.mine", has_text="meet at 5")
    expect(mine.locator(".tick")).to_have_text("✓")
    msg_id = mine.get_attribute("data-msg-id")
    at_b = b.locator(f'#group-message-list .msg[data-msg-id="{msg_id}"]')
    expect(at_b).to_contain_text("meet at 5")
    expect(at_b.locator("[data-action=edit]")).to_have_count(0)     # not b's to change
    a.once("dialog", lambda d: d.accept("meet at 6"))
    mine = a.locator(f'#group-message-list .msg[data-msg-id="{msg_id}"]')
    mine.locator("[data-action=edit]").click()
    expect(mine).to_contain_text("meet at 6")
    expect(mine.locator(".edited")).to_be_visible()
    expect(at_b).to_contain_text("meet at 6")
    expect(at_b.locator(".edited")).to_be_visible()
    mine.locator("[data-action=recall]").click()
    expect(mine).to_contain_text("You recalled this message")
    expect(mine.locator("[data-action]")).to_have_count(0)
    expect(at_b).to_contain_text(f"{own.username} recalled this message")
    expect(at_b).not_to_contain_text("meet at 6")
    # and after a reload the history keeps the marker
    b.reload()
    open_group(b, "Beta club")
    expect(b.locator(f'#group-message-list .msg[data-msg-id="{msg_id}"]')).to_contain_text(
        "recalled this message")
    assert a_errors == [] and b_errors == []
    for p in (a, b):
        p.context.close()
