"""The Gateway: the composition root. It builds every part of the gateway and
wires them together, and is what the Flask app (app.py, rest/) and
wsserver.py hold; it does nothing itself (docs/architecture.md has the map).

Each feature gets what it uses in its constructor: the hub, the service
clients, the metrics, its config section, and the capabilities of other
features it needs (features/base.py). Each feature registers its frame types
in the one FrameRegistry, which the dispatcher reads.
"""
from __future__ import annotations

from skyeim import tokens
from skyeim.config import GatewayConfig
from skyeim.fds import FdBudget
from skyeim.gateway.backends.clients import Backends
from skyeim.gateway.backends.files import FileRecords, storage_for
from skyeim.gateway.features import connection
from skyeim.gateway.features.auth import TokenRefresh
from skyeim.gateway.features.chat import OneToOneChat
from skyeim.gateway.features.connection import ConnectionLife
from skyeim.gateway.features.conversations import Conversations
from skyeim.gateway.features.delivery import DeliveryRecorder
from skyeim.gateway.features.devices import Devices
from skyeim.gateway.features.files import Files
from skyeim.gateway.features.friendships import Friendships
from skyeim.gateway.features.edits import MessageEdits
from skyeim.gateway.features.groups import Groups
from skyeim.gateway.features.hooks import BeforeSendHook
from skyeim.gateway.features.presence import Presence
from skyeim.gateway.features.receipts import ReadReceipts
from skyeim.gateway.features.relations import Relations
from skyeim.gateway.features.revocation import Revocations
from skyeim.gateway.features.server_push import ServerPush
from skyeim.gateway.features.sync import Syncer
from skyeim.gateway.features.typing_relay import TypingRelay
from skyeim.gateway.features.webhooks import Webhooks, WebhookSender
from skyeim.gateway.frames.dispatch import Dispatcher
from skyeim.gateway.frames.registry import FrameRegistry
from skyeim.gateway.routing.hub import Hub
from skyeim.gateway.routing.messages import Broadcast, Disconnect, Everyone
from skyeim.gateway.shutdown import graceful_stop
from skyeim.gateway.transport.connections import Connections
from skyeim.gateway.transport.session import SessionContext
from skyeim.gateway.transport.websocket import WebSocket
from skyeim.metrics import GatewayMetrics
from skyeim.protocol import UNKNOWN_PLATFORM


class Gateway:
    @classmethod
    def from_config(cls, cfg: GatewayConfig) -> "Gateway":
        metrics = GatewayMetrics()
        return cls(cfg, Backends.from_config(cfg, metrics), metrics)

    def __init__(self, cfg: GatewayConfig, backends: Backends, metrics: GatewayMetrics):
        self.cfg, self.backends, self.metrics = cfg, backends, metrics
        ws_cfg, chat_cfg = cfg.web_socket, cfg.chat
        message, friend = backends.message, backends.friend
        # out of descriptors (limit minus a reserve for the services, Redis, logs): 503 overloaded
        self.connections = Connections(ws_cfg.max_connections, metrics.connections, FdBudget())
        if cfg.cluster.enabled:
            from skyeim.gateway.routing.cluster import ClusterHub   # needs the redis package
            self.hub: Hub = ClusterHub(
                cfg.cluster, multi_device=ws_cfg.multi_login != "kick",
                on_users_gone=self._users_gone, on_users_back=self._users_back,
                on_broadcast=self._broadcast_received)
        else:
            self.hub = Hub()
        hub = self.hub

        # PROTOCOL.md 9.3 webhooks and 9.4 the before-send hook: off without a Url
        self.webhook_sender = WebhookSender(cfg.webhooks, metrics)
        self.webhooks = Webhooks(cfg.webhooks, self.webhook_sender)
        presence_listeners, chat_listeners, screens = [], [], []
        if cfg.webhooks.wants("message.offline"):
            chat_listeners.append(self.webhooks)
        if cfg.webhooks.wants("user.online") or cfg.webhooks.wants("user.offline"):
            if cfg.cluster.enabled:     # once per cluster, decided in Redis
                self.hub.watch_presence(self.webhooks.presence_changed)
            else:
                presence_listeners.append(self.webhooks)
        if cfg.hooks.before_send.enabled:
            screens.append(BeforeSendHook(cfg.hooks.before_send, cfg.webhooks.secret, hub,
                                          metrics, chat_cfg.max_content_length))

        # the features, each with what it uses
        self.revocations = Revocations(cfg.auth, backends.auth, self.connections)
        self.presence = Presence(hub, friend, listeners=presence_listeners)
        self.devices = Devices(ws_cfg, hub)
        self.recorder = DeliveryRecorder(message, hub, metrics)
        # friendship changes to live connections (9.5), for /api/friends and
        # /server/v1/friends; friend requests and blocks on top of them
        friendship_listeners = []
        if cfg.webhooks.wants("friend.added") or cfg.webhooks.wants("friend.removed"):
            friendship_listeners.append(self.webhooks)
        self.friendships = Friendships(friends=friend, auth=backends.auth, hub=hub,
                                       listeners=friendship_listeners)
        self.relations = Relations(cfg=cfg.friends, friends=friend, auth=backends.auth, hub=hub,
                                   friendships=self.friendships)
        self.groups = Groups(cfg=cfg.groups, messages=message, friends=friend, hub=hub,
                             metrics=metrics, max_content_length=chat_cfg.max_content_length)
        # files: a chat screen that grants a conversation the file it carries (1:1 and
        # groups); it asks the groups for membership, so the groups get it as their
        # screen once both exist. After the before-send hook: a refused chat grants nothing.
        self.files = Files(cfg=cfg.files, access_secret=cfg.auth.access_secret,
                           records=FileRecords(message), storage=storage_for(cfg.files),
                           membership=self.groups)
        screens = [*screens, self.files]
        self.groups.screens = tuple(screens)
        self.chat = OneToOneChat(messages=message, friends=friend, hub=hub,
                                 own_devices=self.devices, metrics=metrics,
                                 require_friendship=chat_cfg.require_friendship,
                                 max_content_length=chat_cfg.max_content_length,
                                 screens=screens, listeners=chat_listeners,
                                 blocks=self.relations)
        receipts = ReadReceipts(messages=message, hub=hub, own_devices=self.devices)
        edits = MessageEdits(messages=message, hub=hub, groups=self.groups,
                             recall_window_s=chat_cfg.recall_window,
                             edit_window_s=chat_cfg.edit_window,
                             max_content_length=chat_cfg.max_content_length)
        syncer = Syncer(messages=message, membership=self.groups, recorder=self.recorder)
        typing = TypingRelay(hub=hub, friends=friend, groups=self.groups, metrics=metrics,
                             require_friendship=chat_cfg.require_friendship,
                             blocks=self.relations)
        refresh = TokenRefresh(self.revocations)
        # the server API's (PROTOCOL.md 9.2)
        self.server_push = ServerPush(hub)
        self.conversations = Conversations(messages=message, friends=friend, auth=backends.auth,
                                           membership=self.groups, hub=hub)

        # every client frame type, in one table; then the dispatcher that reads it
        self.frames = FrameRegistry()
        connection.register(self.frames)
        for feature in (self.presence, self.chat, receipts, edits, refresh, syncer, typing,
                        self.groups, self.server_push, self.friendships, self.conversations,
                        self.relations):
            feature.register(self.frames)
        self.dispatcher = Dispatcher(self.frames, metrics.frames_in)

        # a connection's life, its sessions reading into the dispatcher
        context = SessionContext(ws_cfg, cfg.auth, metrics, self.dispatcher.handle_messages,
                                 self.recorder.add)
        self.life = ConnectionLife(ws_cfg=ws_cfg, hub=hub, messages=message,
                                   connections=self.connections, presence=self.presence,
                                   tokens=self.revocations, session_context=context,
                                   metrics=metrics, after_connected=[self.groups, self.relations])

    # -- what the handshake and the REST API ask ---------------------------------------

    def verify_token(self, token: str) -> tokens.Claims:
        return self.revocations.verify(token)

    def has_room(self) -> bool:
        return self.connections.has_room()

    @property
    def stopping(self) -> bool:
        return self.connections.stopping

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self.connections.stopping = value

    def serve(self, ws: WebSocket, claims: tokens.Claims, platform: str = UNKNOWN_PLATFORM) -> None:
        """Run one accepted connection until it closes (in the handler's greenlet)."""
        self.life.serve(ws, claims, platform)

    # -- what the cluster tells this node (routing/cluster.py) --------------------------

    def _users_gone(self, user_ids: list[int]) -> None:
        self.presence.users_gone(user_ids)

    def _users_back(self, user_ids: list[int]) -> None:
        self.presence.users_back(user_ids)

    def _broadcast_received(self, message: Broadcast) -> None:
        if isinstance(message, (Everyone, Disconnect)):
            self.server_push.from_other_node(message)
        else:
            self.groups.from_other_node(message)

    # -- life ---------------------------------------------------------------------------

    def start(self) -> None:
        self.hub.start()
        self.revocations.start()
        if self.cfg.webhooks.enabled:
            self.webhook_sender.start()
        self.files.start()

    def shutdown(self, timeout: float) -> None:
        """Stop reading, finish frames in flight, flush queues, close everyone with 1001;
        then the webhook events still waiting get a moment (a tenth of the timeout)."""
        graceful_stop(timeout, self.connections, self.recorder, self.presence, self.hub)
        self.webhook_sender.stop(timeout / 10)

