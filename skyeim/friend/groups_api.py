"""HTTP API of the groups, in the relations (Friend) service (docs/protocol.md "Groups").

  POST /v1/groups                      {ownerId, name, memberIds?} -> the group + memberCount
  GET  /v1/groups?userId=              -> {groups: [{groupId, name, ownerId, createdAt, role, readSeq}]}
  POST /v1/groups/lists                {userIds} -> {groups: [[...], ...]}, the same for many users
  GET  /v1/groups/<id>/members?afterUserId=&limit=   -> {members: [{userId, role, readSeq}], hasMore}
  POST /v1/groups/<id>/members         {byUserId, userIds} -> {added: [ids]}  (any member invites)
  POST /v1/groups/<id>/leave           {userId} -> {left, ownerId}
  POST /v1/groups/<id>/read            {userId, seq} -> {readSeq, moved}
administration (docs/protocol.md "Group administration"; 403 for a role not allowed):
  POST /v1/groups/<id>/role            {byUserId, userId, role: admin|member} -> {userId, role, changed}
  POST /v1/groups/<id>/kick            {byUserId, userId} -> {userId, kicked}
  POST /v1/groups/<id>/mute            {byUserId, userId, seconds} -> {userId, mutedUntil}
  POST /v1/groups/<id>/rename          {byUserId, name} -> the group
  POST /v1/groups/<id>/dismiss         {byUserId} -> {dismissed, memberIds}
"""
from __future__ import annotations

from flask import Flask, request

from skyeim.db import Database
from skyeim.friend import groups as store
from skyeim.protocol import ErrorCode
from skyeim.web import (ApiError, bad_request, body_user_id, json_body, path_user_id,
                        positive_int_arg, user_id_list)

MAX_NAME = 64
MAX_IDS_PER_CALL = 1000       # userIds / memberIds in one call
MAX_MEMBERS_PAGE = 10_000     # members in one page: the gateway's fan-out list of a big group


def _name(value) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise bad_request(f"name must be a string of 1 to {MAX_NAME} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("name must be valid Unicode") from None
    if "\x00" in value:
        raise bad_request("name must not contain NUL")
    return value


def _run(db: Database, fn, *args):
    try:
        return db.run(fn, *args)
    except store.NotFound as e:
        raise ApiError(404, ErrorCode.NOT_FOUND, str(e)) from None
    except store.Forbidden as e:
        raise ApiError(403, ErrorCode.FORBIDDEN, str(e)) from None
    except store.TooMany as e:
        raise ApiError(409, ErrorCode.TOO_MANY_MEMBERS, str(e)) from None


def add_routes(app: Flask, db: Database) -> None:
    @app.post("/v1/groups")
    def create_group():
        body = json_body()
        owner = body_user_id(body, "ownerId")
        name = _name(body.get("name"))
        return _run(db, store.create_group, owner, name, user_id_list(body, "memberIds", MAX_IDS_PER_CALL, required=False))

    @app.get("/v1/groups")
    def list_groups():
        uid = positive_int_arg(request.args.get("userId"))
        if uid is None:
            raise bad_request("userId is required")
        return {"groups": _run(db, store.groups_of, path_user_id(str(uid), "userId"))}

    @app.post("/v1/groups/lists")
    def list_groups_of_many():
        uids = list(dict.fromkeys(user_id_list(json_body(), "userIds", MAX_IDS_PER_CALL)))
        found = _run(db, store.groups_of_many, uids)
        return {"groups": [found[u] for u in user_id_list(json_body(), "userIds", MAX_IDS_PER_CALL)]}

    @app.get("/v1/groups/<group_id>/members")
    def list_members(group_id: str):
        gid = path_user_id(group_id, "groupId")
        after = positive_int_arg(request.args.get("afterUserId")) or 0
        limit = positive_int_arg(request.args.get("limit")) or 1000
        page, more = _run(db, store.members, gid, after, min(limit, MAX_MEMBERS_PAGE))
        return {"members": page, "hasMore": more}

    @app.post("/v1/groups/<group_id>/members")
    def invite(group_id: str):
        gid, body = path_user_id(group_id, "groupId"), json_body()
        by = body_user_id(body, "byUserId")
        return {"added": _run(db, store.invite, gid, by, user_id_list(body, "userIds", MAX_IDS_PER_CALL))}

    @app.post("/v1/groups/<group_id>/leave")
    def leave(group_id: str):
        gid, body = path_user_id(group_id, "groupId"), json_body()
        return _run(db, store.leave, gid, body_user_id(body, "userId"))

    @app.post("/v1/groups/<group_id>/read")
    def read(group_id: str):
        gid, body = path_user_id(group_id, "groupId"), json_body()
        uid = body_user_id(body, "userId")
        seq = body.get("seq")
        if type(seq) is not int or not 0 <= seq < 2**63:
            raise bad_request("seq must be an integer from 0 to 2^63-1")
        return _run(db, store.mark_read, gid, uid, seq)

    @app.post("/v1/groups/<group_id>/role")
    def set_role(group_id: str):
        gid, body = path_user_id(group_id, "groupId"), json_body()
        by, uid = body_user_id(body, "byUserId"), body_user_id(body, "userId")
        role = body.get("role")
        if role not in ("admin", "member"):
            raise bad_request("role must be admin or member")
        return _run(db, store.set_role, gid, by, uid, role)

    @app.post("/v1/groups/<group_id>/kick")
    def kick(group_id: str):
        gid, body = path_user_id(group_id, "groupId"), json_body()
        return _run(db, store.kick, gid, body_user_id(body, "byUserId"),
                    body_user_id(body, "userId"))

    @app.post("/v1/groups/<group_id>/mute")
    def mute(group_id: str):
        gid, body = path_user_id(group_id, "groupId"), json_body()
        by, uid = body_user_id(body, "byUserId"), body_user_id(body, "userId")
        return _run(db, store.mute, gid, by, uid, mute_seconds(body.get("seconds")))

    @app.post("/v1/groups/<group_id>/rename")
    def rename(group_id: str):
        gid, body = path_user_id(group_id, "groupId"), json_body()
        return _run(db, store.rename, gid, body_user_id(body, "byUserId"), _name(body.get("name")))

    @app.post("/v1/groups/<group_id>/dismiss")
    def dismiss(group_id: str):
        gid, body = path_user_id(group_id, "groupId"), json_body()
        return _run(db, store.dismiss, gid, body_user_id(body, "byUserId"))


def mute_seconds(value) -> int:
    """A mute's length: an integer from 0 (lift the mute) to MAX_MUTE_SECONDS, else 400."""
    if type(value) is not int or not 0 <= value <= store.MAX_MUTE_SECONDS:
        raise bad_request(f"seconds must be an integer from 0 to {store.MAX_MUTE_SECONDS}")
    return value
