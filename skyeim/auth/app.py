"""HTTP API of the Auth service (PROTOCOL.md section 6, "Auth service")."""
from __future__ import annotations

import logging
import re

from flask import Flask, request
from sqlalchemy.exc import IntegrityError

from skyeim import tokens
from skyeim.auth import passwords, store
from skyeim.auth.limits import LoginLimiter
from skyeim.config import AuthServiceConfig
from skyeim.db import Database, now_ms
from skyeim.protocol import ErrorCode, is_user_id
from skyeim.service import make_app, on_shutdown
from skyeim.web import (ApiError, bad_request, body_user_id, client_address, json_body,
                        limit_arg, positive_int_arg)

log = logging.getLogger(__name__)

USERNAME = re.compile(r"[A-Za-z0-9_.-]{3,32}")
MIN_PASSWORD, MAX_PASSWORD = 8, 128     # code points
MAX_LOOKUP_IDS = 200
_ID = re.compile(r"[0-9]{1,19}")        # ASCII only: str.isdigit() would take "²"


def create_app(config: AuthServiceConfig) -> Flask:
    app = make_app("auth", config)
    db = Database(config.database_url, store.metadata, pool_size=config.pool_size)
    on_shutdown(app, db.close)
    dummy_hash = passwords.make_dummy_hash()
    limiter = LoginLimiter(config.login_limit)
    if not config.internal_secret:
        log.warning("InternalSecret is empty: the gateway's X-Client-Address is not trusted, "
                    "so every login through a gateway counts against the gateway's address")

    def check_password_of(username: str, password: str) -> store.Credentials:
        """The user's credentials when ``password`` is right; else 401 (or 429 when
        this username or client address failed too often), counted as a failure."""
        address = client_address(config.internal_secret)
        wait = limiter.retry_after(username, address)
        if wait:
            raise ApiError(429, ErrorCode.RATE_LIMITED, "too many failed attempts; retry later",
                           {"Retry-After": str(wait)})
        # No user can have a longer password: refuse without hashing, which
        # bounds the CPU one request may cost and says nothing about the user.
        found = None
        if len(password) <= MAX_PASSWORD:
            # A name outside the allowed pattern cannot exist; it takes the
            # unknown-user path without a database round trip.
            found = db.run(store.find_credentials, username) if USERNAME.fullmatch(username) else None
            if found is None:
                passwords.check_password(dummy_hash, password)   # same time as a real check
            elif not passwords.check_password(found.password_hash, password):
                found = None
        if found is None:
            limiter.failed(username, address)
            raise _bad_credentials()
        limiter.succeeded(username)
        return found

    @app.post("/v1/users")
    def register():
        username, password = _credentials(json_body())
        if not USERNAME.fullmatch(username):
            raise bad_request("username must be 3 to 32 characters from A-Z a-z 0-9 _ . -")
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise bad_request(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
        # A cheap check first spares the hashing for a name that is taken; the
        # UNIQUE constraint still settles two registrations that race.
        if db.run(store.find_credentials, username) is not None:
            raise _name_taken()
        password_hash = passwords.hash_password(password)
        try:
            user_id = db.run(store.create_user, username, password_hash)
        except IntegrityError:
            raise _name_taken() from None
        return {"userId": user_id}

    @app.post("/v1/tokens")
    def login():
        username, password = _credentials(json_body())
        found = check_password_of(username, password)
        token, exp = tokens.issue(config.access_secret, found.user_id, config.access_expire,
                                  gen=found.gen)
        return {"token": token, "userId": found.user_id, "expiresAt": exp * 1000}

    @app.post("/v1/password")
    def change_password():
        body = json_body()
        username, old, new = body.get("username"), body.get("oldPassword"), body.get("newPassword")
        if not all(isinstance(v, str) for v in (username, old, new)):
            raise bad_request("username, oldPassword and newPassword must be strings")
        for password in (old, new):
            _unicode(password)
        if not MIN_PASSWORD <= len(new) <= MAX_PASSWORD:
            raise bad_request(f"newPassword must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
        found = check_password_of(username, old)
        new_hash = passwords.hash_password(new)
        gen, _ = _retry_race(db, store.change_password, found.user_id, new_hash)
        log.info("user=%s password changed: tokens before gen %s revoked", found.user_id, gen)
        return {"ok": True}

    @app.post("/v1/revocations")
    def revoke():
        """Revoke every token of a user issued so far (an operator's or a service's call)."""
        user_id = body_user_id(json_body(), "userId")
        if not db.run(store.user_exists, user_id):
            raise ApiError(404, ErrorCode.NOT_FOUND, "no such user")
        gen, at = _retry_race(db, store.revoke, user_id)
        log.info("user=%s tokens revoked: gen %s", user_id, gen)
        return {"userId": user_id, "gen": gen, "revokedAt": at}

    @app.get("/v1/revocations")
    def revocations():
        """What gateways poll: generations changed since ``since`` (ms, inclusive;
        after ``afterUserId`` within that ms). ``now`` is this service's clock,
        taken before the query: the next poll may start a little before it."""
        now = now_ms()
        since = request.args.get("since", "0")
        since = 0 if since == "0" else positive_int_arg(since) or 0
        after = positive_int_arg(request.args.get("afterUserId"))
        limit = limit_arg(request.args.get("limit"))
        rows = db.run(store.revocations_since, since, after, limit + 1)
        return {"revocations": rows[:limit], "hasMore": len(rows) > limit, "now": now}

    @app.get("/v1/users")
    def lookup():
        ids, username = request.args.get("ids"), request.args.get("username")
        if (ids is None) == (username is None):
            raise bad_request("give exactly one of ids or username")
        if ids is not None:
            wanted = _parse_ids(ids)
            users = db.run(store.find_by_ids, wanted) if wanted else []
        else:
            users = db.run(store.find_by_username, username) if USERNAME.fullmatch(username) else []
        return {"users": users}

    return app


def _credentials(body: dict) -> tuple[str, str]:
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise bad_request("username and password must be strings")
    _unicode(password)
    return username, password


def _unicode(password: str) -> None:
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:   # a lone surrogate, which JSON "\ud800" allows
        raise bad_request("password is not valid Unicode") from None


def _retry_race(db: Database, fn, *args):
    """Run ``fn`` again once when a concurrent first revocation of the same user won."""
    try:
        return db.run(fn, *args)
    except IntegrityError:
        return db.run(fn, *args)


def _parse_ids(raw: str) -> list[int]:
    """'1,2,3' -> [1, 2, 3]; an empty string is an empty list."""
    parts = [p.strip() for p in raw.split(",")] if raw.strip() else []
    if len(parts) > MAX_LOOKUP_IDS:
        raise bad_request(f"at most {MAX_LOOKUP_IDS} ids")
    ids = []
    for part in parts:
        value = int(part) if _ID.fullmatch(part) else 0
        if not is_user_id(value):
            raise bad_request("ids must be integers from 1 to 2^63-1, separated by commas")
        ids.append(value)
    return sorted(set(ids))


def _name_taken() -> ApiError:
    return ApiError(409, ErrorCode.CONFLICT, "username is taken")


def _bad_credentials() -> ApiError:
    return ApiError(401, ErrorCode.UNAUTHORIZED, "wrong username or password")
