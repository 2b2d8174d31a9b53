"""The web page's friend requests and Block button (docs/protocol.md "Friend requests
and blocking"), in a real browser (Debian's chromium through Playwright)."""
from __future__ import annotations

import pytest

from browser_harness import sign_in_page
from harness import PASSWORD, running_system
from relations_harness import blocked_ids, friend_ids, request_friend


@pytest.fixture(scope="module")
def accepting(tmp_path_factory):
    ws = {"Friends": {"RequireAcceptance": True}, "AuthRpc": {"Timeout": 15000}}
    with running_system(tmp_path_factory.mktemp("web_requests"), ws=ws) as s:
        yield s


def test_requests_are_accepted_or_declined_and_a_friend_blocked_on_the_page(browser, accepting):
    from playwright.sync_api import expect
    alice, bob, carol = accepting.users("wfr_a", "wfr_b", "wfr_c")
    request_friend(accepting, carol, bob)                  # pending before bob signs in
    page, errors = sign_in_page(browser, accepting.url, bob.username, PASSWORD)
    try:
        requests = page.locator("#request-list .request")
        expect(requests).to_have_count(1)
        expect(requests.locator(".friend-name")).to_have_text(carol.username)
        request_friend(accepting, alice, bob)              # live: friend_request
        expect(requests).to_have_count(2)
        alice_row = page.locator(f'#request-list .request[data-user-id="{alice.id}"]')
        alice_row.locator('button[data-action="accept"]').click()
        expect(page.locator("#add-friend-status")).to_have_text(f"{alice.username} is now your friend.")
        expect(page.locator(f'.friend[data-user-id="{alice.id}"]')).to_be_visible()
        assert friend_ids(accepting, bob) == [alice.id]
        page.locator(f'#request-list .request[data-user-id="{carol.id}"] '
                     'button[data-action="decline"]').click()
        expect(requests).to_have_count(0)
        expect(page.locator("#friend-requests")).to_be_hidden()
        assert friend_ids(accepting, bob) == [alice.id]
        # a request sent from the page says so
        page.locator("#add-friend-input").fill(carol.username)
        page.locator("#add-friend-button").click()
        expect(page.locator("#add-friend-status")).to_have_text(
            f"Friend request sent to {carol.username}.")
        # the Block button of an open conversation
        page.locator(f'.friend[data-user-id="{alice.id}"]').click()
        expect(page.locator("#conv-head")).to_be_visible()
        page.locator("#block-button").click()
        expect(page.locator("#add-friend-status")).to_have_text(f"Blocked {alice.username}.")
        expect(page.locator(f'.friend[data-user-id="{alice.id}"]')).to_have_count(0)
        assert blocked_ids(accepting, bob) == [alice.id]
        assert not errors, errors
    finally:
        page.context.close()
