"""The Friend service's checks (PROTOCOL.md section 6, "Friend service")."""
from __future__ import annotations

import contextlib

from skyeim.contract.runner import (NOT_USER_IDS, CheckFailed, Suite, bad_request, json_list,
                                    lenient_id, nested, ok, require, short, user_id, without)
from skyeim.protocol import MAX_USER_ID

LIST = "GET /v1/friends/<userId>"
ADD = "POST /v1/friends"
REMOVE = "DELETE /v1/friends/<userId>/<friendId>"
NOT_PATH_IDS = ("abc", "0", "-1", "1.5", str(MAX_USER_ID + 1))


class FriendChecks(Suite):
    service = "friend"
    endpoints = (LIST, ADD, REMOVE)

    def friends(self, uid: int) -> list[int]:
        answer = ok(self.svc.get(f"/v1/friends/{uid}"))
        friends = json_list(answer.get("friends"), "friends")
        for i, f in enumerate(friends):
            self.shaped(LIST, user_id, f, f"friends[{i}]")
        return [lenient_id(f) for f in friends]

    def add(self, uid: int, fid: int) -> None:
        answer = ok(self.svc.post("/v1/friends", {"userId": uid, "friendId": fid}))
        self.shaped(ADD, ok_true, answer)

    def remove(self, uid: int, fid: int) -> None:
        answer = ok(self.svc.delete(f"/v1/friends/{uid}/{fid}"))
        self.shaped(REMOVE, ok_true, answer)

    def both_ways(self, uid: int, fid: int, friends: bool) -> None:
        for a, b in ((uid, fid), (fid, uid)):
            got = self.friends(a)
            if friends:
                require(got.count(b) == 1,
                        f"{b} appears {got.count(b)} times in the list of {a}: {short(got)}")
            else:
                require(b not in got, f"{b} is still in the list of {a}: {short(got)}")

    def checks(self) -> None:
        u, f, g = self.data.user_ids(3)
        with self.check(LIST, "a user without friends has an empty list"):
            require(self.friends(u) == [], "a fresh user's list is not empty")
        with self.check(ADD, "befriends in both directions and answers {ok: true}"):
            self.add(u, f)
            self.both_ways(u, f, True)
        with self.check(LIST, "lists every friend as a JSON integer"):
            self.add(u, g)
            got = sorted(self.friends(u))
            require(got == sorted([f, g]), f"listed {got}, expected {sorted([f, g])}")
        with self.check(ADD, "is idempotent, in either direction"):
            self.add(u, f)
            self.add(f, u)
            self.both_ways(u, f, True)
        with self.check(ADD, "the largest user id, 2^63-1, works"):
            self.add(MAX_USER_ID, g)
            require(MAX_USER_ID in self.friends(g), "2^63-1 is not in the friend's list")
            self.remove(MAX_USER_ID, g)            # leave nothing behind on the shared id
        with self.check(ADD, "befriending oneself is 400"):
            bad_request(self.svc.post("/v1/friends", {"userId": u, "friendId": u}), "userId == friendId")
        with self.check(ADD, "an id that is not a JSON integer from 1 to 2^63-1 (or is missing) is 400"):
            good = {"userId": u, "friendId": g}
            for key in ("userId", "friendId"):
                for case, value in NOT_USER_IDS + [("nested JSON", nested(50))]:
                    bad_request(self.svc.post("/v1/friends", {**good, key: value}), f"{key} {case}")
                bad_request(self.svc.post("/v1/friends", without(good, key)), f"{key} missing")
        self.not_json_refused(ADD, "/v1/friends")
        with self.check(REMOVE, "removes both directions and answers {ok: true}"):
            self.remove(u, f)
            self.both_ways(u, f, False)
            require(g in self.friends(u), "removing one friend removed another")
        with self.check(REMOVE, "is idempotent: removing an absent friendship is 200, either way round"):
            self.remove(u, f)
            self.remove(f, u)
            (stranger,) = self.data.user_ids(1)
            self.remove(u, stranger)
        with self.check(ADD, "friends can be added again after a removal"):
            self.add(f, u)
            self.both_ways(u, f, True)
        with self.check(LIST, "an id that is not a user id is 400"):
            for raw in NOT_PATH_IDS:
                bad_request(self.svc.get(f"/v1/friends/{raw}"), f"userId {raw}")
        with self.check(REMOVE, "an id that is not a user id is 400"):
            for raw in NOT_PATH_IDS:
                bad_request(self.svc.delete(f"/v1/friends/{raw}/{u}"), f"userId {raw}")
                bad_request(self.svc.delete(f"/v1/friends/{u}/{raw}"), f"friendId {raw}")
        self.secret_required(LIST, "GET", f"/v1/friends/{u}")
        self.secret_required(ADD, "POST", "/v1/friends", json_body={"userId": u, "friendId": g})
        self.secret_required(REMOVE, "DELETE", f"/v1/friends/{u}/{g}")
        with contextlib.suppress(CheckFailed):      # tidy up: a live service keeps no test friendships
            for other in (f, g):
                self.svc.delete(f"/v1/friends/{u}/{other}")


def ok_true(answer: dict) -> None:
    require(answer.get("ok") is True, f"expected {{ok: true}}, got {short(answer)}")
