"""Group chat (docs/protocol.md "Groups"): groups over /api/groups, `groupchat`
fanned out to every online member, stored once with a per-group seq;
`group_unread` after `connected` and `sync` with `groupId` for what a member
missed; `group_read` as a per-member "read up to seq" cursor. Against a live
system (standalone; MultiLogin allow for the devices)."""
from __future__ import annotations

import pytest
import requests

from harness import Client, new_msg_id

SKIP = ("pong", "group_unread")
GROUP_FIELDS = {"groupId", "msgId", "fromUserId", "content", "contentType", "createdAt", "seq"}


def create_group(system, owner, members=(), name="team") -> int:
    r = system.api("POST", "/api/groups", owner, json_body={"name": name,
                                                           "memberIds": [m.id for m in members]})
    assert r.status_code == 200, r.text
    return r.json()["groupId"]


def group_send(client: Client, gid: int, content: str = "hi", msg_id: str | None = None) -> str:
    msg_id = msg_id or new_msg_id()
    client.send("groupchat", {"groupId": gid, "msgId": msg_id, "content": content})
    return msg_id


def sent_ack(client: Client, msg_id: str) -> dict:
    ack = client.expect_ack(msg_id, "sent", skip=SKIP + ("groupchat",))
    return ack


def read_sync(client: Client, timeout: float = 10.0) -> tuple[list[dict], dict]:
    pages = []
    for _ in range(1000):                   # bounded: an answer has at most 1000 pages
        frame = client.recv_frame(timeout)
        if frame["type"] in SKIP:
            continue
        if frame["type"] == "sync_complete":
            done = frame["data"]
            # serverTime: the next sync's changedSince (docs/protocol.md "Recall, edit, delete")
            assert isinstance(done.pop("serverTime"), int), done
            return pages, done
        assert frame["type"] == "sync_messages", frame
        pages.append(frame["data"])
    raise AssertionError("no sync_complete")


@pytest.fixture(scope="module")
def people(system):
    return system.users("g_ann", "g_bob", "g_cat", "g_dan")


# -- the REST API: create, list, members, invite, leave ------------------------------------

def test_a_created_group_is_listed_with_roles_and_seqs(system, people):
    ann, bob, cat, _ = people
    gid = create_group(system, ann, [bob, cat], name="Book club")
    mine = system.api("GET", "/api/groups", bob).json()["groups"]
    g = next(g for g in mine if g["groupId"] == gid)
    assert (g["name"], g["ownerId"], g["role"], g["readSeq"], g["lastSeq"]) == \
        ("Book club", ann.id, "member", 0, 0)
    r = system.api("GET", f"/api/groups/{gid}/members", cat)
    assert r.status_code == 200
    members = {m["userId"]: m for m in r.json()["members"]}
    assert {u: (m["role"], m["username"]) for u, m in members.items()} == {
        ann.id: ("owner", ann.username), bob.id: ("member", bob.username),
        cat.id: ("member", cat.username)}


def test_only_members_see_members_and_history_and_may_invite(system, people):
    ann, bob, _, dan = people
    gid = create_group(system, ann, [bob])
    for method, path, body in (("GET", f"/api/groups/{gid}/members", None),
                               ("GET", f"/api/groups/{gid}/messages", None),
                               ("POST", f"/api/groups/{gid}/members", {"userIds": [dan.id]})):
        kw = {} if body is None else {"json_body": body}
        r = system.api(method, path, dan, **kw)
        assert r.status_code == 403 and r.json()["code"] == "forbidden", (path, r.text)
    assert system.api("GET", f"/api/groups/{gid}/members").status_code == 401
    r = system.api("POST", "/api/groups", ann, json_body={"name": "x", "memberIds": [2**62]})
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = system.api("POST", "/api/groups", ann, json_body={"name": ""})
    assert r.status_code == 400 and r.json()["code"] == "bad_request"


# -- groupchat ------------------------------------------------------------------------------

def test_a_groupchat_is_acked_with_its_seq_and_reaches_every_online_member_once(system, people):
    ann, bob, cat, dan = people
    gid = create_group(system, ann, [bob, cat])
    ca, cb, cc, cd = (system.connect(u) for u in (ann, bob, cat, dan))
    mid = group_send(ca, gid, "hello group")
    ack = sent_ack(ca, mid)
    assert ack["groupId"] == gid and ack["seq"] == 1 and "duplicate" not in ack
    for c in (cb, cc):
        got = c.expect("groupchat", skip=SKIP)
        assert set(got) == GROUP_FIELDS
        assert (got["groupId"], got["msgId"], got["fromUserId"], got["content"], got["contentType"],
                got["seq"], got["createdAt"]) == (gid, mid, ann.id, "hello group", 1, 1,
                                                  ack["timestamp"])
    mid2 = group_send(cb, gid, "second")
    assert sent_ack(cb, mid2)["seq"] == 2
    assert ca.expect("groupchat", skip=SKIP)["seq"] == 2
    assert cc.expect("groupchat", skip=SKIP)["msgId"] == mid2
    for c in (ca, cb, cc, cd):        # nobody got anything else; the outsider nothing at all
        c.assert_no_frame(0.5, skip=SKIP)


def test_a_resent_groupchat_is_a_duplicate_and_not_fanned_out_again(system, people):
    ann, bob, _, _ = people
    gid = create_group(system, ann, [bob])
    ca, cb = system.connect(ann), system.connect(bob)
    mid = group_send(ca, gid, "once")
    first = sent_ack(ca, mid)
    assert cb.expect("groupchat", skip=SKIP)["msgId"] == mid
    group_send(ca, gid, "changed", msg_id=mid)
    again = sent_ack(ca, mid)
    assert again["duplicate"] is True and again["seq"] == first["seq"]
    cb.assert_no_frame(0.5, skip=SKIP)


def test_a_non_member_gets_forbidden_and_bad_frames_are_bad_requests(system, people):
    ann, bob, _, dan = people
    gid = create_group(system, ann, [bob])
    cd = system.connect(dan)
    mid = group_send(cd, gid)
    cd.expect_error("forbidden", mid, skip=SKIP)
    mid = group_send(cd, 2**62)                       # no such group: looks the same
    cd.expect_error("forbidden", mid, skip=SKIP)
    for data, echoed in (({"groupId": "1", "content": "x", "msgId": "ok1"}, "ok1"),
                         ({"groupId": gid, "content": "", "msgId": "ok2"}, "ok2"),
                         ({"groupId": gid, "content": "x", "contentType": 9}, None),
                         ({"groupId": gid, "content": "x", "msgId": "bad id!"}, None)):
        cd.send("groupchat", data)
        cd.expect_error("bad_request", echoed, skip=SKIP)
    for data in (None, {"groupId": gid}, {"groupId": gid, "seq": 0}, {"seq": 1}):
        cd.send("group_read", data)
        cd.expect_error("bad_request", None, skip=SKIP)
    cd.send("group_unread", {"groups": []})
    cd.expect_error("unknown_type", None, skip=SKIP)
    cb = system.connect(bob)
    cb.assert_no_frame(0.3, skip=SKIP)


# -- membership changes reach the fan-out at once (the gateway's cache is dropped) ---------

def test_an_invited_member_gets_the_next_message_and_one_who_left_does_not(system, people):
    ann, bob, cat, _ = people
    gid = create_group(system, ann, [bob])
    ca, cb, cc = (system.connect(u) for u in (ann, bob, cat))
    sent_ack(ca, group_send(ca, gid, "warm the cache"))
    cb.expect("groupchat", skip=SKIP)
    r = system.api("POST", f"/api/groups/{gid}/members", bob, json_body={"userIds": [cat.id]})
    assert r.status_code == 200 and r.json() == {"added": [cat.id]}
    for c in (ca, cb, cc):          # every member hears of it, the new one too
        assert c.expect("group_changed", skip=SKIP)["change"] == "join"
    mid = group_send(ca, gid, "welcome")
    sent_ack(ca, mid)
    assert cc.expect("groupchat", skip=SKIP)["msgId"] == mid
    assert cb.expect("groupchat", skip=SKIP)["msgId"] == mid
    r = system.api("POST", f"/api/groups/{gid}/leave", bob)
    assert r.status_code == 200 and r.json() == {"left": True, "ownerId": ann.id}
    for c in (ca, cb, cc):
        assert c.expect("group_changed", skip=SKIP)["change"] == "leave"
    sent_ack(ca, group_send(ca, gid, "bye bob"))
    assert cc.expect("groupchat", skip=SKIP)["content"] == "bye bob"
    cb.assert_no_frame(0.5, skip=SKIP)
    mid = group_send(cb, gid, "still here?")
    cb.expect_error("forbidden", mid, skip=SKIP)


# -- offline members: group_unread, then sync by groupId; read cursors -----------------------

def test_an_offline_member_learns_what_is_unread_and_syncs_it(system, people):
    ann, bob, cat, _ = people
    gid = create_group(system, ann, [bob, cat], name="later")
    ca = system.connect(ann)
    mids = [group_send(ca, gid, f"m{i}") for i in range(5)]
    for mid in mids:
        sent_ack(ca, mid)
    cb = system.connect(bob)
    unread = cb.expect("group_unread", skip=("pong",))
    g = next(x for x in unread["groups"] if x["groupId"] == gid)
    assert g == {"groupId": gid, "name": "later", "lastSeq": 5, "readSeq": 0}
    cb.send("sync", {"requestId": "g1", "conversations": [{"groupId": gid, "afterSeq": 2}],
                     "limit": 2})
    pages, done = read_sync(cb)
    assert [[m["seq"] for m in p["messages"]] for p in pages] == [[3, 4], [5]]
    assert all(p["groupId"] == gid and p["requestId"] == "g1" for p in pages)
    assert [p["hasMore"] for p in pages] == [True, False]
    assert pages[0]["messages"][0]["content"] == "m2" and set(pages[0]["messages"][0]) == GROUP_FIELDS
    assert done == {"requestId": "g1", "conversations": [{"groupId": gid, "lastSeq": 5,
                                                          "hasMore": False}]}
    # the cursor: bob read up to 4; ann and cat (online, small group) hear of it
    cc = system.connect(cat)
    cb.send("group_read", {"groupId": gid, "seq": 4})
    note = {"groupId": gid, "userId": bob.id, "seq": 4}
    assert ca.expect("group_read", skip=SKIP + ("groupchat",)) == note
    assert cc.expect("group_read", skip=SKIP) == note
    cb.send("group_read", {"groupId": gid, "seq": 3})        # never back: nothing happens
    cb.send("group_read", {"groupId": gid, "seq": 999})      # capped at the last seq, 5
    assert cc.expect("group_read", skip=SKIP) == {**note, "seq": 5}
    cb.close()
    cb = system.connect(bob)
    g = next(x for x in cb.expect("group_unread")["groups"] if x["groupId"] == gid)
    assert (g["lastSeq"], g["readSeq"]) == (5, 5)
    members = system.api("GET", f"/api/groups/{gid}/members", ann).json()["members"]
    assert {m["userId"]: m["readSeq"] for m in members}[bob.id] == 5


def test_sync_of_a_group_one_is_not_in_is_forbidden_and_nothing_is_answered(system, people):
    ann, bob, _, dan = people
    gid = create_group(system, ann, [bob])
    cd = system.connect(dan)
    cd.send("sync", {"requestId": "x1", "conversations": [{"peerId": ann.id},
                                                          {"groupId": gid}]})
    err = cd.expect("error", skip=SKIP)
    assert (err["code"], err["requestId"]) == ("forbidden", "x1")
    cd.assert_no_frame(0.5, skip=SKIP)
    cd.send("sync", {"conversations": [{"groupId": gid}, {"groupId": gid}]})
    assert cd.expect("error", skip=SKIP)["code"] == "bad_request"


def test_a_user_in_no_group_gets_no_group_frame(system):
    lone = system.minted_user("lone")
    c = system.connect(lone)
    c.assert_no_frame(0.5, skip=("pong",))


# -- several devices --------------------------------------------------------------------------

def test_the_senders_other_devices_get_the_message_and_the_sending_one_does_not(system_factory):
    s = system_factory(ws={"WebSocket": {"MultiLogin": "allow"}})
    ann, bob = s.users("gd_ann", "gd_bob")
    gid = create_group(s, ann, [bob])
    phone, laptop = s.connect(ann, path="/ws?platform=ios"), s.connect(ann, path="/ws?platform=web")
    b1, b2 = s.connect(bob), s.connect(bob)
    mid = group_send(phone, gid, "from my phone")
    sent_ack(phone, mid)
    for c in (laptop, b1, b2):
        got = c.expect("groupchat", skip=SKIP)
        assert (got["msgId"], got["fromUserId"]) == (mid, ann.id)
    phone.assert_no_frame(0.5, skip=SKIP)
    laptop.send("group_read", {"groupId": gid, "seq": 1})
    for c in (phone, b1, b2):
        assert c.expect("group_read", skip=SKIP) == {"groupId": gid, "userId": ann.id, "seq": 1}
    laptop.assert_no_frame(0.3, skip=SKIP)


def test_a_big_group_reaches_each_online_member_exactly_once(system):
    """3,000 members (fetched in one member list), 40 online: each online member gets
    one copy per message, the same text for all; offline members cost nothing."""
    owner = system.minted_user("big_owner")
    online = [system.minted_user(f"big{i}") for i in range(40)]
    offline_ids = [owner.id + 1_000_000 + i for i in range(3000 - 41)]
    r = system.service("friend", "POST", "/v1/groups",
                       json_body={"ownerId": owner.id, "name": "big",
                                  "memberIds": [u.id for u in online] + offline_ids[:900]})
    assert r.status_code == 200, r.text
    gid = r.json()["groupId"]
    for i in range(900, len(offline_ids), 1000):
        r = system.service("friend", "POST", f"/v1/groups/{gid}/members",
                           json_body={"byUserId": owner.id, "userIds": offline_ids[i:i + 1000]})
        assert r.status_code == 200, r.text
    co = system.connect(owner)
    clients = [system.connect(u) for u in online]
    before = fanouts(system)
    mids = [group_send(co, gid, f"to all {i}") for i in range(3)]
    for mid in mids:
        sent_ack(co, mid)
    for c in clients:
        got = [c.expect("groupchat", skip=SKIP) for _ in mids]
        assert [g["msgId"] for g in got] == mids and [g["seq"] for g in got] == [1, 2, 3]
    for c in clients[:5]:
        c.assert_no_frame(0.3, skip=SKIP)
    assert fanouts(system) - before == 3          # one fan-out per message, not per member


def fanouts(system) -> float:
    metrics = requests.get(system.metrics_url + "/metrics", timeout=10).text
    return next(float(line.split()[1]) for line in metrics.splitlines()
                if line.startswith("skyeim_group_fanout_seconds_count"))
