"""The graceful stop (SIGTERM): stop reading, finish the frames in flight, flush
every send queue, close everyone with 1001, record the last deliveries, tell
friends who went offline, say goodbye to the cluster; all within a deadline."""
from __future__ import annotations

import time

import gevent

from skyeim.gateway.features.delivery import DeliveryRecorder
from skyeim.gateway.features.presence import Presence
from skyeim.gateway.routing.hub import Hub
from skyeim.gateway.transport.connections import Connections
from skyeim.protocol import CloseCode


def graceful_stop(timeout: float, connections: Connections, recorder: DeliveryRecorder,
                  presence: Presence, hub: Hub) -> None:
    deadline = time.monotonic() + timeout
    connections.stopping = True
    sessions = list(connections.sessions)    # also those still catching up (not in the hub yet)
    for s in sessions:
        s.stop_reading = True
    while any(s.busy for s in sessions) and time.monotonic() < deadline - 2:
        gevent.sleep(0.02)
    for s in sessions:
        gevent.spawn(s.close_after_flush, CloseCode.GOING_AWAY)
    for ws in list(connections.echo_sockets):
        gevent.spawn(ws.close, CloseCode.GOING_AWAY)
    while connections.count > 0 and time.monotonic() < deadline - 1:
        gevent.sleep(0.02)
    recorder.flush(max(0.1, deadline - time.monotonic() - 0.5))
    presence.join(timeout=max(0.1, deadline - time.monotonic() - 0.2))
    hub.stop()
