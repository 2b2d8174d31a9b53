"""Groups in the relations (Friend) service and group messages in the Message
service, as real processes, on SQLite and PostgreSQL (docs/protocol.md "Groups")."""
from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import pytest

from service_harness import INTERNAL_SECRET, database_url, running_service

_ids = itertools.count(5000)


def uid() -> int:
    return next(_ids)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def services(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"groups-{request.param}")
    with database_url(request.param, workdir, "friend") as furl, \
            database_url(request.param, workdir, "message") as murl, \
            running_service("skyeim.friend", {"Name": "friend", "DataSource": furl,
                                              "InternalSecret": INTERNAL_SECRET}, workdir) as friend, \
            running_service("skyeim.message", {"Name": "message", "DataSource": murl,
                                               "InternalSecret": INTERNAL_SECRET}, workdir) as message:
        yield friend, message


def post(svc, path, body):
    return svc.session.post(f"{svc.url}{path}", json=body)


def get(svc, path, **params):
    return svc.session.get(f"{svc.url}{path}", params=params)


def create(friend, owner, name="team", members=()):
    r = post(friend, "/v1/groups", {"ownerId": owner, "name": name, "memberIds": list(members)})
    assert r.status_code == 200, r.text
    return r.json()


def member_ids(friend, gid):
    r = get(friend, f"/v1/groups/{gid}/members", limit=10_000)
    assert r.status_code == 200, r.text
    return {m["userId"]: m for m in r.json()["members"]}


# -- relations: create, invite, leave, list ------------------------------------------

def test_create_makes_the_creator_owner_and_the_others_members(services):
    friend, _ = services
    a, b, c = uid(), uid(), uid()
    g = create(friend, a, "Team Ä", [b, c, b, a])
    assert g["name"] == "Team Ä" and g["ownerId"] == a and g["memberCount"] == 3
    ms = member_ids(friend, g["groupId"])
    assert {k: v["role"] for k, v in ms.items()} == {a: "owner", b: "member", c: "member"}
    assert all(v["readSeq"] == 0 for v in ms.values())
    listed = get(friend, "/v1/groups", userId=b).json()["groups"]
    assert [(x["groupId"], x["role"], x["readSeq"]) for x in listed] == [(g["groupId"], "member", 0)]


def test_any_member_invites_a_stranger_may_not(services):
    friend, _ = services
    a, b, c, d = uid(), uid(), uid(), uid()
    gid = create(friend, a, members=[b])["groupId"]
    r = post(friend, f"/v1/groups/{gid}/members", {"byUserId": b, "userIds": [c, a]})
    assert r.status_code == 200 and r.json() == {"added": [c]}
    r = post(friend, f"/v1/groups/{gid}/members", {"byUserId": d, "userIds": [d]})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert set(member_ids(friend, gid)) == {a, b, c}


def test_unknown_group_is_404_and_bad_bodies_are_400(services):
    friend, _ = services
    a = uid()
    assert get(friend, "/v1/groups/999999999/members").status_code == 404
    assert post(friend, "/v1/groups/999999999/members",
                {"byUserId": a, "userIds": [a]}).status_code == 404
    for body in ({"ownerId": a}, {"ownerId": a, "name": ""}, {"ownerId": a, "name": "x" * 65},
                 {"ownerId": "1", "name": "n"}, {"ownerId": a, "name": "n", "memberIds": [0]},
                 {"ownerId": a, "name": "n", "memberIds": list(range(1, 1002))}):
        r = post(friend, "/v1/groups", body)
        assert r.status_code == 400 and r.json()["code"] == "bad_request", body


def test_leaving_is_idempotent_and_an_owner_hands_over_to_the_oldest_member(services):
    friend, _ = services
    a, b, c = uid(), uid(), uid()
    gid = create(friend, a, members=[b])["groupId"]
    assert post(friend, f"/v1/groups/{gid}/members", {"byUserId": a, "userIds": [c]}).ok
    r = post(friend, f"/v1/groups/{gid}/leave", {"userId": a})
    assert r.json() == {"left": True, "ownerId": b}
    assert post(friend, f"/v1/groups/{gid}/leave", {"userId": a}).json() == {"left": False, "ownerId": b}
    ms = member_ids(friend, gid)
    assert {k: v["role"] for k, v in ms.items()} == {b: "owner", c: "member"}
    assert get(friend, "/v1/groups", userId=a).json()["groups"] == []


def test_the_read_cursor_only_moves_up_and_needs_membership(services):
    friend, _ = services
    a, b = uid(), uid()
    gid = create(friend, a)["groupId"]
    assert post(friend, f"/v1/groups/{gid}/read", {"userId": a, "seq": 5}).json() == \
        {"readSeq": 5, "moved": True}
    assert post(friend, f"/v1/groups/{gid}/read", {"userId": a, "seq": 3}).json() == \
        {"readSeq": 5, "moved": False}
    r = post(friend, f"/v1/groups/{gid}/read", {"userId": b, "seq": 1})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"


def test_members_are_paged_by_user_id(services):
    friend, _ = services
    owner = uid()
    others = [uid() for _ in range(30)]
    gid = create(friend, owner, members=others)["groupId"]
    seen, after = [], 0
    for _ in range(10):
        body = get(friend, f"/v1/groups/{gid}/members", afterUserId=after or None, limit=7).json()
        seen += [m["userId"] for m in body["members"]]
        if not body["hasMore"]:
            break
        after = seen[-1]
    assert seen == sorted([owner, *others])


def test_concurrent_invites_keep_every_member_once(services):
    friend, _ = services
    owner = uid()
    gid = create(friend, owner)["groupId"]
    batches = [[uid() for _ in range(20)] for _ in range(6)]
    with ThreadPoolExecutor(6) as pool:
        rs = list(pool.map(lambda ids: post(friend, f"/v1/groups/{gid}/members",
                                            {"byUserId": owner, "userIds": ids + [owner]}), batches))
    assert all(r.status_code == 200 for r in rs), [r.text for r in rs]
    assert set(member_ids(friend, gid)) == {owner, *(u for b in batches for u in b)}


# -- group messages: stored once, seq per group ------------------------------------------

def send(message, gid, sender, msg_id, content="hi"):
    r = post(message, "/v1/groups/messages",
             {"groupId": gid, "fromUserId": sender, "msgId": msg_id, "content": content})
    assert r.status_code == 200, r.text
    return r.json()


def test_group_messages_get_gap_free_seqs_per_group_and_are_idempotent(services):
    _, message = services
    g1, g2, a, b = uid(), uid(), uid(), uid()
    m1 = send(message, g1, a, "m1")
    m2 = send(message, g1, b, "m2")
    m3 = send(message, g2, a, "m3")
    assert (m1["seq"], m2["seq"], m3["seq"]) == (1, 2, 1)
    assert m1["duplicate"] is False and m1["contentType"] == 1
    again = send(message, g1, a, "m1", content="changed")
    assert again["duplicate"] is True and again["seq"] == 1 and again["content"] == "hi"
    assert get(message, "/v1/groups/last", groupIds=f"{g1},{g2},{uid()}").json()["groups"][:2] == \
        [{"groupId": g1, "lastSeq": 2}, {"groupId": g2, "lastSeq": 1}]


def test_concurrent_group_sends_have_no_gaps(services):
    _, message = services
    gid = uid()
    senders = [uid() for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        out = list(pool.map(lambda i: send(message, gid, senders[i % 8], f"c{i}"), range(40)))
    assert sorted(m["seq"] for m in out) == list(range(1, 41))


def test_pages_after_a_seq_and_history_before_one(services):
    _, message = services
    gid, a = uid(), uid()
    for i in range(1, 8):
        send(message, gid, a, f"p{i}", content=f"c{i}")
    body = get(message, "/v1/groups/messages", groupId=gid, afterSeq=2, limit=3).json()
    assert [m["seq"] for m in body["messages"]] == [3, 4, 5] and body["hasMore"] is True
    body = get(message, "/v1/groups/messages", groupId=gid, afterSeq=2, beforeSeq=5).json()
    assert [m["seq"] for m in body["messages"]] == [3, 4] and body["hasMore"] is False
    body = get(message, "/v1/groups/history", groupId=gid, beforeSeq=7, limit=2).json()
    assert [m["content"] for m in body["messages"]] == ["c6", "c5"] and body["hasMore"] is True
    r = get(message, "/v1/groups/messages", groupId=gid, afterSeq=5, beforeSeq=5)
    assert r.status_code == 400


def test_group_lists_of_many_users_in_one_call(services):
    friend, _ = services
    a, b, c = uid(), uid(), uid()
    g1 = create(friend, a, "one", [b])["groupId"]
    g2 = create(friend, b, "two")["groupId"]
    r = post(friend, "/v1/groups/lists", {"userIds": [b, c, a, b]})
    assert r.status_code == 200, r.text
    lists = r.json()["groups"]
    assert [[g["groupId"] for g in x] for x in lists] == [[g1, g2], [], [g1], [g1, g2]]
    assert lists[0][1]["role"] == "owner" and lists[2][0]["role"] == "owner"
    assert post(friend, "/v1/groups/lists", {"userIds": []}).status_code == 400
