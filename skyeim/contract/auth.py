"""The Auth service's checks (PROTOCOL.md section 6, "Auth service").

Registering users costs the service a password hash each, and users cannot be
deleted through the contract: these checks register three (named
``ct_<run>_<random>``) and try a few names that must be refused.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import string
from typing import Any

from skyeim.contract.runner import (CheckFailed, NotRun, Suite, bad_request, json_list, lenient,
                                    lenient_id, ms_timestamp, ok, refused, require, short, user_id,
                                    without)

REGISTER = "POST /v1/users"
LOGIN = "POST /v1/tokens"
LOOKUP = "GET /v1/users"
NAME_CHARS = string.ascii_letters + string.digits + "_.-"
SECRET_KEYS = re.compile(r"pass|hash|salt|secret|digest|credential", re.I)


class AuthChecks(Suite):
    service = "auth"
    endpoints = (REGISTER, LOGIN, LOOKUP)

    def register(self, username: str, password: str) -> int:
        return self.registered(self.svc.post("/v1/users", {"username": username, "password": password}))

    def registered(self, answer) -> int:
        """The userId of a 200 answer to POST /v1/users."""
        user = ok(answer).get("userId")
        self.shaped(REGISTER, user_id, user, "userId")
        user = lenient_id(user)
        require(isinstance(user, int), f"userId must be a user id, got {short(user)}")
        return user

    def register_fresh(self, make_name, password: str) -> tuple[str, int]:
        """A name from ``make_name()`` that is still free (short ones may be taken)."""
        for _ in range(5):
            name = make_name()
            answer = self.svc.post("/v1/users", {"username": name, "password": password})
            if answer.status != 409:
                return name, self.registered(answer)
        raise CheckFailed("five random names in a row were taken (409)")

    def login(self, username: str, password: str):
        return self.svc.post("/v1/tokens", {"username": username, "password": password})

    def logged_in(self, answer) -> dict:
        """A 200 answer to POST /v1/tokens, read leniently."""
        body = ok(answer)
        self.shaped(LOGIN, token_shape, body)
        return lenient(body)

    def lookup(self, **params: str) -> list[dict]:
        answer = ok(self.svc.get("/v1/users", params=params))
        users = json_list(answer.get("users"), "users")
        require(all(isinstance(u, dict) for u in users), f"users must be objects: {short(users)}")
        for i, u in enumerate(users):
            self.shaped(LOOKUP, user_id, u.get("userId"), f"users[{i}].userId")
            require(isinstance(u.get("username"), str), f"users[{i}].username must be a string")
        return lenient(users)

    def checks(self) -> None:
        mixed = _mixed_case(self.data.username("Ct"))
        pw_short = "pässwörd"                               # 8 code points, 10 UTF-8 bytes
        pw_long = ("ü😀" * 64)                              # 128 code points, 384 bytes
        users: dict[str, tuple[str, int, str]] = {}         # role -> (name, id, password)
        with self.check(REGISTER, "registers a user and answers {userId}, a JSON integer"):
            users["mixed"] = (mixed, self.register(mixed, pw_short), pw_short)
        with self.check(REGISTER, "accepts usernames of 3 and of 32 characters of [A-Za-z0-9_.-] "
                                  "and passwords of 8 and of 128 characters (code points)"):
            name, uid = self.register_fresh(
                lambda: "".join(secrets.choice(NAME_CHARS) for _ in range(3)), pw_long)
            users["three"] = (name, uid, pw_long)
            long_name = (self.data.username("ct32") + "x" * 32)[:32]
            users["long"] = (long_name, self.register(long_name, "12345678"), "12345678")
        with self.check(REGISTER, "a taken username is 409 conflict, also in another case"):
            if "mixed" not in users:
                raise NotRun("registering failed")
            for name in (mixed, mixed.lower(), mixed.upper()):
                refused(self.svc.post("/v1/users", {"username": name, "password": "another pw 1"}),
                        409, "conflict")
        with self.check(REGISTER, "a username outside 3 to 32 characters of [A-Za-z0-9_.-] is 400"):
            for case, name in (("2 characters", "ab"), ("33 characters", "c" * 33), ("empty", ""),
                               ("a space", "has space"), ("a non-ASCII letter", "ümlaut"),
                               ("an @", "me@example"), ("a slash", "a/b")):
                bad_request(self.svc.post("/v1/users", {"username": name, "password": "12345678"}),
                            f"username with {case}")
        with self.check(REGISTER, "a password under 8 or over 128 characters (code points) is 400"):
            name = self.data.username()
            for case, password in (("7 characters", "1234567"), ("129 characters", "x" * 129),
                                   ("4 emoji (16 bytes)", "😀" * 4), ("empty", "")):
                bad_request(self.svc.post("/v1/users", {"username": name, "password": password}),
                            f"password of {case}")
            require(not self.lookup(username=name), "a refused registration created the user")
        with self.check(REGISTER, "a missing or non-string username or password is 400"):
            good = {"username": self.data.username(), "password": "12345678"}
            for key in ("username", "password"):
                bad_request(self.svc.post("/v1/users", without(good, key)), f"{key} missing")
                for value in (12345678, None, ["x"]):
                    bad_request(self.svc.post("/v1/users", {**good, key: value}), f"{key} {short(value)}")
        self.not_json_refused(REGISTER, "/v1/users")
        self.secret_required(REGISTER, "POST", "/v1/users",
                             json_body={"username": self.data.username(), "password": "12345678"})

        with self.check(LOGIN, "answers {token, userId, expiresAt (ms)} for the right password"):
            if "mixed" not in users:
                raise NotRun("registering failed")
            for name, uid, password in users.values():
                answer = self.logged_in(self.login(name, password))
                require(answer.get("userId") == uid, f"userId is {short(answer.get('userId'))}, "
                                                     f"registered as {uid}")
        with self.check(LOGIN, "the token is an HS256 JWT with userId and exp (seconds) = expiresAt"
                               + (", signed with --access-secret" if self.access_secret else "")):
            if "mixed" not in users:
                raise NotRun("registering failed")
            name, uid, password = users["mixed"]
            answer = self.logged_in(self.login(name, password))
            header, claims = self.jwt_parts(answer.get("token"))
            require(header.get("alg") == "HS256", f"the token's alg is {short(header.get('alg'))}")
            require(claims.get("userId") == uid and type(claims.get("userId")) is int,
                    f"the token's userId claim is {short(claims.get('userId'))}, expected {uid}")
            exp = claims.get("exp")
            expires = answer.get("expiresAt")
            require(type(exp) is int and type(expires) is int and abs(exp * 1000 - expires) <= 1000,
                    f"exp {short(exp)} (seconds) does not match expiresAt {short(expires)} (ms)")
        with self.check(LOGIN, "the username matches without regard to case"):
            if "mixed" not in users:
                raise NotRun("registering failed")
            name, uid, password = users["mixed"]
            for variant in (name.lower(), name.upper()):
                answer = self.logged_in(self.login(variant, password))
                require(answer.get("userId") == uid, f"{variant} logged in as {short(answer.get('userId'))}")
        with self.check(LOGIN, "a wrong password and an unknown user are both 401 unauthorized, alike"):
            if "mixed" not in users:
                raise NotRun("registering failed")
            wrong = self.login(users["mixed"][0], pw_short + "x")
            unknown = self.login(self.data.username("nobody"), pw_short)
            refused(wrong, 401, "unauthorized")
            refused(unknown, 401, "unauthorized")
            require(wrong.body == unknown.body,
                    f"the answers differ, telling who exists: wrong password {short(wrong.body)}, "
                    f"unknown user {short(unknown.body)}")
        with self.check(LOGIN, "a missing or non-string username or password is 400"):
            for body, case in (({"username": "someone"}, "password missing"),
                               ({"password": "12345678"}, "username missing"),
                               ({"username": 5, "password": "12345678"}, "username a number"),
                               ({"username": "someone", "password": None}, "password null")):
                bad_request(self.svc.post("/v1/tokens", body), case)
        self.not_json_refused(LOGIN, "/v1/tokens")
        self.secret_required(LOGIN, "POST", "/v1/tokens",
                             json_body={"username": mixed, "password": pw_short})

        with self.check(LOOKUP, "?ids= answers those users with their usernames as typed; "
                                "unknown ids are left out"):
            if len(users) != 3:
                raise NotRun("registering failed")
            (unknown_id,) = self.data.user_ids(1)
            ids = [uid for _, uid, _ in users.values()]
            got = self.lookup(ids=",".join(map(str, ids + [unknown_id])))
            want = sorted((uid, name) for name, uid, _ in users.values())
            require(sorted((u["userId"], u["username"]) for u in got) == want,
                    f"answered {short(got)}, expected {want}")
        with self.check(LOOKUP, "?username= finds the user in any case; an unknown name is an empty list"):
            if "mixed" not in users:
                raise NotRun("registering failed")
            name, uid, _ = users["mixed"]
            for variant in (name, name.lower(), name.upper()):
                got = self.lookup(username=variant)
                require([(u["userId"], u["username"]) for u in got] == [(uid, name)],
                        f"username={variant} answered {short(got)}, expected [({uid}, {name})]")
            require(self.lookup(username=self.data.username("nobody")) == [], "an unknown name was found")
        with self.check(LOOKUP, "never answers password material"):
            if len(users) != 3:
                raise NotRun("registering failed")
            answer = self.svc.get("/v1/users", params={"ids": ",".join(str(u[1]) for u in users.values())})
            for u in ok(answer).get("users") or []:
                keys = [k for k in u if SECRET_KEYS.search(k)]
                require(not keys, f"a user carries {keys}: {short(u)}")
            for _, _, password in users.values():
                require(password not in answer.text, "a password appears in the answer")
        with self.check(LOOKUP, "ids that are not user ids, or neither ids nor username, are 400"):
            for params, case in (({"ids": "abc"}, "ids=abc"), ({"ids": "0"}, "ids=0"),
                                 ({"ids": "1.5"}, "ids=1.5"), ({"ids": "1,x"}, "ids=1,x"), ({}, "no query")):
                bad_request(self.svc.get("/v1/users", params=params), case)
        self.secret_required(LOOKUP, "GET", "/v1/users", params={"username": mixed})

    def jwt_parts(self, token: Any) -> tuple[dict, dict]:
        """The header and claims of a JWT (the signature checked with --access-secret)."""
        require(isinstance(token, str) and token.count(".") == 2, f"the token is not a JWT: {short(token)}")
        head, body, signature = token.split(".")
        try:
            header, claims = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
                              for p in (head, body))
        except ValueError:
            raise CheckFailed(f"the token's parts are not base64url JSON: {short(token)}") from None
        require(isinstance(header, dict) and isinstance(claims, dict), "the token's parts are not objects")
        if self.access_secret:
            mac = hmac.new(self.access_secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
            expected = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
            require(hmac.compare_digest(expected, signature), "the token is not signed with --access-secret")
        return header, claims


def token_shape(answer: dict) -> None:
    """A login's answer: {token, userId, expiresAt}."""
    require(isinstance(answer.get("token"), str) and answer["token"],
            f"token must be a non-empty string: {short(answer)}")
    user_id(answer.get("userId"), "userId")
    ms_timestamp(answer.get("expiresAt"), "expiresAt", future=True)


def _mixed_case(name: str) -> str:
    return "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(name))
