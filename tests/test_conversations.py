"""The conversation list (docs/protocol.md "Conversation list"): GET
/api/conversations with every 1:1 and group conversation of the caller, its last
message, unread count and last seq, pinned first then newest first, paged by
cursor; POST /api/conversations/mute and /pin, heard by the user's connections
as `conversation_updated`; the `conversations` client frame. Against a live
system (standalone), and a gateway whose Message service lacks the endpoints."""
from __future__ import annotations

import pytest

from harness import new_msg_id
from standin_harness import running_standin

SKIP = ("pong", "group_unread")


def conversations(system, user, **params) -> dict:
    r = system.api("GET", "/api/conversations", user, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def every_item(system, user, limit: int) -> list[dict]:
    items, cursor = [], None
    for _ in range(100):
        params = {"limit": limit} if cursor is None else {"limit": limit, "before": cursor}
        page = conversations(system, user, **params)
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["nextCursor"]
        if cursor is None:
            return items
    raise AssertionError("the pages never end")


def key(item: dict) -> tuple:
    return (item["kind"], item.get("peerId") or item.get("groupId"))


def create_group(system, owner, members, name="team") -> int:
    r = system.api("POST", "/api/groups", owner, json_body={"name": name,
                                                           "memberIds": [m.id for m in members]})
    assert r.status_code == 200, r.text
    return r.json()["groupId"]


def group_send(system, client, gid: int, content: str) -> dict:
    mid = new_msg_id()
    client.send("groupchat", {"groupId": gid, "msgId": mid, "content": content})
    return client.expect_ack(mid, "sent", skip=SKIP + ("groupchat",))


def set_flag(system, user, what: str, **body):
    return system.api("POST", f"/api/conversations/{what}", user, json_body=body)


# -- the list ------------------------------------------------------------------------------

def test_the_list_has_each_conversation_with_its_last_message_and_unread_count(system):
    ann, bob, cat, dan = system.users("cv_ann", "cv_bob", "cv_cat", "cv_dan")
    assert conversations(system, ann) == {"items": [], "nextCursor": None}
    system.seed_message(bob, ann, "from bob 1")
    system.seed_message(bob, ann, "from bob 2")
    system.seed_message(ann, cat, "to cat")
    gid = create_group(system, dan, [ann, bob], name="Walkers")
    d = system.connect(dan)
    group_send(system, d, gid, "group hello")
    last = system.seed_message(cat, ann, "cat answers")

    items = conversations(system, ann)["items"]
    assert [key(i) for i in items] == [("chat", cat.id), ("group", gid), ("chat", bob.id)]
    with_cat, group, with_bob = items
    assert with_cat["lastMessage"] == {k: last[k] for k in (
        "msgId", "fromUserId", "toUserId", "content", "contentType", "createdAt", "seq")}
    assert (with_cat["username"], with_cat["lastSeq"], with_cat["unread"],
            with_cat["muted"], with_cat["pinned"]) == (cat.username, 2, 1, False, False)
    assert with_cat["lastAt"] == last["createdAt"]
    assert (with_bob["lastMessage"]["content"], with_bob["lastSeq"], with_bob["unread"]) == \
        ("from bob 2", 2, 2)
    assert (group["name"], group["lastSeq"], group["readSeq"], group["unread"]) == \
        ("Walkers", 1, 0, 1)
    assert group["lastMessage"]["content"] == "group hello" and \
        group["lastMessage"]["fromUserId"] == dan.id
    # the sender's side: nothing unread of its own messages
    cat_side = conversations(system, cat)["items"]
    assert [(key(i), i["unread"], i["username"]) for i in cat_side] == [
        (("chat", ann.id), 1, ann.username)]

    # reading zeroes the unread count; reading a group moves its readSeq
    a = system.connect(ann)
    a.read(bob.id)
    a.send("group_read", {"groupId": gid, "seq": 1})
    a.assert_no_frame(0.5, skip=SKIP + ("groupchat",))
    items = {key(i): i for i in conversations(system, ann)["items"]}
    assert items[("chat", bob.id)]["unread"] == 0
    assert (items[("group", gid)]["readSeq"], items[("group", gid)]["unread"]) == (1, 0)


def test_pages_cover_every_conversation_once_in_order(system):
    me, *peers = system.users("cp_me", *[f"cp_p{i}" for i in range(7)])
    for i, p in enumerate(peers):
        system.seed_message(p if i % 2 else me, me if i % 2 else p, f"m{i}")
    groups = [create_group(system, me, [peers[0]], name=f"g{i}") for i in range(3)]
    g = system.connect(me)
    group_send(system, g, groups[1], "newest")
    everything = conversations(system, me, limit=200)["items"]
    assert len(everything) == 10 and everything[0]["groupId"] == groups[1]
    stamps = [i["lastAt"] for i in everything]
    assert stamps == sorted(stamps, reverse=True)
    for limit in (1, 3, 4):
        assert [key(i) for i in every_item(system, me, limit)] == [key(i) for i in everything]


def test_pinned_come_first_and_flags_reach_every_connection_of_the_user(system):
    me, old, new, other = system.users("pf_me", "pf_old", "pf_new", "pf_other")
    system.seed_message(old, me, "old")
    gid = create_group(system, other, [me])
    system.seed_message(new, me, "new")
    c1, c2 = system.connect(me), system.connect(other)
    r = set_flag(system, me, "pin", peerId=old.id, pinned=True)
    assert r.status_code == 200 and r.json() == {"peerId": old.id, "muted": False, "pinned": True}
    assert c1.expect("conversation_updated", skip=SKIP) == r.json()
    r = set_flag(system, me, "mute", groupId=gid, muted=True)
    assert r.json() == {"groupId": gid, "muted": True, "pinned": False}
    assert c1.expect("conversation_updated", skip=SKIP) == r.json()
    items = conversations(system, me)["items"]
    assert [(key(i), i["pinned"], i["muted"]) for i in items] == [
        (("chat", old.id), True, False), (("chat", new.id), False, False),
        (("group", gid), False, True)]
    # a pinned conversation stays first when others get newer messages
    system.seed_message(new, me, "newer")
    assert key(conversations(system, me)["items"][0]) == ("chat", old.id)
    assert set_flag(system, me, "pin", peerId=old.id, pinned=False).json()["pinned"] is False
    assert key(conversations(system, me)["items"][0]) == ("chat", new.id)
    # pinning someone you never talked to lists it without a last message
    assert set_flag(system, me, "pin", peerId=other.id, pinned=True).status_code == 200
    first = conversations(system, me)["items"][0]
    assert (key(first), first["lastMessage"], first["lastSeq"], first["unread"]) == \
        (("chat", other.id), None, 0, 0)
    c2.assert_no_frame(0.3, skip=SKIP)      # only the user's own connections hear it


def test_bad_input_is_refused_with_a_clear_code(system):
    me, peer, owner = system.users("bi_me", "bi_peer", "bi_owner")
    gid = create_group(system, owner, [peer])
    assert system.api("GET", "/api/conversations").status_code == 401
    for params in ({"limit": "0"}, {"limit": "x"}, {"before": "nonsense"}, {"before": "1.2.3"},
                   {"before": "x" * 200}):
        r = system.api("GET", "/api/conversations", me, params=params)
        assert r.status_code == 400 and r.json()["code"] == "bad_request", (params, r.text)
    for what, body in (("pin", {"peerId": peer.id}), ("pin", {"peerId": peer.id, "pinned": 1}),
                       ("mute", {"muted": True}), ("mute", {"peerId": me.id, "muted": True}),
                       ("mute", {"peerId": peer.id, "groupId": gid, "muted": True}),
                       ("pin", {"groupId": "7", "pinned": True})):
        r = set_flag(system, me, what, **body)
        assert r.status_code == 400 and r.json()["code"] == "bad_request", (what, body, r.text)
    r = set_flag(system, me, "pin", groupId=gid, pinned=True)       # not a member
    assert r.status_code == 403 and r.json()["code"] == "forbidden"


# -- the frame -----------------------------------------------------------------------------

def test_the_conversations_frame_answers_a_page_with_its_request_id(system):
    me, a, b = system.users("cf_me", "cf_a", "cf_b")
    system.seed_message(a, me, "one")
    system.seed_message(me, b, "two")
    c = system.connect(me)
    c.send("conversations", {"requestId": "r1", "limit": 1})
    page = c.expect("conversations", skip=SKIP)
    assert page["requestId"] == "r1" and [key(i) for i in page["items"]] == [("chat", b.id)]
    c.send("conversations", {"limit": 5, "before": page["nextCursor"]})
    rest = c.expect("conversations", skip=SKIP)
    assert [key(i) for i in rest["items"]] == [("chat", a.id)] and rest["nextCursor"] is None
    assert "requestId" not in rest
    c.send("conversations", {"requestId": "r2", "limit": 0})
    err = c.expect("error", skip=SKIP)
    assert (err["code"], err["requestId"]) == ("bad_request", "r2")
    c.send("conversations", {"requestId": "r3", "before": "zz"})
    err = c.expect("error", skip=SKIP)
    assert (err["code"], err["requestId"]) == ("bad_request", "r3")
    c.assert_open()


# -- a Message service without the optional endpoints (PROTOCOL.md 9.1) --------------------

def test_a_message_service_without_the_list_gets_not_supported(system_factory, tmp_path):
    with running_standin("message", tmp_path) as standin:
        s = system_factory(standalone=False, ws={"MessageRpc": {"Endpoints": [standin.endpoint]}})
        me, peer = s.users("ns_me", "ns_peer")
        r = s.api("GET", "/api/conversations", me)
        assert r.status_code == 501 and r.json()["code"] == "not_supported", r.text
        r = set_flag(s, me, "mute", peerId=peer.id, muted=True)
        assert r.status_code == 501 and r.json()["code"] == "not_supported", r.text
        c = s.connect(me)
        c.send("conversations", {"requestId": "q"})
        err = c.expect("error", skip=SKIP)
        assert (err["code"], err["requestId"]) == ("not_supported", "q")
        c.assert_open()
        assert "Traceback" not in s.log_text()


@pytest.mark.parametrize("what", ["pin", "mute"])
def test_flags_are_per_user(system, what):
    a, b = system.users(f"pu_a_{what}", f"pu_b_{what}")
    system.seed_message(a, b, "hi")
    field = "pinned" if what == "pin" else "muted"
    assert set_flag(system, a, what, peerId=b.id, **{field: True}).status_code == 200
    assert conversations(system, a)["items"][0][field] is True
    assert conversations(system, b)["items"][0][field] is False
