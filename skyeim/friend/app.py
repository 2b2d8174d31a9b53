"""HTTP API of the Friend service (PROTOCOL.md section 6, "Friend service")."""
from __future__ import annotations

from flask import Flask

from skyeim.config import ServiceConfig
from skyeim.db import Database
from skyeim.friend import groups_api, relations, relations_api, store
from skyeim.service import make_app, on_shutdown
from skyeim.protocol import ErrorCode
from skyeim.web import ApiError, bad_request, body_user_id, json_body, path_user_id, user_id_list


MAX_USERS_PER_CALL = 1000     # users in one /v1/friends/lists call


def create_app(config: ServiceConfig) -> Flask:
    app = make_app("friend", config)
    db = Database(config.database_url, store.metadata, pool_size=config.pool_size)
    on_shutdown(app, db.close)

    @app.get("/v1/friends/<user_id>")
    def get_friends(user_id: str):
        uid = path_user_id(user_id, "userId")
        return {"friends": db.run(store.list_friends, uid)}

    @app.post("/v1/friends/lists")
    def get_friend_lists():
        """Several users' friend lists in one request: {"userIds": [...]} ->
        {"friends": [[...], ...]} in the same order."""
        uids = user_id_list(json_body(), "userIds", MAX_USERS_PER_CALL)
        lists = db.run(store.list_friends_of_many, uids)
        return {"friends": [lists[uid] for uid in uids]}

    @app.post("/v1/friends")
    def add_friend():
        body = json_body()
        uid = body_user_id(body, "userId")
        fid = body_user_id(body, "friendId")
        if uid == fid:
            raise bad_request("a user cannot befriend themselves")
        try:
            db.run(relations.befriend, uid, fid)      # refused while a block stands
        except relations.Blocked as e:
            raise ApiError(409, ErrorCode.CONFLICT, str(e)) from None
        return {"ok": True}

    @app.delete("/v1/friends/<user_id>/<friend_id>")
    def remove_friend(user_id: str, friend_id: str):
        uid = path_user_id(user_id, "userId")
        fid = path_user_id(friend_id, "friendId")
        db.run(store.remove_friendship, uid, fid)
        return {"ok": True}

    groups_api.add_routes(app, db)
    relations_api.add_routes(app, db)
    return app
