"""The gateway's Flask app: the WebSocket handshake (WsHandler), /api, /healthz, /readyz.

A team already running Flask can mount these routes in its own app; the app
must be served by skyeim.gateway.transport.websocket's handler for /ws to upgrade.
"""
from __future__ import annotations

import logging

from flask import Blueprint, Flask, current_app, jsonify, request

from skyeim import tokens
from skyeim.gateway.backends.clients import BackendRejected, BackendUnavailable
from skyeim.gateway.composition import Gateway
from skyeim.gateway.features.devices import parse_platform
from skyeim.gateway.transport.echo import serve_echo
from skyeim.gateway.transport.limits import ConnectionLimits
from skyeim.metrics import add_metrics_route
from skyeim.web import (ApiError, bad_request, error_response, install_json_errors, json_body,
                        limit_arg, positive_int_arg)

log = logging.getLogger(__name__)


def create_app(gateway: Gateway) -> Flask:
    app = Flask("skyeim.gateway")
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    app.json.sort_keys = False
    app.extensions["skyeim.gateway"] = gateway
    ws_cfg = gateway.cfg.web_socket
    app.extensions["skyeim.limits"] = ConnectionLimits(
        ws_cfg.max_connections_per_ip, ws_cfg.max_connections_per_user, ws_cfg.trusted_proxies)
    install_json_errors(app)

    @app.errorhandler(405)
    def _method_not_allowed(e):
        # Werkzeug routes an upgrade request with another method than GET to the
        # websocket rule and answers 405; for /ws the contract says 400.
        if request.path in ws_paths:
            return error_response(400, "not_websocket", "this endpoint needs a WebSocket upgrade")
        return error_response(405, "method_not_allowed", e.description)

    @app.errorhandler(BackendUnavailable)
    def _unavailable(e):
        return error_response(503, "unavailable", "a backend service is unavailable")

    @app.errorhandler(BackendRejected)
    def _rejected(e: BackendRejected):
        if e.status >= 500 or e.status == 401:   # 401 from a service = our secret is wrong
            log.error("backend refused a gateway call: %s", e)
            return error_response(502, "internal", "a backend service refused the call")
        resp = error_response(e.status, e.code, e.message)
        if e.status == 429 and e.retry_after:    # the Auth service's login limit
            resp.headers["Retry-After"] = e.retry_after
        return resp

    # Werkzeug 3 routes an upgrade request only to a rule with websocket=True,
    # and any other request only to one without: /ws has both, one view.
    app.add_url_rule("/ws", "ws", ws_handler, websocket=True)
    app.add_url_rule("/ws", "ws_plain", ws_handler,   # any method: "not a WebSocket upgrade" is 400
                     methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    ws_paths = {"/ws"}
    echo_path = gateway.cfg.web_socket.echo_path
    if echo_path:
        log.warning("WebSocket.EchoPath is on: %s echoes anything to anyone, unauthenticated. "
                    "It is a conformance-test aid; never turn it on in production.", echo_path)
        app.add_url_rule(echo_path, "echo", echo_handler, websocket=True)
        app.add_url_rule(echo_path, "echo_plain", echo_handler,
                         methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        ws_paths.add(echo_path)
    app.add_url_rule("/healthz", "healthz", healthz)
    app.add_url_rule("/readyz", "readyz", readyz)
    # The web chat page: plain files in skyeim/gateway/static/ (no build step). Flask's
    # own /static/<path> route serves the assets, with an ETag and "no-cache" (revalidate).
    app.add_url_rule("/", "index", index_page)
    app.register_blueprint(api)
    from skyeim.gateway.rest.groups import groups_api
    app.register_blueprint(groups_api)
    add_metrics_route(app, gateway.metrics.registry)
    return app


def _gateway() -> Gateway:
    return current_app.extensions["skyeim.gateway"]


def _not_a_websocket_for_us(gateway: Gateway):
    """The first refusals of every WebSocket route: no upgrade (400), a foreign Origin (403)."""
    if request.environ.get("wsgi.websocket") is None:
        return _refuse(gateway, 400, "not_websocket", "this endpoint needs a WebSocket upgrade")
    if not _origin_allowed(gateway):
        return _refuse(gateway, 403, "forbidden_origin", "this Origin is not allowed")
    return None


def ws_handler():
    """WsHandler: refuse before the upgrade (PROTOCOL.md section 1), or serve the socket."""
    gateway = _gateway()
    refused = _not_a_websocket_for_us(gateway)
    if refused is not None:
        return refused
    ws = request.environ["wsgi.websocket"]
    platform = parse_platform(request.args.get("platform"))
    if platform is None:
        return _refuse(gateway, 400, "bad_request", "platform must be web, ios, android or desktop")
    bearer = _bearer()               # the header wins, even when it is empty
    token = bearer if bearer is not None else request.args.get("token", "")
    try:
        claims = gateway.verify_token(token)
    except tokens.InvalidToken:
        return _refuse(gateway, 401, "unauthorized", "a valid token is required")
    if not gateway.has_room():
        return _refuse(gateway, 503, "overloaded", "the gateway is full or shutting down")
    if gateway.devices.too_many(claims.user_id):   # final, not retried: 409 (docs/protocol.md)
        return _refuse(gateway, 409, "too_many_devices",
                       "this user has reached WebSocket.MaxDevicesPerUser live connections")
    # per address and per user (docs/protocol.md): 503 too, so that clients retry later
    limits: ConnectionLimits = current_app.extensions["skyeim.limits"]
    ip = limits.client_ip(request.environ)
    refused = limits.acquire(ip, claims.user_id)
    if refused:
        return _refuse(gateway, 503, "too_many_connections", refused)
    try:
        ws.accept()
        gateway.serve(ws, claims, platform)
    finally:
        limits.release(ip, claims.user_id)
    return ""


def echo_handler():
    """The echo WebSocket (WebSocket.EchoPath): /ws's handshake rules but the token."""
    gateway = _gateway()
    refused = _not_a_websocket_for_us(gateway)
    if refused is not None:
        return refused
    ws = request.environ["wsgi.websocket"]
    if not gateway.has_room():
        return _refuse(gateway, 503, "overloaded", "the gateway is full or shutting down")
    ws.accept()
    serve_echo(gateway, ws)
    return ""


def _origin_allowed(gateway: Gateway) -> bool:
    allowed = gateway.cfg.web_socket.allowed_origins
    origin = request.headers.get("Origin")
    return not allowed or origin is None or "*" in allowed or origin in allowed


def _refuse(gateway: Gateway, status: int, code: str, message: str):
    gateway.metrics.handshake_refusals.labels(code).inc()
    return error_response(status, code, message)


def _bearer() -> str | None:
    """The token of an ``Authorization: Bearer`` header ("" when it has none), else None."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; connect-src 'self'; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def index_page():
    """The web chat page (static/index.html; it loads /static/app.js and style.css)."""
    resp = current_app.send_static_file("index.html")
    resp.headers.update(_PAGE_HEADERS)
    return resp


def healthz():
    return jsonify(ok=True)


def readyz():
    gateway = _gateway()
    backends = {svc.name: svc.healthy() for svc in gateway.backends.all()}
    if gateway.hub.clustered:
        backends["redis"] = gateway.hub.healthy()
    ready = all(backends.values()) and not gateway.stopping
    resp = jsonify(ok=ready, backends=backends)
    resp.status_code = 200 if ready else 503
    return resp


# ---------------------------------------------------------------------------
# The client REST API (PROTOCOL.md section 7)

api = Blueprint("api", __name__, url_prefix="/api")


def _caller() -> int:
    token = _bearer()
    if not token:
        raise ApiError(401, "unauthorized", "Authorization: Bearer <token> is required")
    try:
        return _gateway().verify_token(token).user_id
    except tokens.InvalidToken:
        raise ApiError(401, "unauthorized", "the token is invalid or expired") from None


@api.post("/register")
def register():
    body = json_body()
    return jsonify(_gateway().backends.auth.register(body.get("username"), body.get("password")))


@api.post("/login")
def login():
    body = json_body()
    try:
        return jsonify(_gateway().backends.auth.login(body.get("username"), body.get("password"),
                                                      request.remote_addr or ""))
    except BackendRejected as e:
        if e.status == 401:       # wrong password or unknown user: the caller's 401, not ours
            raise ApiError(401, "unauthorized", e.message) from None
        raise


@api.post("/password")
def change_password():
    """{username, oldPassword, newPassword} -> {ok}; every token issued so far is revoked."""
    body = json_body()
    try:
        return jsonify(_gateway().backends.auth.change_password(
            body.get("username"), body.get("oldPassword"), body.get("newPassword"),
            request.remote_addr or ""))
    except BackendRejected as e:
        if e.status == 401:       # a wrong old password: the caller's 401
            raise ApiError(401, "unauthorized", e.message) from None
        raise


@api.get("/friends")
def list_friends():
    uid, gateway = _caller(), _gateway()
    ids = gateway.backends.friend.friends(uid)
    names = {u["userId"]: u["username"] for u in gateway.backends.auth.users_by_id(ids)}
    online = set(gateway.hub.online_among(ids))
    return jsonify(friends=[{"userId": f, "username": names.get(f), "online": f in online}
                            for f in ids])


@api.post("/friends")
def add_friend():
    uid, gateway, body = _caller(), _gateway(), json_body()
    if body.get("friendId") is not None:
        fid = body["friendId"]
        if not tokens.is_user_id(fid):
            raise bad_request("friendId must be an integer user id")
        if not gateway.backends.auth.users_by_id([fid]):
            raise ApiError(404, "not_found", "no such user")
    elif isinstance(body.get("username"), str):
        user = gateway.backends.auth.user_by_name(body["username"])
        if user is None:
            raise ApiError(404, "not_found", "no such user")
        fid = user["userId"]
    else:
        raise bad_request('send {"friendId": <id>} or {"username": "<name>"}')
    if fid == uid:
        raise bad_request("you cannot befriend yourself")
    gateway.backends.friend.add(uid, fid)
    return jsonify(ok=True)


@api.delete("/friends/<friend_id>")
def remove_friend(friend_id: str):
    uid = _caller()
    fid = positive_int_arg(friend_id)
    if not tokens.is_user_id(fid):
        raise bad_request("friendId must be an integer user id")
    _gateway().backends.friend.remove(uid, fid)
    return jsonify(ok=True)


@api.get("/messages")
def history():
    uid = _caller()
    peer = positive_int_arg(request.args.get("peerId"))
    if not tokens.is_user_id(peer):
        raise bad_request("peerId must be an integer user id")
    if peer == uid:
        raise bad_request("peerId must be another user")
    before = positive_int_arg(request.args.get("beforeSeq"))
    limit = limit_arg(request.args.get("limit"))
    body = _gateway().backends.message.history(uid, peer, before, limit)
    return jsonify(messages=body.get("messages", []), hasMore=bool(body.get("hasMore")))
