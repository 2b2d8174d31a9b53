"""HTTP API of the Friend service (PROTOCOL.md section 6, "Friend service")."""
from __future__ import annotations

import re

from flask import Flask

from skyeim.config import ServiceConfig
from skyeim.db import Database
from skyeim.friend import store
from skyeim.service import make_app, on_shutdown
from skyeim.tokens import is_user_id
from skyeim.web import bad_request, json_body

_DIGITS = re.compile(r"[0-9]{1,19}")   # ASCII only: str.isdigit() would take "²"


def create_app(config: ServiceConfig) -> Flask:
    app = make_app("friend", config)
    db = Database(config.database_url, store.metadata, pool_size=config.pool_size)
    on_shutdown(app, db.close)

    @app.get("/v1/friends/<user_id>")
    def get_friends(user_id: str):
        uid = _path_user_id(user_id, "userId")
        return {"friends": db.run(store.list_friends, uid)}

    @app.post("/v1/friends")
    def add_friend():
        body = json_body()
        uid = _body_user_id(body, "userId")
        fid = _body_user_id(body, "friendId")
        if uid == fid:
            raise bad_request("a user cannot befriend themselves")
        db.run(store.add_friendship, uid, fid)
        return {"ok": True}

    @app.delete("/v1/friends/<user_id>/<friend_id>")
    def remove_friend(user_id: str, friend_id: str):
        uid = _path_user_id(user_id, "userId")
        fid = _path_user_id(friend_id, "friendId")
        db.run(store.remove_friendship, uid, fid)
        return {"ok": True}

    return app


def _body_user_id(body: dict, key: str) -> int:
    value = body.get(key)
    if not is_user_id(value):
        raise bad_request(f"{key} must be an integer from 1 to 2^63-1")
    return value


def _path_user_id(raw: str, key: str) -> int:
    value = int(raw) if _DIGITS.fullmatch(raw) else 0
    if not is_user_id(value):
        raise bad_request(f"{key} must be an integer from 1 to 2^63-1")
    return value
