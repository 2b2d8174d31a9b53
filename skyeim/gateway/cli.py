"""The gateway's program: ``skyeim-gateway`` (installed) or ``python wsserver.py``
(in a checkout; wsserver.py is a shim that calls ``main`` here).

    skyeim-gateway -f etc/ws.yaml                # the gateway alone
    skyeim-gateway --standalone -f etc/ws.yaml   # gateway + Message, Friend, Auth services

In standalone mode the three services run in this process too, each configured
by its own file beside the -f file (message.yaml, friend.yaml, auth.yaml), and
the gateway still calls them over HTTP, exactly as under supervisord.

Importing this module monkey-patches gevent first: it is an entry point, never
imported by the rest of the gateway.
"""
from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402

# No spawn tree: gevent would keep, per greenlet, its spawner, a copy of the
# spawner's locals and ten frames of the spawning stack (two greenlets per idle
# connection: ~1 KB each; docs/performance.md, idle memory round 3). Tracebacks
# of a failing greenlet are its own stack, unchanged.
gevent.config.track_greenlet_tree = False

import argparse  # noqa: E402  (monkey-patching must come first)
import dataclasses  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent.event  # noqa: E402
import gevent.pool  # noqa: E402

from skyeim import __version__, config, fds, internal_secret, logs  # noqa: E402

log = logging.getLogger("skyeim.wsserver")   # the name its log lines always had

GC_GEN0_THRESHOLD = 20_000   # allocations between young collections (CPython default: 700)

SERVICES = (  # (config file, config class, app factory module)
    ("message.yaml", config.ServiceConfig, "skyeim.message.app"),
    ("friend.yaml", config.ServiceConfig, "skyeim.friend.app"),
    ("auth.yaml", config.AuthServiceConfig, "skyeim.auth.app"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skyeim-gateway", description="Run the SkyeIM WebSocket gateway.")
    parser.add_argument("--version", action="version", version=f"skyeim {__version__}")
    parser.add_argument("-f", "--config", default=None,
                        help="the gateway's YAML file (default: etc/ws.yaml)")
    parser.add_argument("--standalone", action="store_true",
                        help="also run the Message, Friend and Auth services in this process")
    parser.add_argument("--debug", action="store_true",
                        help="verbose logs (one line per HTTP request and frame event)")
    parser.add_argument("--insecure-dev", action="store_true",
                        help="start even with the shipped default AccessSecret on a public address")
    args = parser.parse_args(argv)
    implicit = args.config is None
    if implicit:
        args.config = "etc/ws.yaml"

    try:
        cfg = config.load(config.GatewayConfig, args.config)
        service_cfgs = []
        if args.standalone:
            here = os.path.dirname(os.path.abspath(args.config))
            for filename, cls, module in SERVICES:
                service_cfgs.append((config.load(cls, os.path.join(here, filename)), module))
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from skyeim.tokens import default_secret_refusal, weak_secret_warning
    refusal = default_secret_refusal(
        [cfg.auth.access_secret] + [getattr(c, "access_secret", "") for c, _ in service_cfgs],
        [cfg.host] + [c.host for c, _ in service_cfgs], f"{args.config}: {cfg.name}")
    if refusal and not args.insecure_dev:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    secret_note = None
    if args.standalone and not cfg.internal_secret:
        # the services run in this process: a random secret that never leaves it
        secret = internal_secret.generated()
        cfg = dataclasses.replace(cfg, internal_secret=secret)
        service_cfgs = [(c if c.internal_secret else dataclasses.replace(c, internal_secret=secret), m)
                        for c, m in service_cfgs]
        secret_note = "InternalSecret is empty: using a random one made in this process (standalone)"
    elif not cfg.internal_secret:
        # the services' addresses decide: the shared file is safe on one machine only
        endpoints = [ep for rpc in (cfg.message_rpc, cfg.friend_rpc, cfg.auth_rpc) for ep in rpc.endpoints]
        hosts = [ep.split("://", 1)[-1].rsplit(":", 1)[0] for ep in endpoints]
        try:
            cfg, secret_note = internal_secret.fill_in(
                cfg, hosts, f"{args.config}: {cfg.name} (its services' addresses)", args.insecure_dev)
        except internal_secret.SecretError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    logs.setup(cfg.log.level, debug=args.debug, fmt=cfg.log.format, access=cfg.log.access)
    log.info("configuration: %s%s", os.path.abspath(args.config),
             " (the default; -f to choose)" if implicit else "")
    if refusal:
        log.warning("--insecure-dev: %s", refusal)
    if secret_note:
        log.info("%s", secret_note)
    if (warning := weak_secret_warning(cfg.auth.access_secret)):
        log.warning("Auth.%s", warning)
    fds.start_up(cfg.name, max_connections=cfg.web_socket.max_connections, logger=log)

    # imported after the config is known good, so a bad file fails fast and quietly
    import importlib

    from skyeim import service
    from skyeim.gateway.app import create_app
    from skyeim.gateway.backends.files import StorageUnavailable
    from skyeim.gateway.composition import Gateway
    from skyeim.gateway.transport.websocket import make_server
    from skyeim.metrics import serve_admin

    servers = []
    admins = []          # the admin listeners (/metrics), gateway's and in-process services'
    try:
        for scfg, module in service_cfgs:
            app = importlib.import_module(module).create_app(scfg)
            servers.append((service.serve(app, scfg.host, scfg.port), app))
            admin = serve_admin(scfg.admin, scfg.name, app.extensions[service.METRICS_KEY])
            if admin is not None:
                admins.append(admin)
            log.info("%s service listening on %s:%s", scfg.name, scfg.host, scfg.port)
        gateway = Gateway.from_config(cfg)
        ws_cfg = cfg.web_socket
        listener = (cfg.host, cfg.port)
        if cfg.cluster.enabled and cfg.cluster.reuse_port:
            listener = reuse_port_listener(cfg.host, cfg.port)
        server = make_server(
            listener, create_app(gateway),
            max_message_size=ws_cfg.max_message_size, close_timeout=ws_cfg.close_timeout,
            handshake_timeout=ws_cfg.handshake_timeout,
            # a client that takes nothing for PongTimeout is gone: the heartbeat's bound
            write_timeout=ws_cfg.pong_timeout,
            log=gevent.pywsgi.LoggingLogAdapter(logging.getLogger("skyeim.http"), logging.DEBUG),
            spawn=gevent.pool.Pool(None),    # counted by skyeim_greenlets (no heap walk per scrape)
            error_log=gevent.pywsgi.LoggingLogAdapter(logging.getLogger("skyeim.http"), logging.ERROR))
        server.start()
        gateway.metrics.count_greenlets(lambda: len(server.pool) + gateway.connections.count)
        admin = serve_admin(cfg.admin, cfg.name, gateway.metrics.registry)
        if admin is not None:
            admins.append(admin)
            log.info("%s admin listener (/metrics) on %s:%s", cfg.name, cfg.admin.host, cfg.admin.port)
        gateway.start()
        tune_gc(gateway)
    except StorageUnavailable as e:      # Files.Storage: a bucket missing or unreachable
        log.error("%s", e)
        return 1
    except OSError as e:
        log.error("cannot listen: %s", e)
        return 1
    log.info("%s listening on %s:%s%s", cfg.name, cfg.host, server.server_port,
             " (standalone)" if args.standalone else "")

    stop = gevent.event.Event()

    def on_signal():
        gateway.stopping = True        # from this moment every handshake is refused (503)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, on_signal)
    stop.wait()

    log.info("stopping: no new connections; closing %d with 1001", gateway.connections.count)
    server.close()                                   # stop accepting
    gateway.shutdown(ws_cfg.shutdown_timeout)
    server.stop(timeout=1)
    for admin in admins:
        admin.stop(timeout=1)
    for srv, app in servers:
        srv.stop(timeout=2)
        service.run_shutdown_hooks(app)
    log.info("stopped")
    return 0


def tune_gc(gateway) -> None:
    """Keep the garbage collector out of the way of many long-lived connections.

    Everything loaded at start-up (modules, Flask, SQLAlchemy) lives as long as
    the process: frozen, the collector never walks it again. A larger first
    generation means fewer collections during a connect storm, which creates
    many objects that all survive. Pauses are measured (skyeim_gc_pause_seconds).
    """
    import gc

    from skyeim.metrics import watch_gc_pauses
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
    watch_gc_pauses(gateway.metrics)


def reuse_port_listener(host: str, port: int, backlog: int = 4096):
    """A listening socket that several gateway processes can share (SO_REUSEPORT):
    the kernel spreads new connections over them."""
    from gevent import socket as gsocket
    sock = gsocket.socket(gsocket.AF_INET6 if ":" in host else gsocket.AF_INET, gsocket.SOCK_STREAM)
    sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_REUSEADDR, 1)
    sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock

