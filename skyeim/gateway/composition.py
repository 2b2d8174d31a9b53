"""The Gateway: the flows of PROTOCOL.md sections 1 to 5, over the hub and the services.

- ``serve(ws, claims)``: one connection's life: the online flow (register,
  presence, unread push, `connected`), the read pump, and the offline flow.
- ``handle_messages``: client frames (ping, chat, read, auth), a burst at a time.
- ``chat_written``: a chat reached a socket; the DeliveryRecorder records it
  as delivered and acks the sender.
- ``shutdown``: the graceful stop.
"""
from __future__ import annotations

import logging
import time

import gevent
from gevent.pool import Pool
from gevent.queue import Full, Queue

from skyeim import tokens
from skyeim.config import GatewayConfig
from skyeim.gateway.frames import codec as frames
from skyeim.gateway.backends.clients import Backends, BackendRejected, BackendUnavailable
from skyeim.gateway.backends.batching import collect
from skyeim.gateway.features.devices import UNKNOWN_PLATFORM, Devices
from skyeim.gateway.frames.codec import ClientFrame, FrameError
from skyeim.gateway.features.groups import GroupChat, GroupRead, Groups
from skyeim.gateway.routing.hub import Hub
from skyeim.gateway.features.revocation import Revocations
from skyeim.gateway.transport.session import (CLOSE_REPLACED, CLOSE_TOO_SLOW, SLOW_CLIENT_GRACE, Outgoing,
                                     Session)
from skyeim.gateway.features.sync import Sync, Syncer
from skyeim.gateway.transport.websocket import CLOSE_GOING_AWAY, WebSocket
from skyeim.metrics import GatewayMetrics

log = logging.getLogger(__name__)

PRESENCE_CONCURRENCY = 64     # offline notifications (friend list fetches) at once
BACKLOG_WRITE_TIMEOUT = 30.0   # s a connecting client may leave its backlog unread before 4002
MAX_BACKLOG_PAGES = 100_000    # bound on the unread-push loop (x UnreadPageSize messages)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Gateway:
    def __init__(self, cfg: GatewayConfig, backends: Backends):
        self.cfg = cfg
        self.backends = backends
        self.metrics = GatewayMetrics()
        for svc in backends.all():
            svc.metrics = self.metrics
        if cfg.cluster.enabled:
            from skyeim.gateway.routing.cluster import ClusterHub   # needs the redis package
            self.hub: Hub = ClusterHub(cfg.cluster, self._users_gone, self._users_back)
        else:
            self.hub = Hub()
        self.devices = Devices(self)
        self.hub.multi_device = self.devices.multi
        self.presence = Pool(PRESENCE_CONCURRENCY)      # offline notifications in flight
        # user id -> its offline notification in flight: a quick reconnect's `online`
        # waits for it, so friends see offline then online, never online twice
        self._going_offline: dict[int, gevent.Greenlet] = {}
        self.connections = 0            # accepted sockets not yet closed (MaxConnections)
        self.sessions: set[Session] = set()   # every live session, in the hub or not yet
        self.echo_sockets: set[WebSocket] = set()   # WebSocket.EchoPath connections (a test aid)
        self.stopping = False
        self.recorder = DeliveryRecorder(self)
        self.revocations = Revocations(self)
        self.syncer = Syncer(self)
        self.groups = Groups(self)

    # -- admission -------------------------------------------------------------------

    def verify_token(self, token: str) -> tokens.Claims:
        claims = tokens.verify(self.cfg.auth.access_secret, token)
        if self.revocations.is_revoked(claims):
            raise tokens.InvalidToken("the token was revoked")
        return claims

    def has_room(self) -> bool:
        limit = self.cfg.web_socket.max_connections
        return not self.stopping and (limit == 0 or self.connections < limit)

    # -- one connection --------------------------------------------------------------

    def serve(self, ws: WebSocket, claims: tokens.Claims, platform: str = UNKNOWN_PLATFORM) -> None:
        """Run one accepted connection until it closes (in the handler's greenlet)."""
        session = Session(ws, claims.user_id, claims.expires_at, self, platform)
        self.connections += 1
        self.sessions.add(session)
        self.revocations.track(session, claims.gen)
        self.metrics.connections.inc()
        log.info("conn=%s user=%s connected", session.conn_id, session.user_id)
        session.writer = gevent.spawn(session.write_pump)
        session.online = gevent.spawn(self._bring_online_or_close, session)
        if self.stopping:     # accepted in the instant the stop began: it goes too
            session.stop_reading = True
            gevent.spawn(session.close_after_flush, CLOSE_GOING_AWAY)
        code = None
        try:
            code = session.read_pump()
        finally:
            if session.online is not None:
                session.online.kill(block=False)
            session.finish()
            self.sessions.discard(session)
            try:
                # (alone, a stopping gateway is closing every friend too: nobody to tell)
                if self.hub.unregister(session) and (not self.stopping or self.hub.clustered):
                    self._report_offline(session.user_id)
                self.metrics.users_online.set(self.hub.local_users())
            finally:
                # only now: a graceful stop waits for this count to reach 0 and then for
                # the presence pool, so the `offline` above must be in the pool by then
                self.connections -= 1
                self.metrics.connections.dec()
            code = code if code is not None else ws.close_code
            self.metrics.closes.labels(str(code)).inc()
            log.info("conn=%s user=%s closed code=%s", session.conn_id, session.user_id, code)

    def _bring_online_or_close(self, session: Session) -> None:
        try:
            self._bring_online(session)
        except gevent.GreenletExit:
            raise
        except Exception:
            # a client must never wait forever for `connected`: close, it reconnects
            log.exception("conn=%s user=%s online flow failed: closing 1011",
                          session.conn_id, session.user_id)
            session.close(1011, "internal error")
        finally:
            session.online = None       # a finished greenlet held for the connection's life costs ~1 KB

    def _bring_online(self, session: Session) -> None:
        """Steps 1-4 of PROTOCOL.md section 1: register, presence, unread push, connected."""
        uid = session.user_id
        first, replaced = self.hub.register(session, self.devices.mode)
        self.metrics.users_online.set(self.hub.local_users())
        for old in replaced:
            log.info("conn=%s user=%s replaced by conn=%s: closing 4001",
                     old.conn_id, uid, session.conn_id)
            gevent.spawn(old.close, CLOSE_REPLACED, "replaced by a newer login")
        friends = self._friends_or_empty(uid)
        online_friends = self.hub.online_among(friends)
        if first and online_friends:
            pending = self._going_offline.get(uid)
            if pending is not None:
                pending.join(timeout=self.backends.friend.timeout + 1)   # offline first
            text = frames.encode("online", {"userId": uid, "timestamp": now_ms()})
            for fid in online_friends:
                self.hub.send_to_user(fid, text)
        try:
            pushed = self._push_unread(session)
        except Full:
            log.warning("conn=%s user=%s did not read its backlog: closing 4002",
                        session.conn_id, uid)
            session.close(CLOSE_TOO_SLOW, "backlog not read")
            return
        try:
            session.go_live(frames.encode("connected", {
                "userId": uid, "onlineCount": self.hub.online_count(),
                "onlineFriends": online_friends, "unreadPushed": pushed,
                "serverTime": now_ms()}), timeout=BACKLOG_WRITE_TIMEOUT)
            self.groups.after_connected(session)
        except Full:
            log.warning("conn=%s user=%s did not read its backlog: closing 4002",
                        session.conn_id, uid)
            session.close(CLOSE_TOO_SLOW, "backlog not read")

    def _push_unread(self, session: Session) -> int:
        """Push every unread message, oldest first, a page at a time; returns the count."""
        page_size = self.cfg.web_socket.unread_page_size
        cursor, pushed = None, 0
        for _ in range(MAX_BACKLOG_PAGES):
            try:
                page = self.backends.message.unread(session.user_id, cursor, page_size)
            except (BackendUnavailable, BackendRejected) as e:
                # the user is live anyway; the rest is pushed at the next connect
                log.warning("conn=%s user=%s unread push stopped: %s",
                            session.conn_id, session.user_id, e)
                break
            for m in page.get("messages", []):
                session.push_backlog(Outgoing(frames.encode_chat(m),
                                              (m["fromUserId"], m["msgId"]), m["seq"]),
                                     timeout=BACKLOG_WRITE_TIMEOUT)
                pushed += 1
            cursor = page.get("nextCursor")
            if not page.get("hasMore") or cursor is None or session.closing:
                break
        return pushed

    def _report_offline(self, user_id: int) -> None:
        # registered before it starts (the pool may make us wait), so that a quick
        # reconnect's `online` always finds it and goes after it
        g = gevent.Greenlet(self._notify_presence, user_id, "offline", None)
        self._going_offline[user_id] = g
        self.presence.start(g)

    def _users_gone(self, user_ids: list[int]) -> None:
        """Users of a cluster node that died are offline now: tell their friends."""
        for uid in user_ids:
            self._report_offline(uid)

    def _users_back(self, user_ids: list[int]) -> None:
        """Users this node holds were given up by the cluster and are back: tell friends."""
        for uid in user_ids:
            self.presence.spawn(self._notify_presence, uid, "online", None)

    def start(self) -> None:
        self.hub.start()
        self.revocations.start()

    def _friends_or_empty(self, user_id: int) -> list[int]:
        try:
            return self.backends.friend.friends(user_id)
        except (BackendUnavailable, BackendRejected) as e:
            log.warning("user=%s friend list unavailable, presence skipped: %s", user_id, e)
            return []

    def _notify_presence(self, user_id: int, kind: str, friends: list[int] | None) -> None:
        if friends is None:
            friends = self._friends_or_empty(user_id)
        text = frames.encode(kind, {"userId": user_id, "timestamp": now_ms()})
        try:
            for fid in self.hub.online_among(friends):
                self.hub.send_to_user(fid, text)
        finally:
            if kind == "offline" and self._going_offline.get(user_id) is gevent.getcurrent():
                del self._going_offline[user_id]

    # -- client frames ---------------------------------------------------------------

    def handle_messages(self, session: Session, messages: list[str | bytes]) -> None:
        """Client frames of one connection, in the order they came. Consecutive chats
        (a client's burst, read in one pass) are stored in one batch, in order; the
        chats ahead of any other frame are handled first, so answers keep the order."""
        chats: list[frames.Chat] = []
        for message in messages:
            if session.closing or session.stop_reading:
                return                    # closing (4001/4002/4003...): the rest is not acted on
            frame = self._accept(session, message)
            if isinstance(frame, frames.Chat):
                chats.append(frame)
                continue
            if chats:
                self._handle_chats(session, chats)
                chats = []
            if isinstance(frame, str):    # refused: its error frame
                session.reply(frame)
            else:
                self._dispatch(session, frame)
        if chats and not (session.closing or session.stop_reading):
            self._handle_chats(session, chats)

    def _accept(self, session: Session, message: str | bytes) -> ClientFrame | str:
        """The parsed frame, or the error frame (text) that refuses it."""
        metrics = self.metrics
        if not session.take_token():
            metrics.frame_in("rate_limited")
            msg_id = request_id = None
            if isinstance(message, str):
                try:
                    frame = frames.parse(message, session.user_id, self.cfg.chat.max_content_length)
                    msg_id = frame.given_msg_id if isinstance(frame, (frames.Chat, GroupChat)) else None
                    request_id = frame.request_id if isinstance(frame, Sync) else None
                except FrameError as e:
                    msg_id, request_id = e.msg_id, e.request_id
            return frames.encode_error("rate_limited", "too many frames; slow down", msg_id,
                                       request_id)
        if isinstance(message, bytes):
            metrics.frame_in("binary")
            return frames.encode_error("unsupported_frame",
                                       "binary frames are not supported; send JSON text")
        try:
            frame = frames.parse(message, session.user_id, self.cfg.chat.max_content_length)
        except FrameError as e:
            metrics.frame_in("invalid")
            log.debug("conn=%s user=%s error %s: %s", session.conn_id, session.user_id,
                      e.code, e.message)
            return frames.encode_error(e.code, e.message, e.msg_id, e.request_id)
        metrics.frame_in(frame.kind)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("conn=%s user=%s frame %s", session.conn_id, session.user_id, frame.kind)
        return frame

    def _dispatch(self, session: Session, frame: ClientFrame) -> None:
        try:
            if isinstance(frame, frames.Ping):
                session.reply(frames.PONG)
            elif isinstance(frame, frames.Read):
                self._handle_read(session, frame)
            elif isinstance(frame, frames.Auth):
                self._handle_auth(session, frame)
            elif isinstance(frame, Sync):
                self.syncer.handle(session, frame)
            elif isinstance(frame, frames.Typing):
                self.devices.relay_typing(session, frame)
            elif isinstance(frame, GroupChat):
                self.groups.handle_chat(session, frame)
            elif isinstance(frame, GroupRead):
                self.groups.handle_read(session, frame)
        except FrameError as e:
            log.debug("conn=%s user=%s error %s: %s", session.conn_id, session.user_id, e.code, e.message)
            session.reply(frames.encode_error(e.code, e.message, e.msg_id, e.request_id))
        except Exception:
            log.exception("conn=%s user=%s frame handling failed", session.conn_id, session.user_id)
            msg_id = frame.given_msg_id if isinstance(frame, GroupChat) else None
            session.reply(frames.encode_error("internal", "internal error", msg_id,
                                             frame.request_id if isinstance(frame, Sync) else None))

    def _handle_chats(self, session: Session, chats: list[frames.Chat]) -> None:
        """Store ``chats`` (one connection's, in order) in one batch, then for each in
        order: its `sent` ack and the delivery, or its error frame."""
        uid = session.user_id
        t0 = time.perf_counter()
        outcomes: list = [None] * len(chats)    # a stored answer, or the FrameError to send
        if self.cfg.chat.require_friendship:
            failed = None
            try:
                friends = set(self.backends.friend.friends(uid))
            except (BackendUnavailable, BackendRejected):
                failed = ("unavailable", "the friend service is unavailable")
            except Exception:
                log.exception("conn=%s user=%s friend check failed", session.conn_id, uid)
                failed = ("internal", "internal error")
            for i, chat in enumerate(chats):
                if failed is not None:
                    outcomes[i] = FrameError(*failed, chat.given_msg_id)
                elif chat.to_user_id not in friends:
                    outcomes[i] = FrameError("not_friends", "you can only chat with friends",
                                             chat.given_msg_id)
        wanted = [i for i, outcome in enumerate(outcomes) if outcome is None]
        if wanted:
            try:
                stored = self.backends.message.send_many([
                    {"msgId": chats[i].msg_id, "fromUserId": uid, "toUserId": chats[i].to_user_id,
                     "content": chats[i].content, "contentType": chats[i].content_type}
                    for i in wanted])
            except (BackendUnavailable, BackendRejected) as e:   # the whole batch
                stored = [e] * len(wanted)
            except Exception:
                log.exception("conn=%s user=%s storing chats failed", session.conn_id, uid)
                stored = [FrameError("internal", "internal error") for _ in wanted]
            for i, answer in zip(wanted, stored):
                err_id = chats[i].given_msg_id
                if isinstance(answer, BackendUnavailable):
                    answer = FrameError("unavailable", "the message service is unavailable; retry",
                                        err_id)
                elif isinstance(answer, BackendRejected):
                    answer = FrameError("bad_request" if answer.status == 400 else "internal",
                                        answer.message, err_id)
                elif isinstance(answer, FrameError):
                    answer = FrameError(answer.code, answer.message, err_id)
                outcomes[i] = answer
        for chat, outcome in zip(chats, outcomes):
            if isinstance(outcome, FrameError):
                log.debug("conn=%s user=%s error %s: %s", session.conn_id, uid, outcome.code,
                          outcome.message)
                session.reply(frames.encode_error(outcome.code, outcome.message, outcome.msg_id))
                continue
            try:
                self._chat_stored(session, chat, outcome, t0)
            except Exception:
                log.exception("conn=%s user=%s chat handling failed", session.conn_id, uid)
                session.reply(frames.encode_error("internal", "internal error", chat.given_msg_id))

    def _chat_stored(self, session: Session, chat: frames.Chat, stored: dict, t0: float) -> None:
        """The `sent` ack of a stored chat, then its delivery to the recipient."""
        uid, msg_id = session.user_id, chat.msg_id
        seq = stored["seq"]
        session.reply(frames.encode_ack(msg_id, "sent", stored["createdAt"], seq,
                                       duplicate=bool(stored.get("duplicate"))))
        self.metrics.sent_latency.observe(time.perf_counter() - t0)
        if not stored.get("duplicate"):
            self.devices.copy_sent(session, stored)
        if stored.get("duplicate") and stored.get("delivered"):
            session.reply(frames.encode_ack(msg_id, "delivered", stored["deliveredAt"], seq))
            return
        self.hub.send_to_user(chat.to_user_id,
                              Outgoing(frames.encode_chat(stored), (uid, msg_id), seq, t0))

    def _handle_read(self, session: Session, read: frames.Read) -> None:
        try:
            result = self.backends.message.mark_read(session.user_id, read.peer_id,
                                                     list(read.msg_ids))
        except BackendUnavailable:
            raise FrameError("unavailable", "the message service is unavailable; retry")
        except BackendRejected as e:
            raise FrameError("bad_request" if e.status == 400 else "internal", e.message)
        if result.get("msgIds"):
            self.hub.send_to_user(read.peer_id, frames.encode("read", {
                "peerId": session.user_id, "msgIds": result["msgIds"],
                "timestamp": result["readAt"]}))
        self.devices.sync_read(session, read.peer_id, result)

    def _handle_auth(self, session: Session, auth: frames.Auth) -> None:
        try:
            claims = self.verify_token(auth.token)
        except (tokens.InvalidToken, UnicodeEncodeError):
            # a lone surrogate (a JSON "\ud800" escape) is no UTF-8, so no JWT either
            raise FrameError("unauthorized", "the token is invalid or expired")
        if claims.user_id != session.user_id:
            raise FrameError("forbidden", "the token is for another user")
        session.refresh_token(claims.expires_at)
        self.revocations.track(session, claims.gen)

    # -- delivery -----------------------------------------------------------------

    def chat_written(self, session: Session, item: Outgoing) -> None:
        self.recorder.add(session.user_id, item)

    # -- graceful stop ----------------------------------------------------------------

    def shutdown(self, timeout: float) -> None:
        """Stop reading, finish frames in flight, flush queues, close everyone with 1001."""
        deadline = time.monotonic() + timeout
        self.stopping = True
        sessions = list(self.sessions)    # also those still catching up (not in the hub yet)
        for s in sessions:
            s.stop_reading = True
        while any(s.busy for s in sessions) and time.monotonic() < deadline - 2:
            gevent.sleep(0.02)
        for s in sessions:
            gevent.spawn(s.close_after_flush, CLOSE_GOING_AWAY)
        for ws in list(self.echo_sockets):
            gevent.spawn(ws.close, CLOSE_GOING_AWAY)
        while self.connections > 0 and time.monotonic() < deadline - 1:
            gevent.sleep(0.02)
        self.recorder.flush(max(0.1, deadline - time.monotonic() - 0.5))
        self.presence.join(timeout=max(0.1, deadline - time.monotonic() - 0.2))
        self.hub.stop()


class DeliveryRecorder:
    """Records written chats as delivered, in batches, and acks their senders.

    Writers hand over (recipient, chat) without waiting on HTTP; a few worker
    greenlets drain the queue, one service call (and transaction) per batch.
    """

    QUEUE_SIZE = 10_000
    WORKERS = 1              # one call in flight (see MessageService.BATCH_CONCURRENCY)
    BATCH = 500
    LINGER = 0.002           # s a record may wait for others to share its call (batching.py)
    CONCURRENT_CALLS = 64    # senders being sent their `delivered` acks at once

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.queue: Queue = Queue(maxsize=self.QUEUE_SIZE)
        self.calls = Pool(self.CONCURRENT_CALLS)
        self.workers = [gevent.spawn(self._work) for _ in range(self.WORKERS)]
        self.pending = 0

    def add(self, recipient: int, item: Outgoing) -> None:
        try:
            # a full queue slows the writers down a little rather than losing the record;
            # if it stays full, the message simply stays undelivered and is pushed again
            self.queue.put((recipient, item), timeout=1.0)
            self.pending += 1
        except Full:
            log.warning("delivery recorder full: %s stays undelivered", item.key)

    def _work(self) -> None:
        last = 0.0
        while True:                       # runs for the life of the process
            first = self.queue.get()
            batch = collect(self.queue, first, self.BATCH, self.LINGER, last)
            last = time.monotonic()
            try:
                self._record(batch)
            except Exception:
                log.exception("recording deliveries failed")
            finally:
                self.pending -= len(batch)

    def _record(self, batch: list[tuple[int, Outgoing]]) -> None:
        self.gateway.metrics.batch_size.labels("deliveries").observe(len(batch))
        by_recipient: dict[int, dict[tuple[int, str], Outgoing]] = {}
        for recipient, item in batch:
            by_recipient.setdefault(recipient, {})[item.key] = item
        try:
            # every recipient of the batch in one call (and one transaction)
            marked = self.gateway.backends.message.mark_delivered_many(
                {recipient: list(items) for recipient, items in by_recipient.items()})
        except (BackendUnavailable, BackendRejected) as e:
            log.warning("%d deliveries not recorded (%s); pushed again at next connect",
                        len(batch), e)
            return
        latency = self.gateway.metrics.delivered_latency
        acks_by_sender: dict[int, list[str]] = {}
        for recipient, acks in marked.items():
            items = by_recipient[recipient]
            for m in acks:
                item = items.get((m["fromUserId"], m["msgId"]))
                if item is None:
                    continue
                acks_by_sender.setdefault(m["fromUserId"], []).append(frames.encode_ack(
                    m["msgId"], "delivered", m["deliveredAt"], item.seq))
                if item.t0 is not None:
                    latency.observe(time.perf_counter() - item.t0)
        # a sender slow to read may make its acks wait (SLOW_CLIENT_GRACE): not the others'
        for sender, texts in acks_by_sender.items():
            self.calls.spawn(self._ack_sender, sender, texts)

    def _ack_sender(self, sender: int, texts: list[str]) -> None:
        hub = self.gateway.hub
        for text in texts:
            hub.send_to_user(sender, text, wait=SLOW_CLIENT_GRACE)

    def flush(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.pending > 0 and time.monotonic() < deadline:
            gevent.sleep(0.01)
        self.calls.join(timeout=max(0.0, deadline - time.monotonic()))
