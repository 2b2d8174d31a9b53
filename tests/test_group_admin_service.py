"""Group administration in the relations (Friend) service and mentions in the Message
service, as real processes, on SQLite and PostgreSQL (docs/protocol.md "Group
administration and mentions"): the role rules at the service, mutes in the member
list, dismissal, and mention counts from the read cursor."""
from __future__ import annotations

import itertools

import pytest

from service_harness import INTERNAL_SECRET, database_url, running_service

_ids = itertools.count(7000)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def services(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"group-admin-{request.param}")
    with database_url(request.param, workdir, "friend") as furl, \
            database_url(request.param, workdir, "message") as murl, \
            running_service("skyeim.friend", {"Name": "friend", "DataSource": furl,
                                              "InternalSecret": INTERNAL_SECRET}, workdir) as friend, \
            running_service("skyeim.message", {"Name": "message", "DataSource": murl,
                                               "InternalSecret": INTERNAL_SECRET}, workdir) as message:
        yield friend, message


def post(svc, path, body):
    return svc.session.post(f"{svc.url}{path}", json=body)


def test_roles_mutes_and_dismissal_at_the_friend_service(services):
    friend, _ = services
    own, adm, mem, out = (next(_ids) for _ in range(4))
    r = post(friend, "/v1/groups", {"ownerId": own, "name": "svc", "memberIds": [adm, mem]})
    gid = r.json()["groupId"]
    assert post(friend, f"/v1/groups/{gid}/role", {"byUserId": adm, "userId": mem,
                                                   "role": "admin"}).status_code == 403
    r = post(friend, f"/v1/groups/{gid}/role", {"byUserId": own, "userId": adm, "role": "admin"})
    assert r.json() == {"userId": adm, "role": "admin", "changed": True}
    assert post(friend, f"/v1/groups/{gid}/role", {"byUserId": own, "userId": adm,
                                                   "role": "owner"}).status_code == 400
    assert post(friend, f"/v1/groups/{gid}/mute", {"byUserId": adm, "userId": out,
                                                   "seconds": 5}).status_code == 404
    r = post(friend, f"/v1/groups/{gid}/mute", {"byUserId": adm, "userId": mem, "seconds": 60})
    until = r.json()["mutedUntil"]
    members = {m["userId"]: m for m in friend.session.get(
        f"{friend.url}/v1/groups/{gid}/members").json()["members"]}
    assert members[mem]["mutedUntil"] == until and "mutedUntil" not in members[adm]
    assert members[adm]["role"] == "admin"
    assert post(friend, f"/v1/groups/{gid}/kick", {"byUserId": out, "userId": mem}).status_code == 403
    assert post(friend, f"/v1/groups/{gid}/rename", {"byUserId": mem, "name": "x"}).status_code == 403
    assert post(friend, f"/v1/groups/{gid}/rename", {"byUserId": adm, "name": "y"}).json()["name"] == "y"
    assert post(friend, f"/v1/groups/{gid}/dismiss", {"byUserId": adm}).status_code == 403
    r = post(friend, f"/v1/groups/{gid}/dismiss", {"byUserId": own})
    assert r.status_code == 200 and sorted(r.json()["memberIds"]) == sorted([own, adm, mem])
    assert friend.session.get(f"{friend.url}/v1/groups/{gid}/members").status_code == 404
    assert post(friend, f"/v1/groups/{gid}/dismiss", {"byUserId": own}).status_code == 403



def test_a_dismissed_groups_id_is_never_given_again(services):
    friend, _ = services
    own = next(_ids)
    made = [post(friend, "/v1/groups", {"ownerId": own, "name": f"g{i}", "memberIds": []})
            .json()["groupId"] for i in range(2)]
    for gid in reversed(made):          # the newest first: SQLite's rowid would go back to it
        assert post(friend, f"/v1/groups/{gid}/dismiss", {"byUserId": own}).status_code == 200
    again = post(friend, "/v1/groups", {"ownerId": own, "name": "again", "memberIds": []})
    assert again.json()["groupId"] > max(made)

def test_mention_counts_at_the_message_service(services):
    _, message = services
    gid, ann, bob = next(_ids), next(_ids), next(_ids)
    for i, mentions in enumerate(([bob], [], [bob, ann, bob], None)):
        body = {"groupId": gid, "fromUserId": ann, "msgId": f"m{i}", "content": "x"}
        if mentions is not None:
            body["mentions"] = mentions
        r = post(message, "/v1/groups/messages", body)
        assert r.status_code == 200, r.text
        assert r.json().get("mentions") == (list(dict.fromkeys(mentions)) if mentions else None)
    r = post(message, "/v1/groups/mentions", {"userId": bob, "groups": [
        {"groupId": gid, "afterSeq": 0}, {"groupId": gid + 1000, "afterSeq": 0}]})
    assert r.json() == {"groups": [{"groupId": gid, "mentions": 2},
                                   {"groupId": gid + 1000, "mentions": 0}]}
    r = post(message, "/v1/groups/mentions", {"userId": bob, "groups": [{"groupId": gid,
                                                                          "afterSeq": 1}]})
    assert r.json()["groups"][0]["mentions"] == 1
    for bad in ({"userId": bob, "groups": "x"}, {"userId": bob, "groups": [{"groupId": gid,
                                                                          "afterSeq": -1}]},
                {"groups": []}):
        assert post(message, "/v1/groups/mentions", bad).status_code == 400
    assert post(message, "/v1/groups/messages", {"groupId": gid, "fromUserId": ann,
                                                 "content": "x", "mentions": ["b"]}).status_code == 400
