"""The server API (PROTOCOL.md 9.2) for the team's own backend, under /server/v1/,
authenticated by ``X-Api-Key`` equal to ``ServerApi.Key`` (compared in constant
time). With an empty Key it is not mounted: the whole /server/ tree answers 404.

  POST   /server/v1/messages    {fromUserId, toUserId, content, contentType?, msgId?}
                                -> {msgId, seq, createdAt, duplicate, delivered}
  POST   /server/v1/notices     {userIds: [...]} | {all: true}, with {event, data}
                                -> {connections}
  POST   /server/v1/disconnect  {userId} -> {connections}
  GET    /server/v1/presence?userIds=1,2,3  -> {online: [...]}
  GET    /server/v1/stats       -> {onlineUsers, connections}
  POST   /server/v1/friends     {userId, friendId} -> {ok: true}
  DELETE /server/v1/friends/<userId>/<friendId>   -> {ok: true}

Bad input answers 400 ``bad_request`` with a message naming the field; the
work itself is the features' (chat.post, server_push, friendships), each
acting on the whole cluster. Every request is counted by route and status
(``skyeim_server_api_requests_total``).
"""
from __future__ import annotations

import hmac
import logging
import re
import uuid

import orjson
from flask import Blueprint, Flask, current_app, jsonify, request
from prometheus_client import Counter

from skyeim.gateway.composition import Gateway
from skyeim.gateway.rest.caller import current_gateway
from skyeim.protocol import CONTENT_TYPES, ErrorCode, is_msg_id
from skyeim.web import (ApiError, bad_request, body_user_id, json_body, path_user_id,
                        user_id_list)

log = logging.getLogger(__name__)

MAX_USER_IDS = 1000            # userIds in one notice or presence call
EVENT = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
EXTENSION_KEY = "skyeim.server_api"   # app.extensions[...]: (the key as bytes, the counter)

server_api = Blueprint("server_api", __name__, url_prefix="/server/v1")


def install(app: Flask, gateway: Gateway) -> None:
    """Mount the server API on ``app`` when ServerApi.Key is set (else /server/ is 404)."""
    cfg = gateway.cfg.server_api
    if not cfg.enabled:
        return
    requests_total = Counter("skyeim_server_api_requests_total",
                             "Server API requests (PROTOCOL.md 9.2), by route and status.",
                             ["route", "status"], registry=gateway.metrics.registry)
    app.extensions[EXTENSION_KEY] = (cfg.key.encode(), requests_total)
    app.register_blueprint(server_api)


@server_api.before_request
def _check_key():
    expected, _ = current_app.extensions[EXTENSION_KEY]
    got = request.headers.get("X-Api-Key", "").encode()
    if not hmac.compare_digest(got, expected):
        log.info("server API: %s %s refused: missing or wrong X-Api-Key from %s",
                 request.method, request.path, request.remote_addr)
        raise ApiError(401, ErrorCode.UNAUTHORIZED, "missing or wrong X-Api-Key")


@server_api.after_request
def _count(resp):
    _, requests_total = current_app.extensions[EXTENSION_KEY]
    rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
    requests_total.labels(rule, str(resp.status_code)).inc()
    return resp


# -- messages -------------------------------------------------------------------------

@server_api.post("/messages")
def post_message():
    gateway, body = current_gateway(), json_body()
    sender = body_user_id(body, "fromUserId")
    to = body_user_id(body, "toUserId")
    if to == sender:
        raise bad_request("toUserId must differ from fromUserId")
    msg_id = body.get("msgId")
    if msg_id is None:
        msg_id = str(uuid.uuid4())
    elif not is_msg_id(msg_id):
        raise bad_request("msgId must be 1 to 64 characters of A-Z a-z 0-9 _ -")
    stored, delivered = gateway.chat.post({
        "msgId": msg_id, "fromUserId": sender, "toUserId": to,
        "content": _content(body, gateway.cfg.chat.max_content_length),
        "contentType": _content_type(body)})
    return jsonify(msgId=stored["msgId"], seq=stored["seq"], createdAt=stored["createdAt"],
                   duplicate=bool(stored.get("duplicate")), delivered=delivered)


def _content(body: dict, max_length: int) -> str:
    content = body.get("content")
    if not isinstance(content, str) or not content:
        raise bad_request("content must be a non-empty string")
    if len(content) > max_length:
        raise bad_request(f"content is longer than {max_length} characters (Chat.MaxContentLength)")
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("content holds an unpaired surrogate") from None
    return content


def _content_type(body: dict) -> int:
    ctype = body.get("contentType")
    if ctype is None:                     # a JSON null counts as absent (PROTOCOL.md conventions)
        return 1
    if type(ctype) is not int or ctype not in CONTENT_TYPES:
        raise bad_request("contentType must be 1, 2, 3 or 4")
    return ctype


# -- notices and disconnects ------------------------------------------------------------

@server_api.post("/notices")
def post_notice():
    gateway, body = current_gateway(), json_body()
    everyone = body.get("all")
    if everyone is not None and everyone is not True:
        raise bad_request("all must be true (or absent, with userIds)")
    if everyone and body.get("userIds") is not None:
        raise bad_request("send either userIds or all: true, not both")
    if not everyone and body.get("userIds") is None:
        raise bad_request("userIds (a list of user ids) or all: true is required")
    user_ids = [] if everyone else list(dict.fromkeys(user_id_list(body, "userIds", MAX_USER_IDS)))
    event = body.get("event")
    if not isinstance(event, str) or not EVENT.fullmatch(event):
        raise bad_request("event must be 1 to 64 characters of A-Z a-z 0-9 _ . : -")
    data = body.get("data")
    try:
        # the whole frame, as it will be sent: its nesting is one level deeper than data's
        size = len(orjson.dumps(data))
        orjson.dumps({"type": "notice", "data": {"event": event, "data": data, "timestamp": 0}})
    except orjson.JSONEncodeError:
        raise bad_request("data cannot be encoded as JSON (an integer beyond 64 bits, "
                          "or nested too deeply)") from None
    limit = gateway.cfg.chat.max_content_length
    if size > limit:
        raise bad_request(f"data is {size} bytes as JSON, more than {limit} (Chat.MaxContentLength)")
    push = gateway.server_push
    n = push.notice_to_everyone(event, data) if everyone else \
        push.notice_to_users(user_ids, event, data)
    return jsonify(connections=n)


@server_api.post("/disconnect")
def disconnect():
    gateway, body = current_gateway(), json_body()
    return jsonify(connections=gateway.server_push.disconnect(body_user_id(body, "userId")))


# -- presence and stats -----------------------------------------------------------------

@server_api.get("/presence")
def presence():
    raw = request.args.get("userIds", "")
    parts = raw.split(",") if raw else []
    if not parts or len(parts) > MAX_USER_IDS:
        raise bad_request(f"userIds must list 1 to {MAX_USER_IDS} user ids, comma-separated")
    ids = list(dict.fromkeys(path_user_id(p.strip(), "userIds") for p in parts))
    return jsonify(online=current_gateway().hub.online_among(ids))


@server_api.get("/stats")
def stats():
    hub = current_gateway().hub
    return jsonify(onlineUsers=hub.online_count(), connections=hub.connection_count())


# -- friendships ------------------------------------------------------------------------

@server_api.post("/friends")
def add_friend():
    gateway, body = current_gateway(), json_body()
    uid = body_user_id(body, "userId")
    fid = body_user_id(body, "friendId")
    if uid == fid:
        raise bad_request("friendId must differ from userId")
    # No lookup in the Auth service: a team that issues its own tokens has users the
    # Auth service never saw (PROTOCOL.md 9.2: "as the Friend service's calls").
    gateway.friendships.add(uid, fid)
    return jsonify(ok=True)


@server_api.delete("/friends/<user_id>/<friend_id>")
def remove_friend(user_id: str, friend_id: str):
    uid = path_user_id(user_id, "userId")
    fid = path_user_id(friend_id, "friendId")
    if uid == fid:
        raise bad_request("friendId must differ from userId")
    gateway = current_gateway()
    gateway.friendships.remove(uid, fid)
    return jsonify(ok=True)
