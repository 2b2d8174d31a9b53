"""The gateway's Flask app: the WebSocket handshake (WsHandler), /healthz, /readyz,
the web page, and the REST API's blueprints (rest/).

A team already running Flask can mount these routes in its own app; the app
must be served by skyeim.gateway.transport.websocket's handler for /ws to upgrade.
"""
from __future__ import annotations

import logging

from flask import Flask, current_app, jsonify, request

from skyeim import __version__, tokens
from skyeim.gateway.backends.clients import BackendRejected, BackendUnavailable
from skyeim.gateway.composition import Gateway
from skyeim.gateway.rest.api import api
from skyeim.gateway.rest.files import files_api
from skyeim.gateway.rest.caller import GATEWAY_KEY, bearer_token, current_gateway
from skyeim.gateway.rest.conversations import conversations_api
from skyeim.gateway.rest.groups import groups_api
from skyeim.gateway.rest.relations import relations_api
from skyeim.gateway.rest import server_api
from skyeim.gateway.transport.echo import serve_echo
from skyeim.gateway.transport.limits import ConnectionLimits
from skyeim.gateway.transport.websocket import USER_ID_KEY
from skyeim.metrics import instrument_routes
from skyeim.protocol import ErrorCode, parse_platform
from skyeim.web import error_response, install_json_errors
from skyeim.wsgi import CLIENT_ADDRESS_KEY

log = logging.getLogger(__name__)


def create_app(gateway: Gateway) -> Flask:
    app = Flask("skyeim.gateway")
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    app.json.sort_keys = False
    app.extensions[GATEWAY_KEY] = gateway
    ws_cfg = gateway.cfg.web_socket
    app.extensions["skyeim.limits"] = ConnectionLimits(
        ws_cfg.max_connections_per_ip, ws_cfg.max_connections_per_user, ws_cfg.trusted_proxies)
    install_json_errors(app)

    @app.before_request
    def _client_address():     # for the access log: X-Forwarded-For from TrustedProxies only
        request.environ[CLIENT_ADDRESS_KEY] = app.extensions["skyeim.limits"].client_ip(request.environ)

    @app.errorhandler(405)
    def _method_not_allowed(e):
        # Werkzeug routes an upgrade request with another method than GET to the
        # websocket rule and answers 405; for /ws the contract says 400.
        if request.path in ws_paths:
            return error_response(400, ErrorCode.NOT_WEBSOCKET,
                                  "this endpoint needs a WebSocket upgrade")
        return error_response(405, ErrorCode.METHOD_NOT_ALLOWED, e.description)

    @app.errorhandler(BackendUnavailable)
    def _unavailable(e):
        return error_response(503, ErrorCode.UNAVAILABLE, "a backend service is unavailable")

    @app.errorhandler(BackendRejected)
    def _rejected(e: BackendRejected):
        if e.status >= 500 or e.status == 401:   # 401 from a service = our secret is wrong
            log.error("backend refused a gateway call: %s", e)
            return error_response(502, ErrorCode.INTERNAL, "a backend service refused the call")
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
    app.register_blueprint(groups_api)
    app.register_blueprint(relations_api)
    app.register_blueprint(files_api)
    app.register_blueprint(conversations_api)
    server_api.install(app, gateway)      # /server/v1 (PROTOCOL.md 9.2), when ServerApi.Key is set
    instrument_routes(app, gateway.metrics.registry, "REST API requests served by the gateway (/api).",
                      prefix="/api/")
    # /metrics: on the admin listener only (gateway/cli.py, skyeim.metrics.serve_admin)
    return app


def _not_a_websocket_for_us(gateway: Gateway):
    """The first refusals of every WebSocket route: no upgrade (400), a foreign Origin (403)."""
    if request.environ.get("wsgi.websocket") is None:
        return _refuse(gateway, 400, ErrorCode.NOT_WEBSOCKET,
                       "this endpoint needs a WebSocket upgrade")
    if not _origin_allowed(gateway):
        return _refuse(gateway, 403, ErrorCode.FORBIDDEN_ORIGIN, "this Origin is not allowed")
    return None


def ws_handler():
    """WsHandler: refuse before the upgrade (PROTOCOL.md section 1), or serve the socket."""
    gateway = current_gateway()
    refused = _not_a_websocket_for_us(gateway)
    if refused is not None:
        return refused
    ws = request.environ["wsgi.websocket"]
    platform = parse_platform(request.args.get("platform"))
    if platform is None:
        return _refuse(gateway, 400, ErrorCode.BAD_REQUEST,
                       "platform must be web, ios, android or desktop")
    bearer = bearer_token()          # the header wins, even when it is empty
    token = bearer if bearer is not None else request.args.get("token", "")
    try:
        claims = gateway.verify_token(token)
    except tokens.InvalidToken:
        return _refuse(gateway, 401, ErrorCode.UNAUTHORIZED, "a valid token is required")
    if not gateway.has_room():
        return _refuse(gateway, 503, ErrorCode.OVERLOADED, "the gateway is full or shutting down")
    if gateway.devices.too_many(claims.user_id):   # final, not retried: 409 (docs/protocol.md)
        return _refuse(gateway, 409, ErrorCode.TOO_MANY_DEVICES,
                       "this user has reached WebSocket.MaxDevicesPerUser live connections")
    # per address and per user (docs/protocol.md): 503 too, so that clients retry later
    limits: ConnectionLimits = current_app.extensions["skyeim.limits"]
    ip = limits.client_ip(request.environ)
    refused = limits.acquire(ip, claims.user_id)
    if refused:
        return _refuse(gateway, 503, ErrorCode.TOO_MANY_CONNECTIONS, refused)
    request.environ[USER_ID_KEY] = claims.user_id     # for the access log's open/close lines
    try:
        ws.accept()
    except BaseException:
        limits.release(ip, claims.user_id)
        raise
    # the session runs once this view has returned (WebSocket.hand_over): the Flask
    # request context is not kept for the connection's life
    ws.hand_over(_serve, gateway, limits, ip, ws, claims, platform)
    return ""


def _serve(gateway: Gateway, limits: ConnectionLimits, ip: str, ws, claims: tokens.Claims,
           platform: str) -> None:
    try:
        gateway.serve(ws, claims, platform)
    finally:
        limits.release(ip, claims.user_id)


def echo_handler():
    """The echo WebSocket (WebSocket.EchoPath): /ws's handshake rules but the token."""
    gateway = current_gateway()
    refused = _not_a_websocket_for_us(gateway)
    if refused is not None:
        return refused
    ws = request.environ["wsgi.websocket"]
    if not gateway.has_room():
        return _refuse(gateway, 503, ErrorCode.OVERLOADED, "the gateway is full or shutting down")
    ws.accept()
    serve_echo(ws, gateway.connections, gateway.metrics, gateway.cfg.web_socket.pong_timeout)
    return ""


def _origin_allowed(gateway: Gateway) -> bool:
    allowed = gateway.cfg.web_socket.allowed_origins
    origin = request.headers.get("Origin")
    return not allowed or origin is None or "*" in allowed or origin in allowed


def _refuse(gateway: Gateway, status: int, code: ErrorCode, message: str):
    gateway.metrics.handshake_refusals.labels(code).inc()
    return error_response(status, code, message)


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
    return jsonify(ok=True, version=__version__)


def readyz():
    gateway = current_gateway()
    backends = {svc.name: svc.healthy() for svc in gateway.backends.all()}
    if gateway.hub.clustered:
        backends["redis"] = gateway.hub.healthy()
    ready = all(backends.values()) and not gateway.stopping
    resp = jsonify(ok=ready, backends=backends)
    resp.status_code = 200 if ready else 503
    return resp
