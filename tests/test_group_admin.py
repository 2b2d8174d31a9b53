"""Group administration (docs/protocol.md "Group administration"): roles (owner, admin,
member), kick, mute (a muted member's groupchat gets `muted`), rename and dismiss through
/api/groups/<id>/...; each change reaches every member's live connections as
`group_changed`; a role not allowed gets 403. Against a live system (standalone)."""
from __future__ import annotations

import pytest

from harness import new_msg_id

SKIP = ("pong", "group_unread")


def create_group(system, owner, members, name="admins") -> int:
    r = system.api("POST", "/api/groups", owner,
                   json_body={"name": name, "memberIds": [m.id for m in members]})
    assert r.status_code == 200, r.text
    return r.json()["groupId"]


def changed(client) -> dict:
    return client.expect("group_changed", skip=SKIP + ("groupchat",))


def roles(system, gid, user) -> dict[int, str]:
    r = system.api("GET", f"/api/groups/{gid}/members", user)
    assert r.status_code == 200, r.text
    return {m["userId"]: m["role"] for m in r.json()["members"]}


def send(client, gid, content="hi"):
    mid = new_msg_id()
    client.send("groupchat", {"groupId": gid, "msgId": mid, "content": content})
    return mid


@pytest.fixture(scope="module")
def people(system):
    return system.users("ga_own", "ga_adm", "ga_mem", "ga_oth", "ga_out")


def test_the_owner_promotes_and_demotes_and_every_member_hears_it(system, people):
    own, adm, mem, oth, out = people
    gid = create_group(system, own, [adm, mem, oth])
    conns = [system.connect(u) for u in (own, adm, mem, oth)]
    c_out = system.connect(out)
    r = system.api("PUT", f"/api/groups/{gid}/members/{adm.id}/role", own, json_body={"role": "admin"})
    assert r.status_code == 200 and r.json() == {"userId": adm.id, "role": "admin", "changed": True}
    for c in conns:
        assert changed(c) == {"groupId": gid, "change": "role", "byUserId": own.id,
                              "userId": adm.id, "role": "admin"}
    c_out.assert_no_frame(0.3, skip=SKIP)
    assert roles(system, gid, mem) == {own.id: "owner", adm.id: "admin", mem.id: "member",
                                       oth.id: "member"}
    # the same role again changes nothing and announces nothing
    r = system.api("PUT", f"/api/groups/{gid}/members/{adm.id}/role", own, json_body={"role": "admin"})
    assert r.status_code == 200 and r.json()["changed"] is False
    for c in conns:
        c.assert_no_frame(0.3, skip=SKIP)
    # only the owner changes roles; nobody changes the owner's
    for who, target in ((adm, mem), (mem, oth), (out, mem)):
        r = system.api("PUT", f"/api/groups/{gid}/members/{target.id}/role", who,
                       json_body={"role": "admin"})
        assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
    r = system.api("PUT", f"/api/groups/{gid}/members/{own.id}/role", own, json_body={"role": "member"})
    assert r.status_code == 403
    r = system.api("PUT", f"/api/groups/{gid}/members/{adm.id}/role", own, json_body={"role": "member"})
    assert r.status_code == 200 and r.json()["role"] == "member"
    assert changed(conns[2])["role"] == "member"
    assert roles(system, gid, own)[adm.id] == "member"


def test_kick_by_the_owner_and_admins_but_never_upwards(system, people):
    own, adm, mem, oth, out = people
    gid = create_group(system, own, [adm, mem, oth])
    assert system.api("PUT", f"/api/groups/{gid}/members/{adm.id}/role", own,
                      json_body={"role": "admin"}).status_code == 200
    c_own, c_adm, c_mem, c_oth = (system.connect(u) for u in (own, adm, mem, oth))
    # a member kicks nobody; an admin kicks neither the owner nor itself
    for who, target in ((mem, oth), (adm, own), (adm, adm), (out, mem)):
        r = system.api("DELETE", f"/api/groups/{gid}/members/{target.id}", who)
        assert r.status_code == 403 and r.json()["code"] == "forbidden", (who, target, r.text)
    r = system.api("DELETE", f"/api/groups/{gid}/members/{mem.id}", adm)
    assert r.status_code == 200 and r.json() == {"userId": mem.id, "kicked": True}
    want = {"groupId": gid, "change": "kick", "byUserId": adm.id, "userId": mem.id}
    for c in (c_own, c_adm, c_mem, c_oth):       # the kicked member hears it too
        assert changed(c) == want
    # the kicked member is out: its messages are refused, it hears no more
    mid = send(c_mem, gid)
    c_mem.expect_error("forbidden", mid, skip=SKIP)
    mid = send(c_oth, gid, "after the kick")
    c_oth.expect_ack(mid, "sent", skip=SKIP)
    assert c_own.expect("groupchat", skip=SKIP)["msgId"] == mid
    c_mem.assert_no_frame(0.5, skip=SKIP)
    assert system.api("DELETE", f"/api/groups/{gid}/members/{mem.id}", adm).status_code == 404
    # a second admin cannot kick the first; the owner can
    assert system.api("PUT", f"/api/groups/{gid}/members/{oth.id}/role", own,
                      json_body={"role": "admin"}).status_code == 200
    assert system.api("DELETE", f"/api/groups/{gid}/members/{adm.id}", oth).status_code == 403
    assert system.api("DELETE", f"/api/groups/{gid}/members/{adm.id}", own).status_code == 200
    assert set(roles(system, gid, own)) == {own.id, oth.id}


def test_a_muted_member_gets_muted_until_unmuted(system, people):
    own, adm, mem, oth, _ = people
    gid = create_group(system, own, [adm, mem, oth])
    assert system.api("PUT", f"/api/groups/{gid}/members/{adm.id}/role", own,
                      json_body={"role": "admin"}).status_code == 200
    c_own, c_mem = system.connect(own), system.connect(mem)
    assert system.api("POST", f"/api/groups/{gid}/members/{mem.id}/mute", oth,
                      json_body={"seconds": 60}).status_code == 403
    assert system.api("POST", f"/api/groups/{gid}/members/{own.id}/mute", adm,
                      json_body={"seconds": 60}).status_code == 403
    r = system.api("POST", f"/api/groups/{gid}/members/{mem.id}/mute", adm, json_body={"seconds": 60})
    assert r.status_code == 200, r.text
    until = r.json()["mutedUntil"]
    for c in (c_own, c_mem):
        got = changed(c)
        assert (got["change"], got["userId"], got["until"], got["byUserId"]) == \
            ("mute", mem.id, until, adm.id)
    mid = send(c_mem, gid, "let me speak")
    err = c_mem.expect_error("muted", mid, skip=SKIP)
    assert str(until) in err["message"]
    c_own.assert_no_frame(0.5, skip=SKIP)
    listed = {m["userId"]: m for m in system.api("GET", f"/api/groups/{gid}/members", own).json()["members"]}
    assert listed[mem.id]["mutedUntil"] == until and "mutedUntil" not in listed[own.id]
    # seconds 0 lifts it
    r = system.api("POST", f"/api/groups/{gid}/members/{mem.id}/mute", own, json_body={"seconds": 0})
    assert r.status_code == 200 and r.json()["mutedUntil"] == 0
    got = changed(c_mem)
    assert (got["change"], got["userId"], got["until"]) == ("unmute", mem.id, 0)
    mid = send(c_mem, gid, "thanks")
    c_mem.expect_ack(mid, "sent", skip=SKIP + ("group_changed",))


def test_rename_by_owner_or_admin_and_dismiss_by_the_owner_only(system, people):
    own, adm, mem, oth, out = people
    gid = create_group(system, own, [adm, mem])
    assert system.api("PUT", f"/api/groups/{gid}/members/{adm.id}/role", own,
                      json_body={"role": "admin"}).status_code == 200
    conns = [system.connect(u) for u in (own, adm, mem)]
    assert system.api("PATCH", f"/api/groups/{gid}", mem, json_body={"name": "mine"}).status_code == 403
    r = system.api("PATCH", f"/api/groups/{gid}", adm, json_body={"name": "Renamed"})
    assert r.status_code == 200 and r.json()["name"] == "Renamed"
    for c in conns:
        assert changed(c) == {"groupId": gid, "change": "rename", "byUserId": adm.id,
                              "name": "Renamed"}
    mine = system.api("GET", "/api/groups", mem).json()["groups"]
    assert next(g for g in mine if g["groupId"] == gid)["name"] == "Renamed"
    for who in (adm, mem, out):
        assert system.api("DELETE", f"/api/groups/{gid}", who).status_code == 403
    r = system.api("DELETE", f"/api/groups/{gid}", own)
    assert r.status_code == 200 and r.json()["dismissed"] is True
    assert sorted(r.json()["memberIds"]) == sorted([own.id, adm.id, mem.id])
    for c in conns:
        assert changed(c) == {"groupId": gid, "change": "dismiss", "byUserId": own.id}
    for u in (own, adm, mem):
        assert gid not in [g["groupId"] for g in system.api("GET", "/api/groups", u).json()["groups"]]
    mid = send(conns[2], gid)
    conns[2].expect_error("forbidden", mid, skip=SKIP)
    assert system.api("GET", f"/api/groups/{gid}/members", own).status_code == 403
    assert system.api("DELETE", f"/api/groups/{gid}", own).status_code == 403



def test_a_group_made_after_a_dismissal_never_shows_the_dismissed_groups_history(system, people):
    own, adm, mem, _, _ = people
    old = create_group(system, own, [adm, mem], name="old")
    c_own = system.connect(own)
    for text in ("one", "two"):
        c_own.expect_ack(send(c_own, old, text), "sent", skip=SKIP)
    assert system.api("DELETE", f"/api/groups/{old}", own).status_code == 200
    new = create_group(system, own, [adm, mem], name="new")
    assert new != old
    for u in (own, adm, mem):
        r = system.api("GET", f"/api/groups/{new}/messages", u)
        assert r.status_code == 200 and r.json()["messages"] == []
    ack = c_own.expect_ack(send(c_own, new, "first"), "sent", skip=SKIP + ("group_changed",))
    assert ack["seq"] == 1

def test_invites_and_leaves_are_announced_to_every_member_and_the_newcomers(system, people):
    own, adm, mem, oth, out = people
    gid = create_group(system, own, [mem], name="comings")
    c_own, c_mem, c_oth, c_out, c_adm = (system.connect(u) for u in (own, mem, oth, out, adm))
    # any member invites; the members and the new ones hear it, nobody else
    r = system.api("POST", f"/api/groups/{gid}/members", mem,
                   json_body={"userIds": [oth.id, adm.id, own.id]})
    assert r.status_code == 200 and r.json() == {"added": [oth.id, adm.id]}
    for c in (c_own, c_mem, c_oth, c_adm):
        assert changed(c) == {"groupId": gid, "change": "join", "byUserId": mem.id,
                              "userIds": [oth.id, adm.id]}
    c_out.assert_no_frame(0.3, skip=SKIP)
    # inviting members again adds nobody and announces nothing
    r = system.api("POST", f"/api/groups/{gid}/members", own, json_body={"userIds": [oth.id]})
    assert r.status_code == 200 and r.json() == {"added": []}
    # a member leaves: the others and the leaver's own connection hear it
    assert system.api("POST", f"/api/groups/{gid}/leave", oth).json()["left"] is True
    expected = {"groupId": gid, "change": "leave", "byUserId": oth.id, "userId": oth.id,
                "ownerId": own.id}
    for c in (c_own, c_mem, c_adm, c_oth):
        assert changed(c) == expected
    # a second leave is no change: nothing announced
    assert system.api("POST", f"/api/groups/{gid}/leave", oth).json()["left"] is False
    # the owner leaves: the group passes to the member who joined first, and all hear who
    assert system.api("POST", f"/api/groups/{gid}/leave", own).json()["ownerId"] == mem.id
    for c in (c_own, c_mem, c_adm):
        assert changed(c) == {"groupId": gid, "change": "leave", "byUserId": own.id,
                              "userId": own.id, "ownerId": mem.id}
    for c in (c_own, c_mem, c_oth, c_out, c_adm):
        c.assert_no_frame(0.3, skip=SKIP)


@pytest.mark.parametrize("method,path,body", [
    ("PUT", "/members/{m}/role", {"role": "owner"}),
    ("PUT", "/members/{m}/role", {}),
    ("PUT", "/members/abc/role", {"role": "admin"}),
    ("POST", "/members/{m}/mute", {"seconds": -1}),
    ("POST", "/members/{m}/mute", {"seconds": "60"}),
    ("POST", "/members/{m}/mute", {"seconds": 10**9}),
    ("PATCH", "", {"name": ""}),
    ("PATCH", "", {"name": "x" * 65}),
    ("PATCH", "", {"name": 5}),
])
def test_bad_administration_input_is_400(system, people, method, path, body):
    own, adm, mem, _, _ = people
    gid = create_group(system, own, [mem])
    r = system.api(method, f"/api/groups/{gid}" + path.format(m=mem.id), own, json_body=body)
    assert r.status_code == 400 and r.json()["code"] == "bad_request", r.text
    assert system.api("DELETE", f"/api/groups/{gid}/members/{mem.id}").status_code == 401
