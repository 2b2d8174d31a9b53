"""A connection's life (PROTOCOL.md section 1), after the handshake accepted it:

1. the online flow: register in the hub (a MultiLogin replacement closes the
   older connection with 4001), friends hear `online`, the unread backlog is
   pushed oldest first, then `connected`, then what follows it (group_unread);
2. the read pump, until the socket closes (frames go to the dispatcher);
3. the offline flow: out of the hub, friends hear `offline` if it was the
   user's last connection.

Plus the application-level ``ping`` frame (answered ``pong``), for clients that
cannot see protocol pings.
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import gevent
from gevent.queue import Full

from skyeim.config import WebSocketConfig
from skyeim.gateway.backends.clients import BackendFailure, MessageService
from skyeim.gateway.features.base import AfterConnected, FriendPresence, TokenTracking
from skyeim.gateway.frames.codec import PONG, encode, encode_chat
from skyeim.gateway.frames.registry import FrameRegistry, FrameType
from skyeim.gateway.routing.hub import Hub
from skyeim.gateway.transport.connections import Connections
from skyeim.gateway.transport.session import Outgoing, Session, SessionContext
from skyeim.gateway.transport.websocket import WebSocket
from skyeim.metrics import GatewayMetrics
from skyeim.protocol import UNKNOWN_PLATFORM, CloseCode
from skyeim.tokens import Claims

log = logging.getLogger(__name__)

BACKLOG_WRITE_TIMEOUT = 30.0   # s a connecting client may leave its backlog unread before 4002
MAX_BACKLOG_PAGES = 100_000    # bound on the unread-push loop (x UnreadPageSize messages)


class Ping:
    kind = "ping"
    __slots__ = ()


PING = Ping()


def parse_ping(data, sender_id: int) -> Ping:
    return PING                   # any data is ignored


def handle_ping(session: Session, ping: Ping) -> None:
    session.reply(PONG)


def register(frames: FrameRegistry) -> None:
    """The connection's own frames (a function: the sessions' dispatcher needs the
    registry complete before a ConnectionLife can be built)."""
    frames.add(FrameType("ping", parse_ping, handle=handle_ping))
    frames.add_server_types("connected", "pong")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class ConnectionLife:
    def __init__(self, *, ws_cfg: WebSocketConfig, hub: Hub, messages: MessageService,
                 connections: Connections, presence: FriendPresence, tokens: TokenTracking,
                 session_context: SessionContext, metrics: GatewayMetrics,
                 after_connected: Sequence[AfterConnected] = ()):
        self.hub, self.messages, self.connections = hub, messages, connections
        self.presence, self.tokens, self.context = presence, tokens, session_context
        self.metrics = metrics
        self.multi_login = ws_cfg.multi_login
        self.unread_page_size = ws_cfg.unread_page_size
        self.after_connected = tuple(after_connected)

    # -- one connection -------------------------------------------------------------

    def serve(self, ws: WebSocket, claims: Claims, platform: str = UNKNOWN_PLATFORM) -> None:
        """Run one accepted connection until it closes (in the handler's greenlet)."""
        connections, metrics = self.connections, self.metrics
        session = Session(ws, claims.user_id, claims.expires_at, self.context, platform)
        connections.opened()
        connections.sessions.add(session)
        self.tokens.track(session, claims.gen)
        log.info("conn=%s user=%s connected", session.conn_id, session.user_id)
        session.writer = gevent.spawn(session.write_pump)
        session.online = gevent.spawn(self._bring_online_or_close, session)
        if connections.stopping:     # accepted in the instant the stop began: it goes too
            session.stop_reading = True
            gevent.spawn(session.close_after_flush, CloseCode.GOING_AWAY)
        code = None
        try:
            code = session.read_pump()
        finally:
            if session.online is not None:
                session.online.kill(block=False)
            session.finish()
            connections.sessions.discard(session)
            try:
                # (alone, a stopping gateway is closing every friend too: nobody to tell)
                if self.hub.unregister(session) and (not connections.stopping or self.hub.clustered):
                    self.presence.report_offline(session.user_id)
                metrics.users_online.set(self.hub.local_users())
            finally:
                # only now: a graceful stop waits for this count to reach 0 and then for
                # the presence pool, so the `offline` above must be in the pool by then
                connections.closed()
            code = code if code is not None else ws.close_code
            metrics.closes.labels(str(code)).inc()
            log.info("conn=%s user=%s closed code=%s", session.conn_id, session.user_id, code)

    def _bring_online_or_close(self, session: Session) -> None:
        try:
            self._bring_online(session)
        except gevent.GreenletExit:
            raise
        except Exception:
            # a client must never wait forever for `connected`: close, it reconnects
            log.exception("conn=%s user=%s online flow failed: closing %d",
                          session.conn_id, session.user_id, CloseCode.INTERNAL)
            session.close(CloseCode.INTERNAL, "internal error")
        finally:
            session.online = None       # a finished greenlet held for the connection's life costs ~1 KB

    def _bring_online(self, session: Session) -> None:
        """Steps 1-4 of PROTOCOL.md section 1: register, presence, unread push, connected."""
        uid = session.user_id
        first, replaced = self.hub.register(session, self.multi_login)
        self.metrics.users_online.set(self.hub.local_users())
        for old in replaced:
            log.info("conn=%s user=%s replaced by conn=%s: closing 4001",
                     old.conn_id, uid, session.conn_id)
            gevent.spawn(old.close, CloseCode.REPLACED, "replaced by a newer login")
        online_friends = self.presence.online_friends(uid)
        if first:
            self.presence.announce_online(uid, online_friends)
        try:
            pushed = self._push_unread(session)
            session.go_live(encode("connected", {
                "userId": uid, "onlineCount": self.hub.online_count(),
                "onlineFriends": online_friends, "unreadPushed": pushed,
                "serverTime": now_ms()}), timeout=BACKLOG_WRITE_TIMEOUT)
        except Full:
            log.warning("conn=%s user=%s did not read its backlog: closing 4002",
                        session.conn_id, uid)
            session.close(CloseCode.TOO_SLOW, "backlog not read")
            return
        for then in self.after_connected:
            then.after_connected(session)

    def _push_unread(self, session: Session) -> int:
        """Push every unread message, oldest first, a page at a time; returns the count."""
        page_size = self.unread_page_size
        cursor, pushed = None, 0
        for _ in range(MAX_BACKLOG_PAGES):
            try:
                page = self.messages.unread(session.user_id, cursor, page_size)
            except BackendFailure as e:
                # the user is live anyway; the rest is pushed at the next connect
                log.warning("conn=%s user=%s unread push stopped: %s",
                            session.conn_id, session.user_id, e)
                break
            for m in page.get("messages", []):
                session.push_backlog(Outgoing(encode_chat(m), (m["fromUserId"], m["msgId"]),
                                              m["seq"]), timeout=BACKLOG_WRITE_TIMEOUT)
                pushed += 1
            cursor = page.get("nextCursor")
            if not page.get("hasMore") or cursor is None or session.closing:
                break
        return pushed
