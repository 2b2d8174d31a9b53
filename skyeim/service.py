"""What the Message, Friend and Auth services share: the Flask app skeleton,
the gevent WSGI server, and ``main`` (config, logging, signals).

A service's ``__main__`` monkey-patches gevent first, then calls
``main(sys.argv[1:], ServiceConfig, create_app)``; its ``create_app(config)``
starts from ``make_app(name, config)`` and adds its blueprint.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from typing import Any, Callable

import gevent
import gevent.event
import gevent.pywsgi
from flask import Flask, jsonify

from skyeim import __version__, fds, internal_secret, logs, tokens
from skyeim import config as config_module
from skyeim.db import DatabaseUnavailable
from skyeim.metrics import instrument_service, serve_admin
from skyeim.migrations import refusals_name
from skyeim.protocol import ErrorCode
from skyeim.web import error_response, install_json_errors, require_internal_secret
from skyeim.wsgi import Handler

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024         # pending connections the kernel queues for us
IDLE_TIMEOUT = 75             # s a keep-alive connection may sit silent (or a read stall)
MAX_BODY_BYTES = 1 << 20      # request bodies; the largest legal one is far smaller
SHUTDOWN_TIMEOUT = 5          # s in-flight requests get to finish on SIGTERM

_SHUTDOWN_KEY = "skyeim.on_shutdown"
METRICS_KEY = "skyeim.metrics"      # app.extensions[...]: the app's registry, for the admin listener

# DatabaseUnavailable.reason -> the 503 answer's code: an operator sees at once
# whether to look for a lock holder or for disk space; callers retry either way
_DATABASE_ERRORS = {
    "locked": (ErrorCode.DB_LOCKED, "the database is locked by another writer; retry"),
    "full": (ErrorCode.DB_FULL, "the database or its disk is full"),
    "unavailable": (ErrorCode.UNAVAILABLE, "the database is unavailable"),
}


def make_app(name: str, config: Any) -> Flask:
    """A Flask app with the contract's conventions: JSON errors, the internal
    secret, ``GET /healthz``, and 503 ``unavailable`` when the database is down."""
    app = Flask(f"skyeim.{name}")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False          # keep fields in the contract's order
    install_json_errors(app)
    require_internal_secret(app, config.internal_secret)
    app.extensions[METRICS_KEY] = instrument_service(app, name)

    @app.get("/healthz")
    def healthz():
        return jsonify(ok=True, version=__version__)

    @app.errorhandler(DatabaseUnavailable)
    def _database_unavailable(e: DatabaseUnavailable):
        log.warning("database unavailable (%s): %s", e.reason, e)
        code, message = _DATABASE_ERRORS.get(e.reason, _DATABASE_ERRORS["unavailable"])
        return error_response(503, code, message)

    return app


def on_shutdown(app: Flask, fn: Callable[[], None]) -> None:
    """Have ``main`` call ``fn()`` after the server stopped (e.g. Database.close)."""
    app.extensions.setdefault(_SHUTDOWN_KEY, []).append(fn)


class _Server(fds.QuietAccept, gevent.pywsgi.WSGIServer):
    def handle(self, sock, address):
        # A client that goes quiet (idle keep-alive, stalled upload) must not
        # hold a greenlet and a socket forever.
        sock.settimeout(IDLE_TIMEOUT)
        # pywsgi writes headers and body separately: without NODELAY, Nagle and the
        # client's delayed ACK add ~40 ms to every call the gateway makes
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle(sock, address)


def serve(app: Flask, host: str, port: int) -> gevent.pywsgi.WSGIServer:
    """Start serving ``app`` on host:port in the background and return the server."""
    wsgi_log = logging.getLogger(f"{app.import_name}.http")
    server = _Server(
        (host, port), app,
        backlog=LISTEN_BACKLOG,
        handler_class=Handler,    # the access log (skyeim.access) and 431 (skyeim.wsgi)
        log=gevent.pywsgi.LoggingLogAdapter(wsgi_log, logging.DEBUG),
        error_log=gevent.pywsgi.LoggingLogAdapter(wsgi_log, logging.ERROR),
    )
    server.start()
    return server


def main(argv: list[str], config_cls: type, create_app: Callable[[Any], Flask],
         prog: str | None = None) -> None:
    """Run a service until SIGTERM/SIGINT; exits 0 then, 2 on a bad config, 1 if it cannot listen."""
    parser = argparse.ArgumentParser(prog=prog, description="Run a SkyeIM backend service.")
    parser.add_argument("--version", action="version", version=f"skyeim {__version__}")
    default_config = _default_config(create_app)
    parser.add_argument("-f", "--config", default=None,
                        help=f"the service's YAML config file (default: {default_config})")
    parser.add_argument("--debug", action="store_true", help="log at debug level (one line per request)")
    parser.add_argument("--insecure-dev", action="store_true",
                        help="start even with the shipped default AccessSecret on a public address")
    args = parser.parse_args(argv)
    implicit = args.config is None
    if implicit:
        args.config = default_config

    try:
        cfg = config_module.load(config_cls, args.config)
    except config_module.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    refusal = tokens.default_secret_refusal([getattr(cfg, "access_secret", "")], [cfg.host],
                                            f"{args.config}: the {cfg.name} service")
    if refusal and not args.insecure_dev:
        print(f"error: {refusal}", file=sys.stderr)
        sys.exit(2)
    try:
        cfg, secret_note = internal_secret.fill_in(cfg, [cfg.host], f"{args.config}: the {cfg.name} service",
                                                   args.insecure_dev)
    except internal_secret.SecretError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

    logs.setup(cfg.log.level, debug=args.debug, fmt=cfg.log.format, access=cfg.log.access)
    log.info("configuration: %s%s", os.path.abspath(args.config), " (the default; -f to choose)" if implicit else "")
    if refusal:
        log.warning("--insecure-dev: %s", refusal)
    if secret_note:
        log.info("%s", secret_note)
    fds.start_up(f"the {cfg.name} service", logger=log)
    with refusals_name(args.config):        # a schema it must not use: one line naming the file
        app = create_app(cfg)
    try:
        server = serve(app, cfg.host, cfg.port)
    except OSError as e:
        log.error("%s cannot listen on %s:%s: %s", cfg.name, cfg.host, cfg.port, e.strerror or e)
        run_shutdown_hooks(app)
        sys.exit(1)
    try:
        admin = serve_admin(cfg.admin, cfg.name, app.extensions[METRICS_KEY])
    except OSError as e:
        log.error("%s cannot listen on Admin %s:%s: %s", cfg.name, cfg.admin.host, cfg.admin.port,
                  e.strerror or e)
        server.stop(timeout=0)
        run_shutdown_hooks(app)
        sys.exit(1)
    log.info("%s listening on %s:%s%s", cfg.name, cfg.host, server.server_port,
             f" (admin, /metrics: {cfg.admin.host}:{cfg.admin.port})" if admin else "")

    stop = gevent.event.Event()
    handlers = [gevent.signal_handler(sig, stop.set) for sig in (signal.SIGTERM, signal.SIGINT)]
    stop.wait()
    log.info("%s stopping", cfg.name)
    for h in handlers:
        h.cancel()
    server.stop(timeout=SHUTDOWN_TIMEOUT)
    if admin is not None:
        admin.stop(timeout=1)
    run_shutdown_hooks(app)
    log.info("%s stopped", cfg.name)


def _default_config(create_app: Callable) -> str:
    """etc/<service>.yaml for a create_app in skyeim.<service>.app."""
    parts = getattr(create_app, "__module__", "").split(".")
    return f"etc/{parts[1]}.yaml" if len(parts) > 1 else "etc/service.yaml"


def run_shutdown_hooks(app: Flask) -> None:
    for fn in app.extensions.get(_SHUTDOWN_KEY, []):
        try:
            fn()
        except Exception:  # noqa: BLE001 - one failing hook must not skip the others
            log.exception("error while shutting down")
