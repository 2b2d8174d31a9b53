"""The client REST API for the conversation list (docs/protocol.md "Conversation list"),
with the caller's token as for /api/friends:

  GET  /api/conversations?limit=&before=    -> {items, nextCursor}
  POST /api/conversations/mute  {peerId | groupId, muted: bool}  -> {peerId | groupId, muted, pinned}
  POST /api/conversations/pin   {peerId | groupId, pinned: bool} -> {peerId | groupId, muted, pinned}

A Message service without the conversation endpoints (optional, PROTOCOL.md 9.1)
gets 501 not_supported.
"""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from skyeim.gateway.features.conversations import MAX_CURSOR, MAX_PAGE, NotSupported
from skyeim.gateway.frames.codec import FrameError
from skyeim.gateway.rest.caller import caller_id, current_gateway
from skyeim.protocol import ErrorCode, is_positive_id, is_user_id
from skyeim.web import ApiError, bad_request, json_body, limit_arg

conversations_api = Blueprint("conversations_api", __name__, url_prefix="/api/conversations")

_NOT_SUPPORTED = "this server's Message service has no conversation list"


@conversations_api.get("")
def list_conversations():
    uid, gateway = caller_id(), current_gateway()
    limit = min(limit_arg(request.args.get("limit")), MAX_PAGE)
    before = request.args.get("before") or None
    if before is not None and len(before) > MAX_CURSOR:
        raise bad_request("before must be a nextCursor of an earlier page")
    try:
        return jsonify(gateway.conversations.page(uid, before, limit))
    except NotSupported:
        raise ApiError(501, ErrorCode.NOT_SUPPORTED, _NOT_SUPPORTED) from None


def _set(field: str):
    uid, gateway, body = caller_id(), current_gateway(), json_body()
    peer, group = body.get("peerId"), body.get("groupId")
    if (peer is None) == (group is None):
        raise bad_request("give exactly one of peerId and groupId")
    if peer is not None:
        if not is_user_id(peer) or peer == uid:
            raise bad_request("peerId must be the user id of another user")
        target = {"peerId": peer}
    else:
        if not is_positive_id(group):
            raise bad_request("groupId must be an integer group id")
        target = {"groupId": group}
    if not isinstance(body.get(field), bool):
        raise bad_request(f"{field} must be true or false")
    try:
        return jsonify(gateway.conversations.set_flags(uid, target, {field: body[field]}))
    except NotSupported:
        raise ApiError(501, ErrorCode.NOT_SUPPORTED, _NOT_SUPPORTED) from None
    except FrameError as e:        # not a member of the group
        status = 403 if e.code == ErrorCode.FORBIDDEN else 503
        raise ApiError(status, e.code, e.message) from None


@conversations_api.post("/mute")
def mute():
    return _set("muted")


@conversations_api.post("/pin")
def pin():
    return _set("pinned")
