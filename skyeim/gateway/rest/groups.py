"""The client REST API for groups (docs/protocol.md "Groups"), with the caller's token
as for /api/friends:

  GET  /api/groups                      -> {groups: [{groupId, name, ownerId, createdAt, role,
                                                       readSeq, lastSeq, mentions?}]}
  POST /api/groups                      {name, memberIds?} -> {groupId, name, ownerId, createdAt,
                                                               memberCount}
  GET  /api/groups/<id>/members?afterUserId=&limit=  -> {members: [{userId, username, role,
                                                       readSeq, online}], hasMore}
  POST /api/groups/<id>/members         {userIds} -> {added: [ids]}
  POST /api/groups/<id>/leave           -> {left, ownerId}
  GET  /api/groups/<id>/messages?beforeSeq=&limit=   -> {messages, hasMore}, newest first
administration (docs/protocol.md "Group administration"; 403 for a role not allowed):
  PUT    /api/groups/<id>/members/<userId>/role  {role: admin|member} -> {userId, role, changed}
  DELETE /api/groups/<id>/members/<userId>       -> {userId, kicked}
  POST   /api/groups/<id>/members/<userId>/mute  {seconds} (0 lifts it) -> {userId, mutedUntil}
  PATCH  /api/groups/<id>                        {name} -> the group
  DELETE /api/groups/<id>                        -> {dismissed, memberIds}
"""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from skyeim.gateway.frames.codec import FrameError
from skyeim.gateway.rest.caller import caller_id, current_gateway
from skyeim.protocol import ErrorCode, is_positive_id, is_user_id
from skyeim.web import (ApiError, bad_request, json_body, limit_arg, path_user_id,
                        positive_int_arg)

MAX_MUTE_SECONDS = 366 * 86400   # as the Friend service (skyeim/friend/groups.py)
MAX_NAME = 64

MEMBERS_PAGE_MAX = 1000       # members (with names) in one /members page

groups_api = Blueprint("groups_api", __name__, url_prefix="/api/groups")


def _caller_and_gateway():
    return caller_id(), current_gateway()


def _group_id(raw: str) -> int:
    gid = positive_int_arg(raw) if raw.isascii() else None
    if not is_positive_id(gid):
        raise bad_request("the group id must be an integer")
    return gid


def _member(gateway, gid: int, uid: int) -> frozenset[int]:
    try:
        return gateway.groups.member_ids(gid, uid)
    except FrameError as e:
        if e.code == ErrorCode.FORBIDDEN:
            raise ApiError(403, ErrorCode.FORBIDDEN, e.message) from None
        raise ApiError(503, ErrorCode.UNAVAILABLE, e.message) from None


def _known_users(gateway, ids) -> list[int]:
    if not isinstance(ids, list) or not all(is_user_id(i) for i in ids):
        raise bad_request("userIds must be a list of integer user ids")
    ids = list(dict.fromkeys(ids))
    if len(ids) > 1000:
        raise bad_request("at most 1000 user ids at once")
    known = {u["userId"] for u in gateway.backends.auth.users_by_id(ids)}
    if set(ids) - known:
        raise ApiError(404, ErrorCode.NOT_FOUND, "no such user")
    return ids


@groups_api.get("")
def list_groups():
    uid, gateway = _caller_and_gateway()
    mine = gateway.backends.friend.groups_of(uid)
    last = gateway.backends.message.group_last([g["groupId"] for g in mine])
    mentions = gateway.backends.message.group_mentions(uid, {
        g["groupId"]: g["readSeq"] for g in mine if last.get(g["groupId"], 0) > g["readSeq"]})
    return jsonify(groups=[{**g, "lastSeq": last.get(g["groupId"], 0),
                            **({"mentions": mentions[g["groupId"]]}
                               if mentions.get(g["groupId"]) else {})} for g in mine])


@groups_api.post("")
def create_group():
    uid, gateway = _caller_and_gateway()
    body = json_body()
    members = _known_users(gateway, body.get("memberIds") or [])
    return jsonify(gateway.backends.friend.create_group(uid, body.get("name"), members))


@groups_api.get("/<group_id>/members")
def list_members(group_id: str):
    uid, gateway = _caller_and_gateway()
    gid = _group_id(group_id)
    _member(gateway, gid, uid)
    params = {"limit": min(limit_arg(request.args.get("limit")), MEMBERS_PAGE_MAX)}
    after = positive_int_arg(request.args.get("afterUserId"))
    if after:
        params["afterUserId"] = after
    body = gateway.backends.friend.call("GET", f"/v1/groups/{gid}/members", params=params)
    page = body.get("members", [])
    ids = [m["userId"] for m in page]
    names = {u["userId"]: u["username"] for u in gateway.backends.auth.users_by_id(ids)}
    online = set(gateway.hub.online_among(ids))
    return jsonify(members=[{**m, "username": names.get(m["userId"]), "online": m["userId"] in online}
                            for m in page], hasMore=bool(body.get("hasMore")))


@groups_api.post("/<group_id>/members")
def invite(group_id: str):
    uid, gateway = _caller_and_gateway()
    gid = _group_id(group_id)
    ids = _known_users(gateway, json_body().get("userIds"))
    if not ids:
        raise bad_request("userIds must name at least one user")
    added = gateway.backends.friend.invite(gid, uid, ids)
    gateway.groups.joined(gid, uid, added)
    return jsonify(added=added)


@groups_api.post("/<group_id>/leave")
def leave(group_id: str):
    uid, gateway = _caller_and_gateway()
    gid = _group_id(group_id)
    result = gateway.backends.friend.leave(gid, uid)
    gateway.groups.left(gid, uid, result)
    return jsonify(result)


@groups_api.get("/<group_id>/messages")
def history(group_id: str):
    uid, gateway = _caller_and_gateway()
    gid = _group_id(group_id)
    _member(gateway, gid, uid)
    body = gateway.backends.message.group_history(
        gid, positive_int_arg(request.args.get("beforeSeq")), limit_arg(request.args.get("limit")))
    return jsonify(messages=body.get("messages", []), hasMore=bool(body.get("hasMore")))


# -- administration -----------------------------------------------------------------------

def _target(raw: str) -> int:
    return path_user_id(raw, "userId")


@groups_api.put("/<group_id>/members/<user_id>/role")
def set_role(group_id: str, user_id: str):
    uid, gateway = _caller_and_gateway()
    gid, target = _group_id(group_id), _target(user_id)
    role = json_body().get("role")
    if role not in ("admin", "member"):
        raise bad_request("role must be admin or member")
    return jsonify(gateway.groups.administer(gid, uid, "role", userId=target, role=role))


@groups_api.delete("/<group_id>/members/<user_id>")
def kick(group_id: str, user_id: str):
    uid, gateway = _caller_and_gateway()
    gid, target = _group_id(group_id), _target(user_id)
    return jsonify(gateway.groups.administer(gid, uid, "kick", userId=target))


@groups_api.post("/<group_id>/members/<user_id>/mute")
def mute(group_id: str, user_id: str):
    uid, gateway = _caller_and_gateway()
    gid, target = _group_id(group_id), _target(user_id)
    seconds = json_body().get("seconds")
    if type(seconds) is not int or not 0 <= seconds <= MAX_MUTE_SECONDS:
        raise bad_request(f"seconds must be an integer from 0 (unmute) to {MAX_MUTE_SECONDS}")
    return jsonify(gateway.groups.administer(gid, uid, "mute" if seconds else "unmute",
                                             userId=target, seconds=seconds))


@groups_api.patch("/<group_id>")
def rename(group_id: str):
    uid, gateway = _caller_and_gateway()
    gid = _group_id(group_id)
    name = json_body().get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise bad_request(f"name must be a string of 1 to {MAX_NAME} characters")
    return jsonify(gateway.groups.administer(gid, uid, "rename", name=name))


@groups_api.delete("/<group_id>")
def dismiss(group_id: str):
    uid, gateway = _caller_and_gateway()
    gid = _group_id(group_id)
    return jsonify(gateway.groups.administer(gid, uid, "dismiss"))
