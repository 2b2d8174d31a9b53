"""The benchmark's baseline: a bare relay on the gateway's stack.

    SKYEIM_RELAY_SECRET=... python -m skyeim.bench.relay --port 10399

Flask under gevent's WSGIServer with gevent-websocket's own handler, one
greenlet pair per connection (the view's greenlet reads, a writer greenlet
drains a queue and sends a protocol ping every 30 s, as the gateway does), the
user taken from the same HS256 JWT. It sends ``connected`` on accept, answers
``ping`` with ``pong``, and relays each ``chat`` to the recipient's
connection by user id (adding ``fromUserId``). Nothing else: no storage, no
acks, no presence, no unread push, no validation beyond JSON.

Two settings that the gateway also makes are applied, so that the ratio
measures the gateway's work and not a difference in socket setup: TCP_NODELAY
on every connection, and unmasking in wsaccel's C code instead of
gevent-websocket's per-byte Python loop.

GET /stats answers ``{"connections": N}``. Stops on SIGTERM/SIGINT.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
from flask import Flask, request  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402
from gevent.queue import Empty, Full, Queue  # noqa: E402
from geventwebsocket.exceptions import WebSocketError  # noqa: E402
from geventwebsocket.handler import WebSocketHandler  # noqa: E402
from geventwebsocket.websocket import Header  # noqa: E402
from wsaccel.xormask import XorMaskerSimple  # noqa: E402

from skyeim import tokens  # noqa: E402

PING_INTERVAL = 30.0
QUEUE_SIZE = 256


def _unmask(self, payload):
    return XorMaskerSimple(self.mask).process(bytes(payload))


Header.mask_payload = Header.unmask_payload = _unmask


class Handler(WebSocketHandler):
    def handle(self):
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        super().handle()

    def log_request(self):
        pass


class Conn:
    __slots__ = ("ws", "uid", "queue", "closed")

    def __init__(self, ws, uid: int):
        self.ws, self.uid = ws, uid
        self.queue: Queue = Queue(QUEUE_SIZE)
        self.closed = False

    def send(self, text: str) -> None:
        try:
            self.queue.put_nowait(text)
        except Full:
            self.closed = True
            gevent.spawn(self.ws.close)

    def write_pump(self) -> None:
        ws, queue = self.ws, self.queue
        try:
            while not self.closed:
                try:
                    item = queue.get(timeout=PING_INTERVAL)
                except Empty:
                    ws.send_frame(b"", ws.OPCODE_PING)
                    continue
                if item is None:
                    return
                ws.send(item)
        except (WebSocketError, OSError):
            pass


def create_app(secret: str) -> Flask:
    app = Flask("skyeim.bench.relay")
    conns: dict[int, Conn] = {}
    pong = json.dumps({"type": "pong", "data": None})

    @app.route("/ws", websocket=True)
    def ws_view():
        ws = request.environ.get("wsgi.websocket")
        if ws is None:
            return "a WebSocket upgrade is required", 400
        try:
            uid = tokens.verify(secret, request.args.get("token", "")).user_id
        except tokens.InvalidToken:
            ws.close(1008)
            return ""
        me = Conn(ws, uid)
        old = conns.get(uid)
        conns[uid] = me
        if old is not None:
            old.closed = True
            gevent.spawn(old.ws.close, 4001)
        me.send(json.dumps({"type": "connected", "data": {"userId": uid}}))
        writer = gevent.spawn(me.write_pump)
        try:
            while True:
                message = ws.receive()
                if message is None:
                    break
                try:
                    frame = json.loads(message)
                    kind = frame.get("type")
                except (ValueError, AttributeError):
                    continue
                if kind == "chat":
                    data = frame.get("data") or {}
                    peer = conns.get(data.get("toUserId"))
                    if peer is not None:
                        data["fromUserId"] = uid
                        peer.send(json.dumps({"type": "chat", "data": data}))
                elif kind == "ping":
                    me.send(pong)
        except (WebSocketError, OSError):
            pass
        finally:
            if conns.get(uid) is me:
                del conns[uid]
            me.closed = True
            try:
                me.queue.put_nowait(None)        # wake the writer
            except Full:
                pass
            writer.join(timeout=1)
            writer.kill(block=False)
        return ""

    @app.get("/stats")
    def stats():
        return {"connections": len(conns)}

    return app


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="The benchmark's bare relay baseline.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    secret = os.environ.get("SKYEIM_RELAY_SECRET")
    if not secret:
        print("error: set SKYEIM_RELAY_SECRET (the HS256 secret of the tokens)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    server = WSGIServer((args.host, args.port), create_app(secret), handler_class=Handler,
                        backlog=2048, log=None)
    server.start()
    stop = gevent.event.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stop.set)
    stop.wait()
    server.stop(timeout=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
