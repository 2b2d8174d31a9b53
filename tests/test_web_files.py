"""Files and images on the web page (docs/protocol.md "Files, images and voice"), in a
real browser (Debian's chromium under Playwright) against a live gateway: an image
given to the attach button, pasted or dropped is uploaded and sent, and shows inline
for the recipient; another file shows as a link; a refused type says why."""
from __future__ import annotations

import re

import pytest

from files_harness import ELF, file_message, jpeg_bytes, png_bytes
from harness import running_system
from web_files_harness import ChatTab, expect


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("test_web_files")
    # a generous AuthRpc timeout: password hashing on a loaded machine
    with running_system(tmp, ws={"Files": {"Dir": str(tmp / "files")},
                                 "AuthRpc": {"Timeout": 10000}}) as s:
        yield s


def loaded_image(locator) -> tuple[int, int]:
    """(naturalWidth, naturalHeight) of an <img> once it has loaded."""
    locator.page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                   arg=locator.element_handle())
    return tuple(locator.evaluate("img => [img.naturalWidth, img.naturalHeight]"))


def test_images_sent_three_ways_show_inline_for_the_recipient(browser, system):
    alice, bob = system.users("w_alice", "w_bob")
    system.befriend(alice, bob)
    a, b = ChatTab(browser, system), ChatTab(browser, system)
    try:
        a.sign_in(alice.username)
        b.sign_in(bob.username)
        a.open_chat(bob.id)
        b.open_chat(alice.id)

        a.attach("sunset.png", "image/png", png_bytes(400, 300))
        img = b.messages("theirs").nth(0).locator("img.inline-image")
        expect(img).to_have_attribute("alt", "sunset.png")
        assert loaded_image(img) == (256, 192)                   # the thumbnail
        assert img.evaluate("i => [i.width, i.height]") == [240, 180]
        href = b.messages("theirs").nth(0).locator("a").get_attribute("href")
        assert href.startswith("/api/files/") and "sig=" in href
        expect(a.messages("mine").nth(0)).to_have_attribute("data-status", re.compile("delivered|read"))
        expect(a.messages("mine").nth(0).locator("img.inline-image")).to_have_count(1)

        a.paste("pasted.jpg", "image/jpeg", jpeg_bytes(120, 90))
        pasted = b.messages("theirs").nth(1).locator("img.inline-image")
        expect(pasted).to_have_attribute("alt", "pasted.jpg")
        assert loaded_image(pasted) == (120, 90)

        b.drop("reply.png", "image/png", png_bytes(50, 50, (0, 0, 255, 255)))
        dropped = a.messages("theirs").nth(0).locator("img.inline-image")
        expect(dropped).to_have_attribute("alt", "reply.png")
        assert loaded_image(dropped) == (50, 50)
        assert not a.errors and not b.errors, (a.errors, b.errors)
    finally:
        a.close()
        b.close()


def test_a_file_shows_as_a_link_and_a_refused_type_says_why(browser, system):
    alice, bob = system.users("w2_alice", "w2_bob")
    system.befriend(alice, bob)
    a, b = ChatTab(browser, system), ChatTab(browser, system)
    try:
        a.sign_in(alice.username)
        b.sign_in(bob.username)
        a.open_chat(bob.id)
        b.open_chat(alice.id)
        a.attach("notes.txt", "text/plain", b"remember the milk\n")
        link = b.messages("theirs").nth(0).locator("a.file-link")
        expect(link).to_have_text("notes.txt")
        expect(link).to_have_attribute("download", "notes.txt")
        href = link.get_attribute("href")
        r = system.session.get(system.url + href, timeout=10)
        assert r.status_code == 200 and r.content == b"remember the milk\n"

        a.attach("setup.png", "image/png", ELF)
        expect(a.q("#upload-status")).to_contain_text("not accepted")
        expect(a.messages("mine")).to_have_count(1)
        assert not a.errors and not b.errors, (a.errors, b.errors)
    finally:
        a.close()
        b.close()


def test_an_image_sent_to_a_group_shows_inline_in_the_group(browser, system):
    ann, bob = system.users("w3_ann", "w3_bob")
    gid = system.api("POST", "/api/groups", ann, json_body={"name": "pics",
                                                            "memberIds": [bob.id]}).json()["groupId"]
    r = system.api("POST", "/api/files", ann, files={"file": ("group.png", png_bytes(90, 60),
                                                              "image/png")})
    assert r.status_code == 200, r.text
    b = ChatTab(browser, system)
    try:
        b.sign_in(bob.username)
        b.q(f'#group-list .group[data-group-id="{gid}"]').click()
        expect(b.q("#group-conversation")).to_be_visible()
        sender = system.connect(ann)
        sender.send("groupchat", {"groupId": gid, "msgId": "g-img-1", "contentType": 2,
                                  "content": file_message(r.json())})
        sender.expect_ack("g-img-1", "sent", skip=("pong", "group_unread"))
        sender.close()
        img = b.q("#group-message-list img.inline-image")
        expect(img).to_have_attribute("alt", "group.png")
        assert loaded_image(img) == (90, 60)
        assert not b.errors, b.errors
    finally:
        b.close()
