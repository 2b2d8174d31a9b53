"""The SDK's and the CLI's conversation list (docs/protocol.md "Conversation list"):
Api.conversations / all_conversations / mute / pin, Client.request_conversations
answered by a ConversationsPage, ConversationUpdated on the user's connections;
``python -m skyeim.client conversations [mute|unmute|pin|unpin]``."""
from __future__ import annotations

import json

import pytest

from skyeim.client import (Api, BadRequest, ChatMessage, ConversationsPage, ConversationUpdated,
                           GroupMessage)
from sdk_harness import account, cli, next_of, ok, one_line_error


def test_the_api_lists_pages_and_flags_conversations(system):
    me, a, b, c = system.users("sc_me", "sc_a", "sc_b", "sc_c")
    for peer in (a, b, c):
        system.seed_message(peer, me, f"hi from {peer.username}")
    api = Api(system.url, me.token)
    gid = api.create_group("SDK list", [a.id])
    page = api.conversations(limit=2)
    assert [i.group_id or i.peer_id for i in page.items] == [gid, c.id] and page.next_cursor
    group, with_c = page.items
    assert (group.kind, group.name, group.last_message, group.unread) == ("group", "SDK list",
                                                                          None, 0)
    assert (with_c.kind, with_c.username, with_c.unread, with_c.last_seq) == \
        ("chat", c.username, 1, 1)
    assert isinstance(with_c.last_message, ChatMessage) and \
        with_c.last_message.content == f"hi from {c.username}"
    rest = api.conversations(limit=5, before=page.next_cursor)
    assert [i.peer_id for i in rest.items] == [b.id, a.id] and rest.next_cursor is None
    assert [i.group_id or i.peer_id for i in api.all_conversations(page_size=1)] == \
        [gid, c.id, b.id, a.id]
    assert api.pin(peer_id=a.id) == {"peerId": a.id, "muted": False, "pinned": True}
    assert api.mute(group_id=gid)["muted"] is True
    first = api.conversations().items[0]
    assert (first.peer_id, first.pinned) == (a.id, True)
    with pytest.raises(ValueError):
        api.pin()
    with pytest.raises(BadRequest):
        api.conversations(before="garbage")


def test_the_client_asks_for_a_page_and_hears_flag_changes(system, clients):
    me, a = system.users("scc_me", "scc_a")
    api = Api(system.url, me.token)
    gid = api.create_group("frames", [a.id])
    cm, ca = clients(system.url, me.token), clients(system.url, a.token)
    ca.send_groupchat(gid, "in the group")
    next_of(cm, GroupMessage)
    cm.request_conversations(limit=10, request_id="p1")
    page = next_of(cm, ConversationsPage)
    assert page.request_id == "p1" and [i.group_id for i in page.items] == [gid]
    assert isinstance(page.items[0].last_message, GroupMessage) and page.items[0].unread == 1
    api.pin(group_id=gid)
    upd = next_of(cm, ConversationUpdated)
    assert (upd.group_id, upd.peer_id, upd.pinned, upd.muted) == (gid, None, True, False)


def test_the_cli_lists_and_flags_conversations(system, home_dir):
    name, tf, uid = account(system, home_dir, "clic_me")
    peer = system.register_user("clic_peer")
    system.seed_message(peer, uid, "hello cli")
    out = ok(cli(system, home_dir, "conversations", token_file=tf))
    assert out.startswith(f"   user {peer.id} {peer.username}\tunread 1\t") and \
        out.rstrip().endswith(f"{peer.id}: hello cli"), out
    assert ok(cli(system, home_dir, "conversations", "pin", str(peer.id), token_file=tf)) == \
        f"user {peer.id}: muted=false pinned=true\n"
    assert ok(cli(system, home_dir, "conversations", "mute", str(peer.id),
                  token_file=tf)).endswith("muted=true pinned=true\n")
    listed = json.loads(ok(cli(system, home_dir, "conversations", "--json", token_file=tf)))
    item = listed["items"][0]
    assert (item["peerId"], item["pinned"], item["muted"], item["lastMessage"]["content"],
            listed["nextCursor"]) == (peer.id, True, True, "hello cli", None)
    assert ok(cli(system, home_dir, "conversations", token_file=tf)).startswith("*m user")
    assert "needs a PEER" in one_line_error(cli(system, home_dir, "conversations", "pin",
                                                token_file=tf))
    assert "bad_request" in one_line_error(cli(system, home_dir, "conversations", "--before",
                                               "x", token_file=tf))


@pytest.fixture
def home_dir(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    return h
