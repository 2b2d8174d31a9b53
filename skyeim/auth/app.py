"""HTTP API of the Auth service (PROTOCOL.md section 6, "Auth service")."""
from __future__ import annotations

import re

from flask import Flask, request
from sqlalchemy.exc import IntegrityError

from skyeim import tokens
from skyeim.auth import passwords, store
from skyeim.config import AuthServiceConfig
from skyeim.db import Database
from skyeim.service import make_app, on_shutdown
from skyeim.web import ApiError, bad_request, json_body

USERNAME = re.compile(r"[A-Za-z0-9_.-]{3,32}")
MIN_PASSWORD, MAX_PASSWORD = 8, 128     # code points
MAX_LOOKUP_IDS = 200
_ID = re.compile(r"[0-9]{1,19}")        # ASCII only: str.isdigit() would take "²"


def create_app(config: AuthServiceConfig) -> Flask:
    app = make_app("auth", config)
    db = Database(config.database_url, store.metadata, pool_size=config.pool_size)
    on_shutdown(app, db.close)
    dummy_hash = passwords.make_dummy_hash()

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
        # No user can have a longer password: refuse without hashing, which
        # bounds the CPU one request may cost and says nothing about the user.
        if len(password) > MAX_PASSWORD:
            raise _bad_credentials()
        # A name outside the allowed pattern cannot exist; it takes the
        # unknown-user path without a database round trip.
        found = db.run(store.find_credentials, username) if USERNAME.fullmatch(username) else None
        if found is None:
            passwords.check_password(dummy_hash, password)   # same time as a real check
            raise _bad_credentials()
        if not passwords.check_password(found.password_hash, password):
            raise _bad_credentials()
        token, exp = tokens.issue(config.access_secret, found.user_id, config.access_expire)
        return {"token": token, "userId": found.user_id, "expiresAt": exp * 1000}

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
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:   # a lone surrogate, which JSON "\ud800" allows
        raise bad_request("password is not valid Unicode") from None
    return username, password


def _parse_ids(raw: str) -> list[int]:
    """'1,2,3' -> [1, 2, 3]; an empty string is an empty list."""
    parts = [p.strip() for p in raw.split(",")] if raw.strip() else []
    if len(parts) > MAX_LOOKUP_IDS:
        raise bad_request(f"at most {MAX_LOOKUP_IDS} ids")
    ids = []
    for part in parts:
        value = int(part) if _ID.fullmatch(part) else 0
        if not tokens.is_user_id(value):
            raise bad_request("ids must be integers from 1 to 2^63-1, separated by commas")
        ids.append(value)
    return sorted(set(ids))


def _name_taken() -> ApiError:
    return ApiError(409, "conflict", "username is taken")


def _bad_credentials() -> ApiError:
    return ApiError(401, "unauthorized", "wrong username or password")
