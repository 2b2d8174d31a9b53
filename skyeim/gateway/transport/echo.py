"""The echo WebSocket (``WebSocket.EchoPath``): a test aid for framing conformance.

Autobahn|Testsuite's fuzzingclient needs a server that sends every message back
as it came. This one runs on the very socket /ws uses (skyeim.gateway.transport.websocket:
the same handshake rules, MaxMessageSize, close codes, write lock and write
timeout) and counts against MaxConnections, so what Autobahn checks is the
framing layer that serves the chat. It has no token check: never turn it on in
production.
"""
from __future__ import annotations

import logging
import time

import gevent

from skyeim.gateway.transport.connections import Connections
from skyeim.gateway.transport.websocket import OP_BINARY, OP_TEXT, ConnectionClosed, WebSocket
from skyeim.metrics import GatewayMetrics
from skyeim.protocol import CloseCode

log = logging.getLogger(__name__)


def serve_echo(ws: WebSocket, connections: Connections, metrics: GatewayMetrics,
               pong_timeout: float) -> int:
    """Echo one accepted connection's messages until it closes; its close code."""
    connections.opened()
    connections.echo_sockets.add(ws)
    # /ws closes a silent client after PongTimeout (4004); so does the echo
    idle = gevent.spawn(_close_when_idle, ws, pong_timeout)
    code = None
    try:
        while True:          # ends with the connection (ConnectionClosed), idle-bounded above
            message = ws.receive()
            ws.send_frame(message, OP_TEXT if isinstance(message, str) else OP_BINARY)
    except ConnectionClosed as e:
        code = e.code
    finally:
        idle.kill(block=False)
        connections.echo_sockets.discard(ws)
        connections.closed()
        metrics.closes.labels(str(code if code is not None else ws.close_code)).inc()
    return code


def _close_when_idle(ws: WebSocket, timeout: float) -> None:
    while not ws.closed:     # bounded: each turn sleeps until the socket's next deadline
        left = ws.last_seen + timeout - time.monotonic()
        if left <= 0:
            log.info("echo connection silent for %ss: closing %d", timeout,
                     CloseCode.HEARTBEAT_TIMEOUT)
            ws.close(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
            return
        gevent.sleep(left)
