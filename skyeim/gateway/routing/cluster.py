"""ClusterHub: the Hub across several gateway processes, over Redis (PROTOCOL.md section 8).

It has the Hub's interface, so the Gateway does not know whether it runs alone.
Local sessions stay in the in-process dict; Redis says which *other* nodes hold
a user, and a Pub/Sub channel per node carries frames to users connected there.

Redis keys (all under ``Cluster.KeyPrefix``, ``P`` below):
  P node:<id>    a node's liveness: refreshed every HeartbeatInterval, expires after NodeTTL
  P nodes        the set of node ids that may hold users (to clean up after a dead one)
  P user:<uid>   hash: node id -> that user's connections on the node
  P users:<id>   set: the user ids connected on node <id>
  P gen:<uid>    a counter that orders a user's logins across the cluster
  P conns:<id>   a node's live connections, refreshed with its heartbeat (server API stats)
  P forgotten:<id>  set when other nodes gave node <id> up (it stalled past NodeTTL)
  P online:<uid>  set while the user is online in the cluster, only with webhooks on
                 (``watch_presence``: user.online/offline once per cluster)
  P memo:<key>   ``remember`` / ``recall`` (the before-send hook's verdicts), with a TTL
  P chan:<id>    the Pub/Sub channel of node <id>
  P kick         the channel every node hears: "user U logged in anew (login number G)"
  P group        the channel every node hears: a group frame to fan out to its local
                 members, or "group G's member list changed" (features/groups.py)
The messages on the channels: routing/messages.py.

Nothing is lost when Redis or a node fails: chats are stored before they are
routed, so a lost publish only delays delivery to the recipient's next connect.
While Redis is down the node serves its own users alone; when Redis returns,
the listener resubscribes and re-registers every local user.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from typing import Any, Callable

import gevent
import redis

from skyeim.config import ClusterConfig
from skyeim.gateway.routing import messages
from skyeim.gateway.routing.hub import Hub, Sink
from skyeim.protocol import CloseCode

log = logging.getLogger(__name__)

REDIS_TIMEOUT = 2.0          # s per Redis command and connect (and to get a pooled one)
REDIS_POOL_SIZE = 256        # connections to Redis per node
RECONNECT_MAX_WAIT = 2.0     # s between attempts while Redis is down
LISTEN_POLL = 1.0            # s a Pub/Sub read waits before checking for shutdown


# KEYS[1] = P user:<uid> (node -> connections), KEYS[2] = P online:<uid> (set while online)
_TRANSITION_LUA = """
local n = redis.call('HLEN', KEYS[1])
local was = redis.call('EXISTS', KEYS[2])
if n > 0 and was == 0 then redis.call('SET', KEYS[2], '1') return 'online' end
if n == 0 and was == 1 then redis.call('DEL', KEYS[2]) return 'offline' end
return ''
"""


class ClusterHub(Hub):
    clustered = True

    def __init__(self, cfg: ClusterConfig, *, multi_device: bool,
                 on_users_gone: Callable[[list[int]], None],
                 on_users_back: Callable[[list[int]], None],
                 on_broadcast: Callable[[messages.Broadcast], None]):
        super().__init__()
        self.cfg = cfg
        # MultiLogin allow / one-per-platform: a user may have sessions here and on other
        # nodes at once, so frames for a user go to every node that holds one
        self.multi_device = multi_device
        self.node_id = cfg.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.prefix = cfg.key_prefix
        # a blocking pool: a burst of greenlets waits (bounded) for a connection instead
        # of failing with "Too many connections", which would look like Redis being down
        pool = redis.BlockingConnectionPool.from_url(
            cfg.redis, max_connections=REDIS_POOL_SIZE, timeout=REDIS_TIMEOUT,
            socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT,
            decode_responses=True)
        self.redis = redis.Redis(connection_pool=pool)
        self.on_users_gone = on_users_gone      # users found offline after a node died
        self.on_users_back = on_users_back      # users online again after we were given up
        self.on_broadcast = on_broadcast        # what another node told every node
        self.alive: set[str] = {self.node_id}    # refreshed every heartbeat
        self.redis_ok = False
        self._running = False
        self._greenlets: list[gevent.Greenlet] = []

    # -- keys ----------------------------------------------------------------------

    def _k_node(self, node: str) -> str:
        return f"{self.prefix}node:{node}"

    def _k_user(self, uid: int) -> str:
        return f"{self.prefix}user:{uid}"

    def _k_users(self, node: str) -> str:
        return f"{self.prefix}users:{node}"

    def _k_conns(self, node: str) -> str:
        return f"{self.prefix}conns:{node}"

    def _k_chan(self, node: str) -> str:
        return f"{self.prefix}chan:{node}"

    # -- life -----------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        try:
            self._heartbeat_once()
        except redis.RedisError as e:
            log.warning("cluster: Redis unreachable at start (%s); serving local users", e)
        self._greenlets = [gevent.spawn(self._listen_loop), gevent.spawn(self._heartbeat_loop)]
        log.info("cluster: node %s, Redis %s", self.node_id, self.cfg.redis.split("@")[-1])

    def stop(self) -> None:
        """Say goodbye: forget this node at once, so nobody waits for its TTL."""
        self._running = False
        gevent.killall(self._greenlets, block=False)
        try:
            pipe = self.redis.pipeline(transaction=False)
            for uid in list(self._sessions):
                pipe.hdel(self._k_user(uid), self.node_id)
            pipe.delete(self._k_node(self.node_id), self._k_users(self.node_id),
                        self._k_conns(self.node_id))
            pipe.srem(f"{self.prefix}nodes", self.node_id)
            pipe.execute()
        except redis.RedisError as e:
            log.warning("cluster: goodbye failed (%s); other nodes forget us after NodeTTL", e)

    def healthy(self) -> bool:
        return self.redis_ok

    def _failed(self, what: str, e: Exception) -> None:
        if self.redis_ok:
            log.warning("cluster: Redis unreachable (%s: %s); serving local users only", what, e)
        self.redis_ok = False

    # -- the Hub interface ------------------------------------------------------------

    def register(self, session: Sink, mode: str = "kick") -> tuple[bool, list[Sink]]:
        first, replaced = super().register(session, mode)
        uid = session.user_id
        if not self.redis_ok:
            return first, replaced          # the listener re-registers everyone on its return
        try:
            if self._remote_nodes(uid):
                first = False
            pipe = self.redis.pipeline(transaction=False)
            if mode != "allow":
                # MultiLogin kick: every node closes this user's *older* logins (4001);
                # one-per-platform: only those of the same platform ("p").
                # Told to all nodes, not only those listed now, so that two logins at
                # the same moment on two nodes still end with one (the newer) alive.
                session.gen = self.redis.incr(f"{self.prefix}gen:{uid}")
                kick = messages.Kick(uid, session.gen, self.node_id,
                                     session.platform if mode == "one-per-platform" else None)
                pipe.publish(f"{self.prefix}kick", kick.encode())
            pipe.hset(self._k_user(uid), self.node_id, self.local_count(uid))
            pipe.sadd(self._k_users(self.node_id), uid)
            pipe.execute()
        except redis.RedisError as e:
            self._failed("register", e)
            return first, replaced
        self._transitions([uid])
        return first, replaced

    def unregister(self, session: Sink) -> bool:
        left = self._remove(session)
        if left is None:
            return False                   # replaced (kicked): it says nothing
        uid = session.user_id
        if not self.redis_ok:
            return left == 0                # the listener's resync drops us from Redis later
        try:
            if left:
                self.redis.hset(self._k_user(uid), self.node_id, left)
                return False
            pipe = self.redis.pipeline(transaction=False)
            pipe.hdel(self._k_user(uid), self.node_id)
            pipe.srem(self._k_users(self.node_id), uid)
            pipe.execute()
            last = not self._remote_nodes(uid)
        except redis.RedisError as e:
            self._failed("unregister", e)
            return left == 0
        self._transitions([uid])
        return last

    def send_to_user(self, user_id: int, item, wait: float = 0.0) -> int:
        n = super().send_to_user(user_id, item, wait)
        if (n and not self.multi_device) or not self.redis_ok:
            return n
        return n + self._publish(user_id, item, wait)

    def send_to_users(self, items: list[tuple[int, Any]], wait: float = 0.0,
                      exclude: Sink | None = None) -> list[int]:
        """Local sessions first, then one pipeline that finds the other nodes of every
        user still to be routed and one that publishes every frame: two round trips for
        a whole chat batch, where send_to_user in a loop took two per chat, each behind
        every greenlet ready meanwhile (docs/performance.md, round 3)."""
        counts = super().send_to_users(items, wait, exclude)
        if not self.redis_ok:
            return counts
        todo = [i for i, n in enumerate(counts)
                if exclude is not None or self.multi_device or not n]
        if not todo:
            return counts
        try:
            users = list(dict.fromkeys(items[i][0] for i in todo))
            pipe = self.redis.pipeline(transaction=False)
            for uid in users:
                pipe.hkeys(self._k_user(uid))
            found = pipe.execute()
            remote = {uid: self._live([n for n in nodes if n != self.node_id])
                      for uid, nodes in zip(users, found)}
            pipe = self.redis.pipeline(transaction=False)
            routed = [(i, len(remote[items[i][0]])) for i in todo if remote[items[i][0]]]
            for i, _ in routed:
                uid, item = items[i]
                payload = messages.UserFrame.of(uid, item, wait).encode()
                for node in remote[uid]:
                    pipe.publish(self._k_chan(node), payload)
            if routed:
                pipe.execute()
            for i, n in routed:             # counted once published
                counts[i] += n
        except redis.RedisError as e:
            self._failed("route", e)
        return counts

    def send_to_others(self, user_id: int, item, exclude: Sink) -> int:
        n = super().send_to_others(user_id, item, exclude)
        return n + self._publish(user_id, item, 0.0) if self.redis_ok else n

    def _publish(self, user_id: int, item, wait: float) -> int:
        """Route ``item`` to the other nodes holding ``user_id``; how many there are."""
        try:
            nodes = self._remote_nodes(user_id)
            if nodes:
                payload = messages.UserFrame.of(user_id, item, wait).encode()
                for node in nodes:
                    self.redis.publish(self._k_chan(node), payload)
            return len(nodes)
        except redis.RedisError as e:
            self._failed("route", e)
            return 0

    def broadcast(self, message: messages.Broadcast) -> None:
        """One publish for every node (each fans out to its own members), not one per user."""
        if not self.redis_ok:
            return                  # other nodes' members catch up by sync (docs/protocol.md)
        try:
            self.redis.publish(f"{self.prefix}group",
                               dataclasses.replace(message, node=self.node_id).encode())
        except redis.RedisError as e:
            self._failed("group", e)

    def device_count(self, user_id: int) -> int:
        if not self.redis_ok:
            return self.local_count(user_id)
        try:
            counts = self.redis.hgetall(self._k_user(user_id))
            live = set(self._live([n for n in counts if n != self.node_id]))
            return self.local_count(user_id) + sum(int(c) for n, c in counts.items() if n in live)
        except redis.RedisError as e:
            self._failed("devices", e)
            return self.local_count(user_id)

    def is_online(self, user_id: int) -> bool:
        return bool(self.online_among([user_id]))

    def online_among(self, user_ids) -> list[int]:
        user_ids = list(user_ids)
        local = set(super().online_among(user_ids))
        rest = [u for u in user_ids if u not in local]
        if rest and self.redis_ok:
            try:
                pipe = self.redis.pipeline(transaction=False)
                for u in rest:
                    pipe.hkeys(self._k_user(u))
                for u, nodes in zip(rest, pipe.execute()):
                    if self._live([n for n in nodes if n != self.node_id]):
                        local.add(u)
            except redis.RedisError as e:
                self._failed("presence", e)
        return [u for u in user_ids if u in local]

    def online_count(self) -> int:
        """Users online on the whole cluster (a user on two nodes for a moment counts twice)."""
        if not self.redis_ok:
            return self.local_users()
        try:
            # the node set as it is now, not as of our last heartbeat: a node that has
            # (re)joined since then, e.g. after a Redis restart, counts at once
            members = self.redis.smembers(f"{self.prefix}nodes")
            others = self._live(sorted(n for n in members if n != self.node_id))
            pipe = self.redis.pipeline(transaction=False)
            for n in others:
                pipe.scard(self._k_users(n))
            return self.local_users() + sum(pipe.execute())
        except redis.RedisError as e:
            self._failed("count", e)
            return self.local_users()

    def connection_count(self) -> int:
        """Connections on the whole cluster: this node's now, the others' as of their
        last heartbeat (Cluster.HeartbeatInterval)."""
        local = self.local_connections()
        if not self.redis_ok:
            return local
        try:
            members = self.redis.smembers(f"{self.prefix}nodes")
            others = self._live(sorted(n for n in members if n != self.node_id))
            counts = self.redis.mget([self._k_conns(n) for n in others]) if others else []
            return local + sum(int(c) for c in counts if c)
        except (redis.RedisError, ValueError) as e:
            self._failed("connections", e)
            return local

    def _remote_nodes(self, uid: int) -> list[str]:
        """Other live nodes holding a connection of ``uid``."""
        return self._live([n for n in self.redis.hkeys(self._k_user(uid)) if n != self.node_id])

    def _live(self, nodes) -> list[str]:
        """The live ones among ``nodes``; a node that joined since our last heartbeat is
        looked up at once, so that its users are reachable from its first second."""
        unknown = sorted({n for n in nodes if n not in self.alive})
        if unknown:
            pipe = self.redis.pipeline(transaction=False)
            for n in unknown:
                pipe.exists(self._k_node(n))
            self.alive = self.alive | {n for n, ok in zip(unknown, pipe.execute()) if ok}
        return [n for n in nodes if n in self.alive]

    # -- receiving ----------------------------------------------------------------------

    def _listen_loop(self) -> None:
        wait = 0.1
        while self._running:                      # ends with stop(); each pass bounded by timeouts
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._k_chan(self.node_id), f"{self.prefix}kick",
                                 f"{self.prefix}group")
                gone = self._resync()              # Redis may have restarted empty
                self.redis_ok = True
                if gone:                           # (reported once routing works again)
                    self.on_users_gone(gone)
                wait = 0.1
                while self._running:
                    if not self.redis_ok:
                        # another command failed (a timeout, a hung Redis) while this
                        # subscription looked fine: only a fresh subscribe and _resync set
                        # redis_ok again, so start over (what failed meanwhile is repaired)
                        raise redis.ConnectionError("a Redis command failed; resubscribing")
                    msg = pubsub.get_message(timeout=LISTEN_POLL)
                    if msg is not None and msg.get("type") == "message":
                        self._on_message(msg["data"])
            except (redis.RedisError, OSError) as e:
                self._failed("listen", e)
                gevent.sleep(wait)
                wait = min(wait * 2, RECONNECT_MAX_WAIT)
            finally:
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    pass

    def _on_message(self, data: str) -> None:
        try:
            msg = messages.decode(data)
        except messages.MalformedMessage:
            log.warning("cluster: dropped a malformed message on %s", self._k_chan(self.node_id))
            return
        if isinstance(msg, messages.UserFrame):
            if msg.wait:     # a producer that may wait: wait in a greenlet, not in the listener
                gevent.spawn(Hub.send_to_user, self, msg.user_id, msg.item(), msg.wait)
            else:
                Hub.send_to_user(self, msg.user_id, msg.item())
        elif isinstance(msg, messages.Kick):
            if msg.node != self.node_id:
                self._kick_local(msg.user_id, msg.gen, msg.platform)
        elif msg.node != self.node_id:       # a broadcast: ours came back to us too
            gevent.spawn(self.on_broadcast, msg)    # may fetch a member list: not here

    def _kick_local(self, uid: int, gen: int, platform: str | None = None) -> None:
        sessions = self.take_older(uid, gen, platform)
        if not sessions:
            return
        try:
            left = self.local_count(uid)
            pipe = self.redis.pipeline(transaction=False)
            if left:
                pipe.hset(self._k_user(uid), self.node_id, left)
            else:
                pipe.hdel(self._k_user(uid), self.node_id)
                pipe.srem(self._k_users(self.node_id), uid)
            pipe.execute()
        except redis.RedisError as e:
            self._failed("kick", e)
        for s in sessions:
            log.info("conn=%s user=%s replaced by a login on another node: closing 4001",
                     getattr(s, "conn_id", "?"), uid)
            gevent.spawn(s.close, CloseCode.REPLACED, "replaced by a newer login")

    def _resync(self) -> list[int]:
        """Register this node and every local user again (after a Redis restart or outage),
        and drop the users Redis still lists here that are not here (any more): those of
        this NodeId's previous life, when a node restarts before the others forget it, or
        those who left while Redis was unreachable. Returns those now offline everywhere."""
        stale = [int(u) for u in self.redis.smembers(self._k_users(self.node_id))
                 if not self.local_count(int(u))]
        gone: list[int] = []
        if stale:
            pipe = self.redis.pipeline(transaction=False)
            for uid in stale:
                pipe.hdel(self._k_user(uid), self.node_id)
            pipe.srem(self._k_users(self.node_id), *stale)
            pipe.execute()
            gone = [uid for uid in stale if not self.local_count(uid) and not self._remote_nodes(uid)]
            log.info("cluster: dropped %d stale users of node %s; %d went offline",
                     len(stale), self.node_id, len(gone))
        with self._lock:
            counts = {uid: len(sessions) for uid, sessions in self._sessions.items()}
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self._k_node(self.node_id), int(time.time()), ex=self.cfg.node_ttl)
        pipe.set(self._k_conns(self.node_id), self.local_connections(), ex=self.cfg.node_ttl)
        pipe.sadd(f"{self.prefix}nodes", self.node_id)
        for uid, n in counts.items():
            pipe.hset(self._k_user(uid), self.node_id, n)
        if counts:
            pipe.sadd(self._k_users(self.node_id), *counts)
        pipe.execute()
        if counts:
            log.info("cluster: re-registered %d local users", len(counts))
        self._transitions(stale + list(counts))
        return gone

    # -- once-per-cluster presence transitions (webhooks, PROTOCOL.md 9.3) ---------------

    def watch_presence(self, callback: Callable[[int, bool], None]) -> None:
        """Call ``callback(user_id, online)`` once per cluster when a user's first live
        connection in the cluster comes up (True) or its last one is gone (False).

        After every change of ``P user:<uid>`` the node that made it runs one Lua script
        that compares the hash with ``P online:<uid>`` and flips the latter: Redis runs
        scripts one at a time, so each transition is claimed by exactly one node, and
        the last script after concurrent changes sees their sum. ``callback`` runs in
        the caller's greenlet and must not block."""
        self._presence_watch = callback
        self._transition_script = self.redis.register_script(_TRANSITION_LUA)

    _presence_watch: Callable[[int, bool], None] | None = None

    def _transitions(self, uids: list[int]) -> None:
        if self._presence_watch is None or not uids:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for uid in uids:
                self._transition_script(keys=[self._k_user(uid), f"{self.prefix}online:{uid}"],
                                        client=pipe)
            results = pipe.execute()
        except redis.RedisError as e:
            self._failed("presence transition", e)
            return
        for uid, r in zip(uids, results):
            if r:
                self._presence_watch(uid, r == "online")

    # -- a small memory shared by the cluster (Hub.remember / recall) -------------------

    def remember(self, key: str, value: str, ttl: float) -> None:
        try:
            self.redis.set(f"{self.prefix}memo:{key}", value, ex=max(1, int(ttl)))
        except redis.RedisError as e:
            self._failed("remember", e)
        super().remember(key, value, ttl)      # what this node still knows while Redis is away

    def recall(self, key: str) -> str | None:
        try:
            got = self.redis.get(f"{self.prefix}memo:{key}")
        except redis.RedisError as e:
            self._failed("recall", e)
            got = None
        return got if got is not None else super().recall(key)

    # -- liveness ----------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while self._running:                      # ends with stop()
            gevent.sleep(self.cfg.heartbeat_interval)
            try:
                self._heartbeat_once()
            except (redis.RedisError, OSError) as e:
                self._failed("heartbeat", e)

    def _heartbeat_once(self) -> None:
        nodes_key = f"{self.prefix}nodes"
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self._k_node(self.node_id), int(time.time()), ex=self.cfg.node_ttl)
        pipe.set(self._k_conns(self.node_id), self.local_connections(), ex=self.cfg.node_ttl)
        pipe.sadd(nodes_key, self.node_id)
        pipe.smembers(nodes_key)
        pipe.delete(f"{self.prefix}forgotten:{self.node_id}")
        _, _, _, members, forgotten = pipe.execute()
        if forgotten:
            # we stalled past NodeTTL and the others gave our users up (offline to
            # their friends): register them again and say they are back
            log.warning("cluster: node %s was given up by the others; re-registering", self.node_id)
            self._resync()
            with self._lock:
                back = list(self._sessions)
            if back:
                self.on_users_back(back)
        pipe = self.redis.pipeline(transaction=False)
        ordered = sorted(members)
        for n in ordered:
            pipe.exists(self._k_node(n))
        alive = {n for n, ok in zip(ordered, pipe.execute()) if ok}
        alive.add(self.node_id)
        self.alive = alive
        for dead in set(members) - alive:
            self._forget_node(dead)

    def _forget_node(self, dead: str) -> None:
        """A node stopped without goodbye: drop its users; those now offline are reported."""
        claim = f"{self.prefix}cleanup:{dead}"
        if not self.redis.set(claim, self.node_id, nx=True, ex=self.cfg.node_ttl):
            return                                 # another node is on it
        uids = [int(u) for u in self.redis.smembers(self._k_users(dead))]
        pipe = self.redis.pipeline(transaction=False)       # a round trip, not one per user
        for uid in uids:
            pipe.hdel(self._k_user(uid), dead)
        for uid in uids:
            pipe.hkeys(self._k_user(uid))
        pipe.delete(self._k_users(dead))
        pipe.srem(f"{self.prefix}nodes", dead)
        # if it was only stalled, it learns from this that its users were given up
        pipe.set(f"{self.prefix}forgotten:{dead}", self.node_id, ex=3600)
        remaining = pipe.execute()[len(uids):2 * len(uids)]
        gone = [uid for uid, nodes in zip(uids, remaining)
                if not self.local_count(uid)
                and not self._live([n for n in nodes if n != self.node_id])]
        log.info("cluster: node %s is gone; %d of its users went offline", dead, len(gone))
        self._transitions(uids)
        if gone:
            self.on_users_gone(gone)

