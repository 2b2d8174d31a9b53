"""Typed configuration loaded from YAML.

Every program reads one YAML file into one frozen dataclass. Keys in YAML are
CamelCase (as in the original Go design's ws.yaml); attributes are snake_case.
Strings may contain ``${VAR}`` or ``${VAR:-default}``, expanded from the
environment. Any problem -- an unknown key, a wrong type, a bad value -- raises
ConfigError with one line naming the key, and the program stops with it.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the key."""


# ---------------------------------------------------------------------------
# The schemas. Field names map to YAML keys by CamelCase: ping_interval -> PingInterval.

@dataclass(frozen=True)
class RpcConfig:
    endpoints: tuple[str, ...] = ()
    timeout: int = 2000          # ms, per HTTP call
    pool_size: int = 128         # keep-alive connections per endpoint
    # circuit breaker per endpoint (skyeim/gateway/backends/breaker.py): after this many consecutive
    # failures calls fail at once for a cool-off that doubles up to the max; 0 = off
    breaker_failures: int = 5
    breaker_cooldown_ms: int = 1000
    breaker_max_cooldown_ms: int = 10000

    def validate(self, key: str) -> None:
        if not self.endpoints:
            raise ConfigError(f"{key}.Endpoints: at least one host:port is required")
        for ep in self.endpoints:
            if not re.fullmatch(r"(https?://)?[^\s/:]+:\d{1,5}", ep):
                raise ConfigError(f"{key}.Endpoints: {ep!r} is not host:port")
        _positive(f"{key}.Timeout", self.timeout)
        _positive(f"{key}.PoolSize", self.pool_size)
        if self.breaker_failures < 0:
            raise ConfigError(f"{key}.BreakerFailures: must be 0 (off) or more")
        _positive(f"{key}.BreakerCooldownMs", self.breaker_cooldown_ms)
        if self.breaker_max_cooldown_ms < self.breaker_cooldown_ms:
            raise ConfigError(f"{key}.BreakerMaxCooldownMs: must be at least BreakerCooldownMs")


@dataclass(frozen=True)
class GatewayAuthConfig:
    access_secret: str = ""
    access_expire: int = 604800  # s
    enforce_expiry: bool = False
    expiry_warning: int = 60     # s before exp that token_expiring is sent
    revocation_poll_interval: float = 2.0   # s between asks to the Auth service; 0 = off

    def validate(self, key: str) -> None:
        if not self.access_secret:
            raise ConfigError(f"{key}.AccessSecret: must not be empty")
        _positive(f"{key}.AccessExpire", self.access_expire)
        _positive(f"{key}.ExpiryWarning", self.expiry_warning)
        if self.revocation_poll_interval < 0:
            raise ConfigError(f"{key}.RevocationPollInterval: must be 0 (off) or more")


@dataclass(frozen=True)
class RateLimitConfig:
    rate: float = 50.0           # client frames per second, refilled continuously
    burst: int = 100

    def validate(self, key: str) -> None:
        _positive(f"{key}.Rate", self.rate)
        _positive(f"{key}.Burst", self.burst)


@dataclass(frozen=True)
class WebSocketConfig:
    ping_interval: int = 30      # s between protocol pings
    pong_timeout: int = 60       # s of silence before close 4004
    max_message_size: int = 65536  # bytes of a whole, reassembled message
    send_queue_size: int = 256   # frames per connection before close 4002
    # kick: one connection per user; allow: every device live; one-per-platform: one per
    # `platform` query parameter (docs/protocol.md "Several devices per user")
    multi_login: Literal["kick", "allow", "one-per-platform"] = "kick"
    max_devices_per_user: int = 5   # live connections of one user with MultiLogin allow; 0 = no limit
    allowed_origins: tuple[str, ...] = ()
    max_connections: int = 0     # 0 = no limit
    max_connections_per_ip: int = 0    # sockets of one client address; 0 = no limit
    max_connections_per_user: int = 0  # sockets (and handshakes) of one user; 0 = no limit
    trusted_proxies: tuple[str, ...] = ()   # addresses/CIDRs whose X-Forwarded-For is believed
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    # `typing` frames per connection, on top of RateLimit; over it they are dropped silently
    typing_rate: RateLimitConfig = field(default_factory=lambda: RateLimitConfig(2.0, 4))
    handshake_timeout: int = 10  # s to send a complete upgrade request
    close_timeout: float = 1.0   # s a close frame may take before the TCP drop
    unread_page_size: int = 200  # backlog messages fetched per page
    shutdown_timeout: int = 10   # s a graceful stop may take
    # a test aid (Autobahn|Testsuite): an unauthenticated echo WebSocket at this path,
    # served by the same transport as /ws; "" = off. Never for production.
    echo_path: str = ""

    def validate(self, key: str) -> None:
        for name in ("ping_interval", "pong_timeout", "max_message_size",
                     "send_queue_size", "handshake_timeout", "close_timeout",
                     "unread_page_size", "shutdown_timeout"):
            _positive(f"{key}.{_camel(name)}", getattr(self, name))
        for name in ("max_connections", "max_connections_per_ip", "max_connections_per_user",
                     "max_devices_per_user"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{key}.{_camel(name)}: must be 0 (no limit) or more")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(f"{key}.TrustedProxies: {proxy!r} is not an address or CIDR block") from None
        if self.unread_page_size > 200:
            raise ConfigError(f"{key}.UnreadPageSize: at most 200 (the services' page cap)")
        self.rate_limit.validate(f"{key}.RateLimit")
        self.typing_rate.validate(f"{key}.TypingRate")
        if self.echo_path:
            if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", self.echo_path):
                raise ConfigError(f"{key}.EchoPath: {self.echo_path!r} is not a path like /echo")
            first = self.echo_path.split("/")[1]
            if self.echo_path in _GATEWAY_PATHS or first in ("api", "static"):
                raise ConfigError(f"{key}.EchoPath: {self.echo_path!r} is a route of the gateway")


# the gateway's own routes, which EchoPath must not shadow
_GATEWAY_PATHS = ("/ws", "/healthz", "/readyz", "/metrics")


@dataclass(frozen=True)
class ChatConfig:
    require_friendship: bool = False
    max_content_length: int = 16384
    recall_window: int = 120        # s after createdAt a sender may recall a message (as Tencent Cloud Chat)
    edit_window: int = 900          # s after createdAt a sender may edit it

    def validate(self, key: str) -> None:
        _positive(f"{key}.MaxContentLength", self.max_content_length)
        _positive(f"{key}.RecallWindow", self.recall_window)
        _positive(f"{key}.EditWindow", self.edit_window)


@dataclass(frozen=True)
class GroupsConfig:
    """Group chat (docs/protocol.md "Groups")."""
    members_cache_size: int = 1024      # groups whose member lists a gateway keeps (LRU)
    members_cache_ttl_ms: int = 5000    # how long a cached list is trusted (other nodes' changes)
    read_receipt_max_members: int = 100  # larger groups relay `group_read` to own devices only
    max_mentions: int = 50              # user ids in one groupchat's `mentions`

    def validate(self, key: str) -> None:
        _positive(f"{key}.MembersCacheSize", self.members_cache_size)
        _positive(f"{key}.MaxMentions", self.max_mentions)
        if self.members_cache_ttl_ms < 0:
            raise ConfigError(f"{key}.MembersCacheTtlMs: must be 0 (no cache) or more")
        if self.read_receipt_max_members < 0:
            raise ConfigError(f"{key}.ReadReceiptMaxMembers: must be 0 or more")


@dataclass(frozen=True)
class ClusterConfig:
    """PROTOCOL.md section 8. An empty Redis URL means: run alone."""
    redis: str = ""              # redis://HOST:6379/0 (or rediss://, unix://)
    node_id: str = ""            # default: host name and process id
    key_prefix: str = "skyeim:"
    heartbeat_interval: int = 5  # s between a node's liveness refreshes
    node_ttl: int = field(default=15, metadata={"key": "NodeTTL"})  # s until a silent node is forgotten
    reuse_port: bool = False     # SO_REUSEPORT: several nodes share one port

    @property
    def enabled(self) -> bool:
        return bool(self.redis)

    def validate(self, key: str) -> None:
        if self.redis and not re.match(r"(rediss?|unix)://", self.redis):
            raise ConfigError(f"{key}.Redis: {self.redis!r} is not a redis:// URL")
        if self.node_id and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", self.node_id):
            raise ConfigError(f"{key}.NodeId: 1-64 characters of A-Z a-z 0-9 _ . : -")
        _positive(f"{key}.HeartbeatInterval", self.heartbeat_interval)
        if self.node_ttl <= self.heartbeat_interval:
            raise ConfigError(f"{key}.NodeTTL: must be longer than HeartbeatInterval "
                              f"({self.node_ttl} <= {self.heartbeat_interval})")


@dataclass(frozen=True)
class OptionalEndpointsConfig:
    """PROTOCOL.md 9.1: the service endpoints beyond section 6 (batch calls) are an
    optimisation. One that answers 404 or 405 is replaced by the section 6 calls
    (logged once) and tried again every ProbeInterval seconds."""
    probe_interval: float = 60.0  # s

    def validate(self, key: str) -> None:
        _positive(f"{key}.ProbeInterval", self.probe_interval)


@dataclass(frozen=True)
class FilesConfig:
    """Files, images and voice (docs/protocol.md "Files, images and voice"): POST /api/files."""
    max_size: int = 20 * 1024 * 1024    # bytes of one upload; more is 413 while streaming
    dir: str = "data/files"             # local storage (Storage: local); shared by cluster nodes
    # MIME types decided by sniffing the content (a trailing /* takes a family);
    # text/plain: content no signature matches that is UTF-8 without NUL
    allowed_types: tuple[str, ...] = (
        "image/jpeg", "image/png", "image/gif", "image/webp",
        "audio/*", "video/mp4", "video/webm", "application/pdf", "application/zip",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "text/plain")
    # local (Dir) or s3://BUCKET[/PREFIX], an S3-compatible service (Dir then holds only
    # uploads in progress, each node's own)
    storage: str = "local"
    s3_endpoint: str = ""               # http(s)://host[:port] of MinIO, Ceph...; "" = AWS S3
    s3_region: str = ""                 # "" = boto3's default (AWS_REGION / AWS_DEFAULT_REGION)
    # both or neither; neither = boto3's own chain (AWS_ACCESS_KEY_ID and
    # AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role)
    s3_access_key: str = field(default="", repr=False)
    s3_secret_key: str = field(default="", repr=False)
    s3_timeout: float = 10.0            # s, connect and read timeout of every S3 call
    s3_retries: int = 2                 # retries of a failed S3 call (bounded, with backoff)
    link_ttl: int = 3600                # s a signed download URL stays valid
    link_secret: str = ""               # HMAC key of signed URLs; "" = derived from Auth.AccessSecret
    thumbnail_size: int = 256           # px, the longer side of an image's thumbnail
    max_image_pixels: int = 50_000_000  # larger images are stored without thumbnail/width/height

    def validate(self, key: str) -> None:
        for name in ("max_size", "link_ttl", "thumbnail_size", "max_image_pixels"):
            _positive(f"{key}.{_camel(name)}", getattr(self, name))
        if not self.dir:
            raise ConfigError(f"{key}.Dir: must not be empty")
        if self.storage != "local":
            m = re.fullmatch(r"s3://([^/]*)(/[^?#]*)?", self.storage)
            if not m or not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", m.group(1)):
                raise ConfigError(f"{key}.Storage: local or s3://BUCKET[/PREFIX] (a bucket name "
                                  f"of 3 to 63 of a-z 0-9 . -), got {self.storage!r}")
        if self.s3_endpoint and not re.fullmatch(r"https?://[^\s/]+/?", self.s3_endpoint):
            raise ConfigError(f"{key}.S3Endpoint: http(s)://host[:port] or empty (AWS S3), "
                              f"got {self.s3_endpoint!r}")
        if bool(self.s3_access_key) != bool(self.s3_secret_key):
            raise ConfigError(f"{key}.S3AccessKey, {key}.S3SecretKey: give both or neither "
                              f"(neither: the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY environment)")
        _positive(f"{key}.S3Timeout", self.s3_timeout)
        if self.s3_retries < 0:
            raise ConfigError(f"{key}.S3Retries: must be 0 (no retry) or more")
        for t in self.allowed_types:
            if not re.fullmatch(r"[a-z0-9.+-]+/([a-z0-9.+-]+|\*)", t):
                raise ConfigError(f"{key}.AllowedTypes: {t!r} is not a MIME type like image/png or audio/*")


@dataclass(frozen=True)
class ServerApiConfig:
    """PROTOCOL.md 9.2: the server API under /server/v1/ for the team's backend.
    An empty Key turns it off (the whole /server/ tree answers 404)."""
    key: str = field(default="", repr=False)   # the X-Api-Key the backend sends (never logged)

    @property
    def enabled(self) -> bool:
        return bool(self.key)


@dataclass(frozen=True)
class FriendsConfig:
    """Friend requests and blocking (docs/protocol.md "Friend requests and blocking")."""
    require_acceptance: bool = False    # POST /api/friends makes a request the other side accepts
    block_cache_size: int = 100_000     # user pairs whose block state a gateway keeps (LRU)
    block_cache_ttl_ms: int = 2000      # how long it is trusted (a block made on another node)

    def validate(self, key: str) -> None:
        _positive(f"{key}.BlockCacheSize", self.block_cache_size)
        if self.block_cache_ttl_ms < 0:
            raise ConfigError(f"{key}.BlockCacheTtlMs: must be 0 (no cache) or more")


@dataclass(frozen=True)
class AdminConfig:
    """The admin listener (docs/operations.md "The admin listener"): GET /metrics and
    /healthz for operators and scrapers, never on the public port. Port 0 = none."""
    host: str = "127.0.0.1"
    port: int = 0

    def validate(self, key: str) -> None:
        if self.port:
            _port(f"{key}.Port", self.port)
        if not self.host:
            raise ConfigError(f"{key}.Host: must not be empty")


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    # text: "2026-12-06T14:03:07.123Z INFO logger message"; json: one object per line
    # (ts, level, logger, msg and the event's fields): docs/operations.md "Logs"
    format: Literal["text", "json"] = "text"
    access: bool = True          # the access log (one line per request, WebSocket open/close)


@dataclass(frozen=True)
class GatewayConfig:
    """etc/ws.yaml"""
    name: str = "ws-server"
    host: str = "127.0.0.1"      # loopback unless asked: see the default-secret check
    port: int = 10300
    auth: GatewayAuthConfig = field(default_factory=GatewayAuthConfig)
    message_rpc: RpcConfig = field(default_factory=lambda: RpcConfig(("127.0.0.1:10301",)))
    friend_rpc: RpcConfig = field(default_factory=lambda: RpcConfig(("127.0.0.1:10302",)))
    auth_rpc: RpcConfig = field(default_factory=lambda: RpcConfig(("127.0.0.1:10303",)))
    internal_secret: str = ""
    web_socket: WebSocketConfig = field(default_factory=WebSocketConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    groups: GroupsConfig = field(default_factory=GroupsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    log: LogConfig = field(default_factory=LogConfig)
    optional_endpoints: OptionalEndpointsConfig = field(default_factory=OptionalEndpointsConfig)
    webhooks: WebhooksConfig = field(default_factory=lambda: WebhooksConfig())
    hooks: HooksConfig = field(default_factory=lambda: HooksConfig())
    files: FilesConfig = field(default_factory=FilesConfig)
    server_api: ServerApiConfig = field(default_factory=ServerApiConfig)
    friends: FriendsConfig = field(default_factory=FriendsConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)

    def validate(self, key: str = "") -> None:
        _port("Port", self.port)
        self.optional_endpoints.validate("OptionalEndpoints")
        self.files.validate("Files")
        _admin(self.admin, self.port)
        self.cluster.validate("Cluster")
        self.webhooks.validate("Webhooks")
        self.hooks.validate("Hooks")
        self.auth.validate("Auth")
        self.message_rpc.validate("MessageRpc")
        self.friend_rpc.validate("FriendRpc")
        self.auth_rpc.validate("AuthRpc")
        self.web_socket.validate("WebSocket")
        self.chat.validate("Chat")
        self.groups.validate("Groups")
        self.friends.validate("Friends")
        for origin in self.web_socket.allowed_origins:
            if origin != "*" and not re.fullmatch(r"[a-z][a-z0-9+.-]*://[^/\s]+", origin):
                raise ConfigError(f"WebSocket.AllowedOrigins: {origin!r} is not scheme://host[:port] or \"*\"")


@dataclass(frozen=True)
class ServiceConfig:
    """etc/message.yaml and etc/friend.yaml"""
    name: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    data_source: str = ""        # an SQLAlchemy URL; default sqlite:///data/<name>.db
    internal_secret: str = ""
    pool_size: int = 10          # database connections (PostgreSQL)
    log: LogConfig = field(default_factory=LogConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)

    def validate(self, key: str = "") -> None:
        if not self.name:
            raise ConfigError("Name: must not be empty")
        _port("Port", self.port)
        _admin(self.admin, self.port)
        _positive("PoolSize", self.pool_size)

    @property
    def database_url(self) -> str:
        return self.data_source or f"sqlite:///data/{self.name}.db"


@dataclass(frozen=True)
class LoginLimitConfig:
    """Failed logins (and password changes) counted in a sliding window."""
    max_failures: int = 5            # per username
    max_address_failures: int = 20   # per client address (one NAT may hide many users)
    window: float = 60.0             # s
    max_tracked: int = 10000         # usernames (and addresses) remembered; oldest forgotten

    def validate(self, key: str) -> None:
        for name in ("max_failures", "max_address_failures", "window", "max_tracked"):
            _positive(f"{key}.{_camel(name)}", getattr(self, name))


@dataclass(frozen=True)
class AuthServiceConfig(ServiceConfig):
    """etc/auth.yaml: a service that also signs tokens."""
    access_secret: str = ""
    access_expire: int = 604800  # s
    login_limit: LoginLimitConfig = field(default_factory=LoginLimitConfig)

    def validate(self, key: str = "") -> None:
        super().validate(key)
        if not self.access_secret:
            raise ConfigError("AccessSecret: must not be empty")
        _positive("AccessExpire", self.access_expire)
        self.login_limit.validate("LoginLimit")


# ---------------------------------------------------------------------------
# PROTOCOL.md 9.3 and 9.4: webhooks and the before-send hook (off while Url is empty)

WEBHOOK_EVENTS = ("user.online", "user.offline", "message.offline", "friend.added",
                  "friend.removed")


@dataclass(frozen=True)
class WebhooksConfig:
    url: str = ""                # http(s)://... that receives the events; empty = off
    secret: str = ""             # HMAC-SHA256 key of X-SkyeIM-Signature (also signs 9.4)
    events: tuple[str, ...] = ()  # which to send; empty = all
    timeout: int = 2000          # ms per POST
    max_attempts: int = 5        # tries per event (retried with growing pauses)
    queue_size: int = 10000      # events waiting; more are dropped (counted)

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def wants(self, event: str) -> bool:
        return self.enabled and (not self.events or event in self.events)

    def validate(self, key: str) -> None:
        if self.url and not re.match(r"https?://[^\s/]+", self.url):
            raise ConfigError(f"{key}.Url: {self.url!r} is not an http(s):// URL")
        for i, e in enumerate(self.events):
            if e not in WEBHOOK_EVENTS:
                raise ConfigError(f"{key}.Events[{i}]: {e!r} is not one of "
                                  f"{', '.join(WEBHOOK_EVENTS)}")
        _positive(f"{key}.Timeout", self.timeout)
        _positive(f"{key}.MaxAttempts", self.max_attempts)
        _positive(f"{key}.QueueSize", self.queue_size)


@dataclass(frozen=True)
class BeforeSendConfig:
    url: str = ""                # http(s)://... asked before each chat is stored; empty = off
    timeout: int = 500           # ms per call
    on_error: Literal["allow", "reject"] = "allow"   # a timeout, connection error or non-2xx

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def validate(self, key: str) -> None:
        if self.url and not re.match(r"https?://[^\s/]+", self.url):
            raise ConfigError(f"{key}.Url: {self.url!r} is not an http(s):// URL")
        _positive(f"{key}.Timeout", self.timeout)


@dataclass(frozen=True)
class HooksConfig:
    before_send: BeforeSendConfig = field(default_factory=BeforeSendConfig)

    def validate(self, key: str) -> None:
        self.before_send.validate(f"{key}.BeforeSend")


# ---------------------------------------------------------------------------
# Loading

def load(cls: type, path: str | os.PathLike) -> Any:
    """Read a YAML file into ``cls`` (a config dataclass above) and validate it."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(yaml_error_line(path, e)) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 (byte {e.start})") from None
    try:
        cfg = from_mapping(cls, raw if raw is not None else {})
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return cfg


def yaml_error_line(path: str | os.PathLike, e: yaml.YAMLError) -> str:
    """One line naming the file, line and column (1-based) of a YAML syntax error."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    what = ": ".join(p for p in (getattr(e, "context", None), getattr(e, "problem", None)) if p)
    what = what or str(e).splitlines()[0]
    if mark is None:
        return f"{path}: not valid YAML: {what}"
    return f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {what}"


def from_mapping(cls: type, raw: Any, key: str = "") -> Any:
    """Build the dataclass ``cls`` from a parsed YAML mapping (not validated)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{key or 'top level'}: expected a mapping, got {_kind(raw)}")
    hints = typing.get_type_hints(cls)
    by_key = {f.metadata.get("key") or _camel(f.name): f for f in dataclasses.fields(cls)}
    values = {}
    for k, v in raw.items():
        f = by_key.get(k)
        if f is None:
            where = f"{key}.{k}" if key else str(k)
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(by_key))})")
        values[f.name] = _convert(hints[f.name], v, f"{key}.{k}" if key else k)
    return cls(**values)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand(value: str) -> str:
    """Expand ${VAR} and ${VAR:-default} from the environment."""
    def sub(m: re.Match) -> str:
        got = os.environ.get(m.group(1))
        if got is None or (got == "" and m.group(2) is not None):
            return m.group(2) or ""
        return got
    return _VAR.sub(sub, value)


def _convert(tp: Any, v: Any, key: str) -> Any:
    if isinstance(v, str) and "${" in v:
        whole = _VAR.fullmatch(v) is not None
        v = expand(v)
        if whole and tp is not str:     # "${PORT}" may stand for a number or a bool
            v = yaml.safe_load(v) if v else None
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, v if v is not None else {}, key)
    if origin is Literal:
        if v not in typing.get_args(tp):
            raise ConfigError(f"{key}: must be one of {', '.join(map(str, typing.get_args(tp)))}, got {v!r}")
        return v
    if origin is tuple:
        if not isinstance(v, list):
            raise ConfigError(f"{key}: expected a list, got {_kind(v)}")
        item = typing.get_args(tp)[0]
        return tuple(_convert(item, x, f"{key}[{i}]") for i, x in enumerate(v))
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{key}: expected true or false, got {_kind(v)}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{key}: expected a whole number, got {_kind(v)}")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_kind(v)}")
        return float(v)
    if tp is str:
        if v is None:
            return ""
        if not isinstance(v, str):
            raise ConfigError(f"{key}: expected a string, got {_kind(v)}")
        return v
    raise TypeError(f"config type {tp!r} is not supported")  # a bug in the schema


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _kind(v: Any) -> str:
    return "nothing" if v is None else f"{type(v).__name__} {v!r}"[:60]


def _positive(key: str, v: float) -> None:
    if v <= 0:
        raise ConfigError(f"{key}: must be greater than 0, got {v!r}")


def _admin(admin: AdminConfig, public_port: int) -> None:
    admin.validate("Admin")
    if admin.port and admin.port == public_port:
        raise ConfigError(f"Admin.Port: must not be the public Port ({public_port}): "
                          "/metrics is for operators only")


def _port(key: str, v: int) -> None:
    if not 0 < v < 65536:
        raise ConfigError(f"{key}: must be a TCP port (1-65535), got {v!r}")
