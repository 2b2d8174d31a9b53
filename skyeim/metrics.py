"""Prometheus metrics, served at /metrics by the gateway and by every service,
on each program's admin listener (``Admin: {Host, Port}``), never on its
public port: an operator's figures are nobody else's business.

Each app has its own registry, so that in standalone mode (four apps in one
process) each /metrics shows its own program's figures.
"""
from __future__ import annotations

import logging
import time

import gevent.monkey
import gevent.pywsgi
import prometheus_client.metrics
import prometheus_client.values
from flask import Flask, Response, g, jsonify, request
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               ProcessCollector, disable_created_metrics, generate_latest)

disable_created_metrics()   # no *_created series: they double the output and help no dashboard

# Every counter increment and histogram observation takes its value's lock.
# prometheus_client binds threading.Lock when it is imported, which in our
# monkey-patched programs is gevent's lock, written in Python: per frame and per
# chat that cost ~8% of the gateway's CPU at peak (py-spy, docs/performance.md).
# Nothing yields while such a lock is held (an add under it), so the OS lock is
# as correct for greenlets and far cheaper; it also stays correct for the real
# threads of a standalone process (the SQLite worker). Pinned by
# tests/unit/test_metrics_scrape.py, which fails should the library stop using these names.
_NATIVE_LOCK = gevent.monkey.get_original("threading", "Lock")
prometheus_client.values.Lock = _NATIVE_LOCK
prometheus_client.metrics.Lock = _NATIVE_LOCK

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def add_metrics_route(app: Flask, registry: CollectorRegistry) -> None:
    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def admin_app(name: str, registry: CollectorRegistry) -> Flask:
    """The admin listener's app: GET /metrics (this program's registry) and /healthz."""
    app = Flask(f"skyeim.{name}.admin")
    add_metrics_route(app, registry)

    @app.get("/healthz")
    def healthz():
        return jsonify(ok=True)

    return app


def serve_admin(admin, name: str, registry: CollectorRegistry) -> gevent.pywsgi.WSGIServer | None:
    """Start the admin listener of ``admin`` (config.AdminConfig) in the background;
    None when its Port is 0. Raises OSError when it cannot listen."""
    if not admin.port:
        return None
    wsgi_log = logging.getLogger(f"skyeim.{name}.admin")
    server = gevent.pywsgi.WSGIServer(
        (admin.host, admin.port), admin_app(name, registry),
        log=gevent.pywsgi.LoggingLogAdapter(wsgi_log, logging.DEBUG),
        error_log=gevent.pywsgi.LoggingLogAdapter(wsgi_log, logging.ERROR))
    server.start()
    return server


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge("skyeim_ws_connections", "Live WebSocket connections.", registry=r)
        self.users_online = Gauge("skyeim_users_online", "Users with at least one live connection here.",
                                  registry=r)
        self.frames_in = Counter("skyeim_frames_in_total", "Client frames received, by type.",
                                 ["type"], registry=r)
        self.frames_out = Counter("skyeim_frames_out_total", "Frames written to clients, by type.",
                                  ["type"], registry=r)
        self.ack_latency = Histogram("skyeim_chat_ack_seconds",
                                     "From a chat frame's arrival to its ack (sent, or delivered for live chats).",
                                     ["status"], buckets=LATENCY_BUCKETS, registry=r)
        self.backend_latency = Histogram("skyeim_backend_request_seconds",
                                         "Calls to the backend services.", ["service"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.backend_errors = Counter("skyeim_backend_errors_total",
                                      "Failed backend calls, by service and kind (unavailable, rejected).",
                                      ["service", "kind"], registry=r)
        self.batch_size = Histogram("skyeim_backend_batch_size",
                                    "Calls coalesced into one batch call to a service, by kind.",
                                    ["batch"], buckets=BATCH_BUCKETS, registry=r)
        self.breaker_state = Gauge("skyeim_backend_breaker_state",
                                   "Circuit breaker per backend endpoint: 0 closed, 1 open, 2 half-open.",
                                   ["service", "endpoint"], registry=r)
        self.breaker_opens = Counter("skyeim_backend_breaker_opens_total",
                                     "Times a backend endpoint's circuit breaker opened.",
                                     ["service", "endpoint"], registry=r)
        self.breaker_refusals = Counter("skyeim_backend_breaker_refusals_total",
                                        "Calls refused at once because the endpoint's breaker was open.",
                                        ["service"], registry=r)
        self.overflows = Counter("skyeim_send_queue_overflows_total",
                                 "Connections closed with 4002 because their send queue overflowed.",
                                 registry=r)
        self.closes = Counter("skyeim_ws_closes_total", "Closed connections, by close code.",
                              ["code"], registry=r)
        self.handshake_refusals = Counter("skyeim_handshake_refusals_total",
                                          "Handshakes refused before the upgrade, by code.",
                                          ["code"], registry=r)
        # process_resident_memory_bytes, process_open_fds, ...: what a soak test watches
        ProcessCollector(registry=r)
        # counted without walking the heap (no gc.get_objects per scrape): the program
        # gives the function (count_greenlets); until then, 0
        self._greenlets = Gauge("skyeim_greenlets",
                                "Live greenlets of connections: one per open HTTP/WebSocket socket "
                                "(the server's pool) plus one writer per chat session (leak watch).",
                                registry=r)
        self.gc_pause = Histogram("skyeim_gc_pause_seconds",
                                  "Garbage collector pauses (the whole process stops), by generation.",
                                  ["generation"], buckets=LATENCY_BUCKETS, registry=r)
        # PROTOCOL.md 9.3 webhooks and 9.4 the before-send hook (features/webhooks.py, hooks.py)
        self.webhook_queue = Gauge("skyeim_webhook_queue_depth", "Webhook events waiting to be sent.",
                                   registry=r)
        self.webhook_sent = Counter("skyeim_webhook_sent_total",
                                    "Webhook events the receiver accepted (2xx), by event.",
                                    ["event"], registry=r)
        self.webhook_retries = Counter("skyeim_webhook_retries_total",
                                       "Webhook POSTs tried again after a failure.", registry=r)
        self.webhook_failed = Counter("skyeim_webhook_failed_total",
                                      "Webhook events given up after Webhooks.MaxAttempts.",
                                      registry=r)
        self.webhook_drops = Counter("skyeim_webhook_dropped_total",
                                     "Webhook events dropped because the queue was full.",
                                     registry=r)
        self.hook_latency = Histogram("skyeim_before_send_hook_seconds",
                                      "Calls to the before-send hook, by outcome "
                                      "(allow, rewrite, refuse, error).",
                                      ["outcome"], buckets=LATENCY_BUCKETS, registry=r)
        # label children looked up once: the hot path must not build label tuples per frame
        self._in = {t: self.frames_in.labels(t) for t in
                    ("ping", "chat", "read", "auth", "sync", "typing", "typing_dropped", "invalid",
                     "binary", "rate_limited", "groupchat", "group_read")}
        self._out: dict[str, Counter] = {}
        self.group_fanout = Histogram("skyeim_group_fanout_seconds",
                                      "Queueing one group frame to this node's online members "
                                      "(and publishing it to the other nodes).",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.sent_latency = self.ack_latency.labels("sent")
        self.delivered_latency = self.ack_latency.labels("delivered")

    def count_greenlets(self, fn) -> None:
        """Have skyeim_greenlets read ``fn()`` at scrape time (it must be cheap)."""
        self._greenlets.set_function(fn)

    def frame_in(self, kind: str) -> None:
        self._in[kind].inc()

    def frame_out(self, kind: str) -> None:
        child = self._out.get(kind)
        if child is None:
            child = self._out[kind] = self.frames_out.labels(kind)
        child.inc()


def watch_gc_pauses(metrics: "GatewayMetrics") -> None:
    """Time every collection into metrics.gc_pause (a full one stops every connection)."""
    import gc
    children = [metrics.gc_pause.labels(str(g)) for g in range(3)]
    started = [0.0]

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            children[info["generation"]].observe(time.perf_counter() - started[0])

    gc.callbacks.append(callback)


def frame_type(text: str) -> str:
    """The type of a server frame from its JSON text, which always starts {"type":"..."."""
    end = text.find('"', 9)
    return text[9:end] if text.startswith('{"type":"') and end > 9 else "other"


def instrument_service(app: Flask, name: str) -> CollectorRegistry:
    """Request counts and latency by route and status for a backend service."""
    r = CollectorRegistry()
    instrument_routes(app, r, f"Requests served by the {name} service.")
    return r           # served by the admin listener (serve_admin), not by this app


def instrument_routes(app: Flask, registry: CollectorRegistry, doc: str, prefix: str = "/") -> None:
    """skyeim_http_request_seconds{method, route, status} (its _count is the request
    count) for the requests whose path starts with ``prefix``; ``route`` is the URL
    rule (/v1/groups/<group_id>/members), never the path, so the series stay few."""
    latency = Histogram("skyeim_http_request_seconds", doc,
                        ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=registry)

    @app.before_request
    def _start_timer():
        g.skyeim_t0 = time.perf_counter()

    @app.after_request
    def _observe(resp):
        t0 = g.get("skyeim_t0")
        if t0 is not None and request.path != "/metrics" and request.path.startswith(prefix):
            route = request.url_rule.rule if request.url_rule else "unmatched"
            latency.labels(request.method, route, str(resp.status_code)).observe(time.perf_counter() - t0)
        return resp
