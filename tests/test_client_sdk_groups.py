"""The SDK's group chat (docs/protocol.md "Groups"): the Api's create / list / invite /
leave / members / history, Client.send_groupchat, GroupMessage frames (each once,
live or from the sync after `group_unread`), mark_group_read and GroupRead."""
from __future__ import annotations

import pytest

from skyeim.client import (Api, ChatError, GroupMessage, GroupRead, GroupUnread,
                           NotFound, Typing)
from sdk_harness import drain, next_of


def test_the_api_manages_groups(system):
    ann, bob, cat = system.users("sg_ann", "sg_bob", "sg_cat")
    api = Api(system.url, ann.token)
    gid = api.create_group("SDK", [bob.id])
    mine = {g["groupId"]: g for g in api.groups()}
    assert (mine[gid]["name"], mine[gid]["role"], mine[gid]["lastSeq"]) == ("SDK", "owner", 0)
    assert api.invite(gid, [cat.id, bob.id]) == [cat.id]
    members, more = api.group_members(gid)
    assert {m["userId"] for m in members} == {ann.id, bob.id, cat.id} and more is False
    with pytest.raises(NotFound):
        api.invite(gid, [2**62])
    Api(system.url, bob.token).leave_group(gid)
    assert gid not in {g["groupId"] for g in Api(system.url, bob.token).groups()}
    assert {m["userId"] for m in api.group_members(gid)[0]} == {ann.id, cat.id}


def test_send_groupchat_reaches_members_as_group_messages(system, clients):
    ann, bob = system.users("sg2_ann", "sg2_bob")
    gid = Api(system.url, ann.token).create_group("live", [bob.id])
    ca, cb = clients(system.url, ann.token), clients(system.url, bob.token)
    r = ca.send_groupchat(gid, "hi all")
    assert r.status == "sent" and r.seq == 1
    m = next_of(cb, GroupMessage)
    assert (m.group_id, m.msg_id, m.from_user_id, m.content, m.seq) == (gid, r.msg_id, ann.id,
                                                                        "hi all", 1)
    cb.mark_group_read(gid, 1)
    receipt = next_of(ca, GroupRead)
    assert (receipt.group_id, receipt.user_id, receipt.seq) == (gid, bob.id, 1)
    history, more = Api(system.url, bob.token).group_history(gid)
    assert [h.msg_id for h in history] == [r.msg_id] and more is False
    outsider = system.register_user("sg2_out")
    co = clients(system.url, outsider.token)
    with pytest.raises(ChatError) as e:
        co.send_groupchat(gid, "let me in")
    assert e.value.code == "forbidden"


def test_send_typing_to_a_group_reaches_the_members_as_typing_frames(system, clients):
    ann, bob = system.users("sg4_ann", "sg4_bob")
    gid = Api(system.url, ann.token).create_group("typists", [bob.id])
    ca, cb = clients(system.url, ann.token), clients(system.url, bob.token)
    assert ca.send_typing(group_id=gid) is True
    t = next_of(cb, Typing)
    assert (t.from_user_id, t.group_id, t.state) == (ann.id, gid, "typing")
    assert ca.send_typing(group_id=gid) is False          # the same state again: throttled
    assert ca.send_typing(group_id=gid, state="paused") is True
    assert next_of(cb, Typing).state == "paused"
    with pytest.raises(ValueError):
        ca.send_typing(bob.id, group_id=gid)               # one target per signal


def test_what_a_member_missed_arrives_once_by_sync_after_group_unread(system, clients):
    ann, bob = system.users("sg3_ann", "sg3_bob")
    gid = Api(system.url, ann.token).create_group("catch-up", [bob.id])
    ca = clients(system.url, ann.token)
    sent = [ca.send_groupchat(gid, f"m{i}").msg_id for i in range(60)]
    cb = clients(system.url, bob.token)          # offline until now
    unread = next_of(cb, GroupUnread)
    assert {g["groupId"]: g["lastSeq"] for g in unread.groups}[gid] == 60
    got = [next_of(cb, GroupMessage, group_id=gid) for _ in range(60)]
    assert [m.msg_id for m in got] == sent and [m.seq for m in got] == list(range(1, 61))
    assert cb.group_seqs[gid] == 60
    cb.sync_group(gid, after_seq=55)              # asked again: nothing is yielded twice
    live = ca.send_groupchat(gid, "after").msg_id
    rest = [f for f in drain(cb, 1.0) if isinstance(f, GroupMessage)]
    assert [m.msg_id for m in rest] == [live]
