"""The client REST API (PROTOCOL.md section 7): register, login, password,
friends and history, for browser and app clients."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from skyeim.gateway.backends.clients import BackendRejected
from skyeim.gateway.rest.caller import caller_id, current_gateway
from skyeim.protocol import ErrorCode, is_user_id
from skyeim.web import ApiError, bad_request, json_body, limit_arg, positive_int_arg

api = Blueprint("api", __name__, url_prefix="/api")


def _client_address() -> str:
    """The caller's address for the Auth service's per-address login limit: the TCP
    peer's, or behind a proxy of ``WebSocket.TrustedProxies`` (nginx) the one it
    put in X-Forwarded-For, as for the connection limits."""
    limits = current_app.extensions.get("skyeim.limits")
    if limits is None:
        return request.remote_addr or ""
    return limits.client_ip(request.environ)


@api.post("/register")
def register():
    body = json_body()
    return jsonify(current_gateway().backends.auth.register(body.get("username"),
                                                            body.get("password")))


@api.post("/login")
def login():
    body = json_body()
    try:
        return jsonify(current_gateway().backends.auth.login(
            body.get("username"), body.get("password"), _client_address()))
    except BackendRejected as e:
        if e.status == 401:       # wrong password or unknown user: the caller's 401, not ours
            raise ApiError(401, ErrorCode.UNAUTHORIZED, e.message) from None
        raise


@api.post("/password")
def change_password():
    """{username, oldPassword, newPassword} -> {ok}; every token issued so far is revoked."""
    body = json_body()
    try:
        return jsonify(current_gateway().backends.auth.change_password(
            body.get("username"), body.get("oldPassword"), body.get("newPassword"),
            _client_address()))
    except BackendRejected as e:
        if e.status == 401:       # a wrong old password: the caller's 401
            raise ApiError(401, ErrorCode.UNAUTHORIZED, e.message) from None
        raise


@api.get("/friends")
def list_friends():
    uid, gateway = caller_id(), current_gateway()
    ids = gateway.backends.friend.friends(uid)
    names = {u["userId"]: u["username"] for u in gateway.backends.auth.users_by_id(ids)}
    online = set(gateway.hub.online_among(ids))
    return jsonify(friends=[{"userId": f, "username": names.get(f), "online": f in online}
                            for f in ids])


@api.post("/friends")
def add_friend():
    uid, gateway, body = caller_id(), current_gateway(), json_body()
    if body.get("friendId") is not None:
        fid = body["friendId"]
        if not is_user_id(fid):
            raise bad_request("friendId must be an integer user id")
        if not gateway.backends.auth.users_by_id([fid]):
            raise ApiError(404, ErrorCode.NOT_FOUND, "no such user")
    elif isinstance(body.get("username"), str):
        user = gateway.backends.auth.user_by_name(body["username"])
        if user is None:
            raise ApiError(404, ErrorCode.NOT_FOUND, "no such user")
        fid = user["userId"]
    else:
        raise bad_request('send {"friendId": <id>} or {"username": "<name>"}')
    if fid == uid:
        raise bad_request("you cannot befriend yourself")
    # at once, or a request with Friends.RequireAcceptance (features/relations.py)
    return jsonify(gateway.relations.befriend(uid, fid))


@api.delete("/friends/<friend_id>")
def remove_friend(friend_id: str):
    uid = caller_id()
    fid = positive_int_arg(friend_id)
    if not is_user_id(fid):
        raise bad_request("friendId must be an integer user id")
    current_gateway().friendships.remove(uid, fid)     # and friend_removed to both
    return jsonify(ok=True)


@api.get("/messages")
def history():
    uid = caller_id()
    peer = positive_int_arg(request.args.get("peerId"))
    if not is_user_id(peer):
        raise bad_request("peerId must be an integer user id")
    if peer == uid:
        raise bad_request("peerId must be another user")
    before = positive_int_arg(request.args.get("beforeSeq"))
    limit = limit_arg(request.args.get("limit"))
    body = current_gateway().backends.message.history(uid, peer, before, limit)
    return jsonify(messages=body.get("messages", []), hasMore=bool(body.get("hasMore")))
