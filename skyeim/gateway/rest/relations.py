"""The client REST API of friend requests and blocks (docs/protocol.md "Friend
requests and blocking"), with the caller's token as for /api/friends:

  GET    /api/friends/requests                   -> {incoming: [{userId, username, createdAt}],
                                                     outgoing: [...]}
  POST   /api/friends/requests/<userId>/accept   -> {ok}   (friend_added to both)
  POST   /api/friends/requests/<userId>/decline  -> {ok}
  GET    /api/blocks                             -> {blocked: [{userId, username, createdAt}]}
  POST   /api/blocks        {userId}             -> {ok}   (unfriends)
  DELETE /api/blocks/<userId>                    -> {ok}

POST /api/friends (rest/api.py) makes the request when Friends.RequireAcceptance is on.
"""
from __future__ import annotations

from flask import Blueprint, jsonify

from skyeim.gateway.features.relations import RelationError, Unsupported
from skyeim.gateway.rest.caller import caller_id, current_gateway
from skyeim.protocol import ErrorCode, is_user_id
from skyeim.web import ApiError, bad_request, json_body, positive_int_arg

relations_api = Blueprint("relations_api", __name__, url_prefix="/api")

_STATUS_CODES = {404: ErrorCode.NOT_FOUND, 409: ErrorCode.CONFLICT}


@relations_api.app_errorhandler(RelationError)
def _refused(e: RelationError):
    return jsonify(code=_STATUS_CODES.get(e.status, ErrorCode.BAD_REQUEST),
                   message=e.message), e.status


@relations_api.app_errorhandler(Unsupported)
def _unsupported(e: Unsupported):
    return jsonify(code=ErrorCode.NOT_SUPPORTED, message=str(e)), 501


def _other(raw, caller: int, in_path: bool = True) -> int:
    """Another user's id: from a path segment (digits) or a JSON body (an integer)."""
    uid = (positive_int_arg(raw) if raw.isascii() else None) if in_path else raw
    if not is_user_id(uid):
        raise bad_request("userId must be an integer user id")
    if uid == caller:
        raise bad_request("userId must be another user")
    return uid


def _existing(gateway, uid: int) -> int:
    if not gateway.backends.auth.users_by_id([uid]):
        raise ApiError(404, ErrorCode.NOT_FOUND, "no such user")
    return uid


@relations_api.get("/friends/requests")
def list_requests():
    return jsonify(current_gateway().relations.requests(caller_id()))


@relations_api.post("/friends/requests/<user_id>/accept")
def accept(user_id: str):
    uid = caller_id()
    current_gateway().relations.accept(uid, _other(user_id, uid))
    return jsonify(ok=True)


@relations_api.post("/friends/requests/<user_id>/decline")
def decline(user_id: str):
    uid = caller_id()
    current_gateway().relations.decline(uid, _other(user_id, uid))
    return jsonify(ok=True)


@relations_api.get("/blocks")
def list_blocks():
    return jsonify(blocked=current_gateway().relations.blocks(caller_id()))


@relations_api.post("/blocks")
def block():
    uid, gateway = caller_id(), current_gateway()
    gateway.relations.block(uid, _existing(gateway, _other(json_body().get("userId"), uid, in_path=False)))
    return jsonify(ok=True)


@relations_api.delete("/blocks/<user_id>")
def unblock(user_id: str):
    uid = caller_id()
    current_gateway().relations.unblock(uid, _other(user_id, uid))
    return jsonify(ok=True)
