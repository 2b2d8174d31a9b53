"""The SDK's group administration and mentions (docs/protocol.md "Group administration",
"Mentions in groups"): Api.set_group_role / kick / mute / rename_group / dismiss_group,
GroupChanged frames, Client.send_groupchat(mentions=...) and GroupMessage.mentions, and
ChatError `muted` for a muted member."""
from __future__ import annotations

import pytest

from skyeim.client import (Api, ApiError, ChatError, GroupChanged, GroupMessage, MessageEdited,
                           MessageRecalled)
from sdk_harness import next_of


def test_the_api_administers_a_group_and_clients_hear_each_change(system, clients):
    own, adm, mem = system.users("sga_own", "sga_adm", "sga_mem")
    api = Api(system.url, own.token)
    gid = api.create_group("admin", [adm.id, mem.id])
    cm = clients(system.url, mem.token)
    assert api.set_group_role(gid, adm.id, "admin")["changed"] is True
    ch = next_of(cm, GroupChanged)
    assert (ch.group_id, ch.change, ch.by_user_id, ch.user_id, ch.role) == \
        (gid, "role", own.id, adm.id, "admin")
    with pytest.raises(ApiError) as e:
        Api(system.url, mem.token).kick(gid, adm.id)
    assert e.value.status == 403 and e.value.code == "forbidden"
    until = Api(system.url, adm.token).mute_member(gid, mem.id, 120)
    ch = next_of(cm, GroupChanged)
    assert (ch.change, ch.user_id, ch.until) == ("mute", mem.id, until)
    with pytest.raises(ChatError) as e:
        cm.send_groupchat(gid, "let me talk")
    assert e.value.code == "muted"
    assert api.mute_member(gid, mem.id, 0) == 0
    assert next_of(cm, GroupChanged).change == "unmute"
    r = cm.send_groupchat(gid, "@owner thanks", mentions=[own.id, own.id])
    assert r.status == "sent"
    ca = clients(system.url, adm.token)
    assert Api(system.url, adm.token).rename_group(gid, "renamed")["name"] == "renamed"
    assert next_of(cm, GroupChanged).name == "renamed"
    assert next_of(ca, GroupChanged).name == "renamed"
    history, _ = api.group_history(gid)
    assert history[0].mentions == (own.id,)
    assert Api(system.url, adm.token).kick(gid, mem.id)["kicked"] is True
    assert next_of(cm, GroupChanged).change == "kick"
    assert sorted(api.dismiss_group(gid)) == sorted([own.id, adm.id])
    assert next_of(ca, GroupChanged, change="kick").user_id == mem.id
    assert next_of(ca, GroupChanged).change == "dismiss"


def test_a_mention_arrives_in_the_group_message(system, clients):
    ann, bob = system.users("sgm_ann", "sgm_bob")
    gid = Api(system.url, ann.token).create_group("m", [bob.id])
    ca, cb = clients(system.url, ann.token), clients(system.url, bob.token)
    ca.send_groupchat(gid, "@bob", mentions=[bob.id])
    m = next_of(cb, GroupMessage)
    assert m.mentions == (bob.id,)
    with pytest.raises(ValueError):
        ca.send_groupchat(gid, "x", mentions=["bob"])


def test_the_sdk_recalls_and_edits_group_messages_and_hears_joins_and_leaves(system, clients):
    own, mem, new = system.users("sgr_own", "sgr_mem", "sgr_new")
    api = Api(system.url, own.token)
    gid = api.create_group("recalls", [mem.id])
    co, cm = clients(system.url, own.token), clients(system.url, mem.token)
    cn = clients(system.url, new.token)
    # an invite: every member hears who joined, the newcomer too
    assert api.invite(gid, [new.id]) == [new.id]
    for c in (co, cm, cn):
        ch = next_of(c, GroupChanged)
        assert (ch.change, ch.by_user_id, ch.user_ids) == ("join", own.id, (new.id,))
    first = co.send_groupchat(gid, "teh plan")
    second = co.send_groupchat(gid, "wrong group, sorry")
    next_of(cm, GroupMessage, msg_id=second.msg_id)
    co.edit(first.msg_id, "the plan", group_id=gid)
    edited = next_of(cm, MessageEdited, msg_id=first.msg_id)
    assert (edited.group_id, edited.to_user_id, edited.content, edited.seq) == \
        (gid, None, "the plan", first.seq)
    co.recall(second.msg_id, group_id=gid)
    recalled = next_of(cn, MessageRecalled, msg_id=second.msg_id)
    assert (recalled.group_id, recalled.from_user_id, recalled.seq) == (gid, own.id, second.seq)
    history, _ = api.group_history(gid)
    by_id = {m.msg_id: m for m in history}
    assert by_id[second.msg_id].recalled and by_id[second.msg_id].content == ""
    assert by_id[first.msg_id].edited and by_id[first.msg_id].content == "the plan"
    with pytest.raises(ValueError):
        co.recall(first.msg_id, group_id=0)
    # a member that was away: its app held both messages; the next connect tells it
    cm.close()
    co.edit(first.msg_id, "the plan, v2", group_id=gid)
    next_of(co, MessageEdited, content="the plan, v2")
    back = clients(system.url, mem.token, connect=False)
    back.track_group(gid, second.seq)
    back.connect()
    assert next_of(back, MessageEdited, msg_id=first.msg_id).content == "the plan, v2"
    # a leave: the others and the leaver hear it
    Api(system.url, new.token).leave_group(gid)
    for c in (co, back, cn):
        ch = next_of(c, GroupChanged, change="leave")
        assert (ch.user_id, ch.owner_id) == (new.id, own.id)
