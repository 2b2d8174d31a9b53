"""The web page's group administration and mentions (issue 16) in chromium against a
real gateway: the owner's Members panel shows role badges and the controls its role
allows; promoting, muting, renaming, kicking and dismissing from it reach the other
member's open page live; a message that mentions me is highlighted."""
from __future__ import annotations

from browser_harness import sign_in_page
from harness import PASSWORD


def open_group(page, name: str) -> None:
    from playwright.sync_api import expect
    page.locator("#group-list .group", has_text=name).click()
    expect(page.locator("#group-conversation")).to_be_visible()
    page.click("#group-members-button")
    expect(page.locator("#group-admin")).to_be_visible()


def row(page, username: str):
    return page.locator("#group-member-list li", has_text=username)


def test_administration_and_mentions_from_the_page(browser, system):
    from playwright.sync_api import expect
    own, mem, oth = system.users("gp_own", "gp_mem", "gp_oth")
    r = system.api("POST", "/api/groups", own, json_body={"name": "Page club",
                                                         "memberIds": [mem.id, oth.id]})
    assert r.status_code == 200, r.text
    gid = r.json()["groupId"]
    (a, _), (b, _) = (sign_in_page(browser, system.url, u.username, PASSWORD) for u in (own, mem))
    open_group(a, "Page club")
    open_group(b, "Page club")
    # role badges; the owner sees the controls, a member none
    expect(row(a, own.username).locator(".role-badge")).to_have_text("owner")
    expect(row(a, mem.username).locator(".role-badge")).to_have_text("member")
    expect(row(a, mem.username).locator("button[data-action=kick]")).to_be_visible()
    expect(b.locator("#group-member-list button")).to_have_count(0)
    expect(b.locator("#group-rename-form")).to_be_hidden()
    # promote: b's page follows live, and b (now admin) may act on plain members only
    row(a, mem.username).locator("button[data-action=role]").click()
    expect(row(b, mem.username).locator(".role-badge")).to_have_text("admin")
    expect(row(b, oth.username).locator("button[data-action=kick]")).to_be_visible()
    expect(row(b, own.username).locator("button")).to_have_count(0)
    expect(b.locator("#group-rename-form")).to_be_visible()
    expect(b.locator("#group-dismiss")).to_be_hidden()
    # mute from the page: both pages show it, the service has it
    row(a, oth.username).locator("button[data-action=mute]").click()
    expect(row(b, oth.username).locator(".muted-badge")).to_be_visible()
    listed = system.api("GET", f"/api/groups/{gid}/members", own).json()["members"]
    assert next(m for m in listed if m["userId"] == oth.id)["mutedUntil"] > 0
    # a mention of the owner is highlighted on the owner's page only
    b.fill("#group-input", f"hello @{own.username}")
    b.press("#group-input", "Enter")
    expect(a.locator("#group-message-list .msg.mention", has_text="hello")).to_be_visible()
    expect(b.locator("#group-message-list .msg", has_text="hello")).not_to_have_class("mention")
    b.fill("#group-input", "no mention")
    b.press("#group-input", "Enter")
    expect(a.locator("#group-message-list .msg", has_text="no mention")).to_be_visible()
    expect(a.locator("#group-message-list .msg.mention")).to_have_count(1)
    # rename by the admin, kick by the owner
    b.fill("#group-rename-input", "Renamed club")
    b.press("#group-rename-input", "Enter")
    expect(a.locator("#group-name")).to_have_text("Renamed club")
    row(a, oth.username).locator("button[data-action=kick]").click()
    expect(row(b, oth.username)).to_have_count(0)
    # dismiss: the group leaves both pages
    a.click("#group-dismiss")
    expect(a.locator("#group-list .group")).to_have_count(0)
    expect(b.locator("#group-list .group")).to_have_count(0)
    expect(b.locator("#group-conversation")).to_be_hidden()
    for p in (a, b):
        p.context.close()
