"""1:1 chat (PROTOCOL.md section 3): a `chat` frame is validated, checked
against the friend list (Chat.RequireFriendship), screened (none today; the
before-send hook of 9.4 plugs in as a ChatScreen), stored, acked `sent` to the
sender, copied to the sender's other devices, and handed to the recipient's
connections; its `delivered` ack follows from features/delivery.py once it is
written to a socket.

A client's burst of chats (read in one pass) goes through these steps
together: one friend-list lookup and one store batch, answers in order.
``deliver`` needs no sender session, so a chat stored another way (a server
API) is delivered exactly like a client's.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Sequence

import gevent.event

from skyeim.gateway.backends.clients import (BackendFailure, BackendUnavailable, FriendService,
                                             MessageService)
from skyeim.gateway.features.base import (BlockCheck, ChatListener, ChatScreen, OwnDevices,
                                          backend_error)
from skyeim.gateway.frames.codec import (FrameError, bad_request, chat_content, content_type,
                                         data_object, encode_ack, encode_chat, optional_msg_id)
from skyeim.gateway.frames.registry import Echo, FrameRegistry, FrameType
from skyeim.gateway.routing.hub import Hub
from skyeim.gateway.transport.session import Outgoing, Session
from skyeim.metrics import GatewayMetrics
from skyeim.protocol import ErrorCode, is_user_id

log = logging.getLogger(__name__)

POST_WRITE_WAIT = 1.0     # s a server API chat waits to be written to a socket here (9.2)


@dataclass(frozen=True, slots=True)
class Chat:
    kind = "chat"
    msg_id: str                   # the client's, or one the server made
    to_user_id: int
    content: str
    content_type: int
    given_msg_id: str | None      # the client's only: what an error frame may echo


def parse_chat(data, sender_id: int, max_content_length: int) -> Chat:
    data = data_object(data, "chat")
    msg_id = optional_msg_id(data)
    to = data.get("toUserId")
    if not is_user_id(to):
        raise bad_request("toUserId must be an integer user id", msg_id)
    if to == sender_id:
        raise bad_request("a chat to oneself is not allowed", msg_id)
    content = chat_content(data, max_content_length, msg_id)
    ctype = content_type(data, msg_id)
    return Chat(msg_id if msg_id is not None else str(uuid.uuid4()), to, content, ctype, msg_id)


class OneToOneChat:
    def __init__(self, *, messages: MessageService, friends: FriendService, hub: Hub,
                 own_devices: OwnDevices, metrics: GatewayMetrics, require_friendship: bool,
                 max_content_length: int, screens: Sequence[ChatScreen] = (),
                 listeners: Sequence[ChatListener] = (), blocks: BlockCheck | None = None):
        self.messages, self.friends, self.hub = messages, friends, hub
        self.blocks = blocks          # a block between the two refuses the chat (features/relations.py)
        self.own_devices = own_devices
        self.sent_latency = metrics.sent_latency
        self.require_friendship = require_friendship
        self.max_content_length = max_content_length
        self.screens = tuple(screens)
        self.listeners = tuple(listeners)

    def register(self, frames: FrameRegistry) -> None:
        frames.add(FrameType("chat", self.parse, handle_batch=self.handle_batch,
                             echoes=Echo.MSG_ID))
        frames.add_server_types("ack")

    def parse(self, data, sender_id: int) -> Chat:
        return parse_chat(data, sender_id, self.max_content_length)

    # -- the pipeline -----------------------------------------------------------------

    def handle_batch(self, session: Session, chats: list[Chat]) -> None:
        """``chats``, one connection's, in order: each gets its `sent` ack and is
        delivered, or gets its error frame."""
        t0 = time.perf_counter()
        # a stored answer, or the FrameError to send, per chat
        outcomes: list = [None] * len(chats)
        if self.require_friendship:
            self._check_friendship(session, chats, outcomes)
        if self.blocks is not None:
            self._check_blocks(session, chats, outcomes)
        drafts = self._screen(session.user_id, chats, outcomes)
        if drafts:
            self._store(session, chats, drafts, outcomes)
        to_deliver: list[dict] = []       # stored chats for their recipients, in order
        for chat, outcome in zip(chats, outcomes):
            if isinstance(outcome, FrameError):
                log.debug("conn=%s user=%s error %s: %s", session.conn_id, session.user_id,
                          outcome.code, outcome.message)
                session.reply(outcome.encode())
                continue
            try:
                if self._answer(session, chat, outcome, t0):
                    to_deliver.append(outcome)
            except Exception:
                log.exception("conn=%s user=%s chat handling failed", session.conn_id,
                              session.user_id)
                session.reply(FrameError(ErrorCode.INTERNAL, "internal error",
                                         chat.given_msg_id).encode())
        if to_deliver:
            copies = [s for s in to_deliver if not s.get("duplicate")]
            try:
                self.own_devices.copy_sent(session, copies)
            except Exception:      # acked `sent`: the other devices get them at their next sync
                log.exception("conn=%s user=%s copying chats to own devices failed",
                              session.conn_id, session.user_id)
            self._deliver_batch(to_deliver, t0)

    def _check_friendship(self, session: Session, chats: list[Chat], outcomes: list) -> None:
        try:
            friends = set(self.friends.friends(session.user_id))
        except Exception as e:
            if isinstance(e, BackendFailure):
                # a refusal too: the friendship cannot be checked, as if the service were down
                e = BackendUnavailable(str(e))
            else:
                log.exception("conn=%s user=%s friend check failed", session.conn_id,
                              session.user_id)
            for i, chat in enumerate(chats):
                outcomes[i] = backend_error(e, "friend", chat.given_msg_id)
            return
        for i, chat in enumerate(chats):
            if chat.to_user_id not in friends:
                outcomes[i] = FrameError(ErrorCode.NOT_FRIENDS, "you can only chat with friends",
                                         chat.given_msg_id)

    def _check_blocks(self, session: Session, chats: list[Chat], outcomes: list) -> None:
        """A chat between two users of whom one blocked the other: `not_friends`, as if
        they were not friends (the block is not revealed)."""
        peers = {chat.to_user_id for i, chat in enumerate(chats) if outcomes[i] is None}
        if not peers:
            return
        try:
            blocked = self.blocks.blocked_peers(session.user_id, peers)
        except Exception as e:
            if isinstance(e, BackendFailure):
                e = BackendUnavailable(str(e))     # cannot be checked: retry later
            else:
                log.exception("conn=%s user=%s block check failed", session.conn_id,
                              session.user_id)
            for i, chat in enumerate(chats):
                if outcomes[i] is None:
                    outcomes[i] = backend_error(e, "friend", chat.given_msg_id)
            return
        for i, chat in enumerate(chats):
            if outcomes[i] is None and chat.to_user_id in blocked:
                outcomes[i] = FrameError(ErrorCode.NOT_FRIENDS, "you can only chat with friends",
                                         chat.given_msg_id)

    def _screen(self, uid: int, chats: list[Chat], outcomes: list) -> dict[int, dict]:
        """The store bodies of the chats still wanted (index -> draft), after the screens."""
        drafts = {i: {"msgId": chat.msg_id, "fromUserId": uid, "toUserId": chat.to_user_id,
                      "content": chat.content, "contentType": chat.content_type}
                  for i, chat in enumerate(chats) if outcomes[i] is None}
        for screen in self.screens:
            if not drafts:
                break
            wanted = list(drafts)
            verdicts = screen.screen([drafts[i] for i in wanted],
                                     [chats[i].given_msg_id for i in wanted])
            for i, verdict in zip(wanted, verdicts):
                if isinstance(verdict, FrameError):
                    outcomes[i] = verdict
                    del drafts[i]
                else:
                    drafts[i] = verdict
        return drafts

    def _store(self, session: Session, chats: list[Chat], drafts: dict[int, dict],
               outcomes: list) -> None:
        wanted = list(drafts)
        try:
            stored = self.messages.send_many([drafts[i] for i in wanted])
        except BackendFailure as e:           # the whole batch
            stored = [e] * len(wanted)
        except Exception as e:
            log.exception("conn=%s user=%s storing chats failed", session.conn_id, session.user_id)
            stored = [e] * len(wanted)
        for i, answer in zip(wanted, stored):
            outcomes[i] = answer if isinstance(answer, dict) else \
                backend_error(answer, "message", chats[i].given_msg_id)

    def _answer(self, session: Session, chat: Chat, stored: dict, t0: float) -> bool:
        """The `sent` ack of a stored chat; whether it is still to be delivered."""
        msg_id, seq = chat.msg_id, stored["seq"]
        duplicate = bool(stored.get("duplicate"))
        session.reply(encode_ack(msg_id, "sent", stored["createdAt"], seq, duplicate=duplicate))
        self.sent_latency.observe(time.perf_counter() - t0)
        if duplicate and stored.get("delivered"):
            session.reply(encode_ack(msg_id, "delivered", stored["deliveredAt"], seq))
            return False
        return True

    def _deliver_batch(self, stored: list[dict], t0: float) -> None:
        """A burst's chats to their recipients in one hub call (in a cluster: two Redis
        round trips for all of them, not two per chat); then the listeners."""
        try:
            counts = self.hub.send_to_users([(s["toUserId"], _outgoing(s, t0)) for s in stored])
        except Exception:       # acked `sent` already: the store keeps them for the next connect
            log.exception("delivering %d stored chats failed", len(stored))
            return
        if self.listeners:
            for s, connections in zip(stored, counts):
                if not s.get("duplicate"):
                    for listener in self.listeners:
                        listener.chat_stored(s, connections)

    def deliver(self, stored: dict, t0: float | None = None) -> int:
        """Hand a stored chat to every connection of its recipient (on every node); how
        many took it. Written to a socket, it is recorded as delivered."""
        return self.hub.send_to_user(stored["toUserId"], _outgoing(stored, t0))

    def post(self, draft: dict, write_wait: float = POST_WRITE_WAIT) -> tuple[dict, bool]:
        """Store a chat made without a client (the server API, PROTOCOL.md 9.2: no
        friendship check, no screen, no acks to the sender) and deliver it as a client's:
        (the stored answer, delivered). Delivered: written to one of the recipient's
        sockets here within ``write_wait`` s, or handed to another node that holds one
        (or delivered before, for a duplicate). Raises the service's failure when not
        stored."""
        answer = self.messages.send_many([draft])[0]
        if not isinstance(answer, dict):
            raise answer
        if answer.get("duplicate") and answer.get("delivered"):
            return answer, True
        to = answer["toUserId"]
        written = gevent.event.Event()
        here = self.hub.local_count(to)
        connections = self.hub.send_to_user(to, Outgoing(
            encode_chat(answer), (answer["fromUserId"], answer["msgId"]), answer["seq"],
            ack=False, written=written))
        if not answer.get("duplicate"):
            for listener in self.listeners:
                listener.chat_stored(answer, connections)
        if connections > here:              # routed to another node holding the recipient
            return answer, True
        return answer, connections > 0 and written.wait(write_wait)


def _outgoing(stored: dict, t0: float | None) -> Outgoing:
    """A stored chat as queued on its recipient's sessions (recorded as delivered once written)."""
    return Outgoing(encode_chat(stored), (stored["fromUserId"], stored["msgId"]), stored["seq"], t0)
