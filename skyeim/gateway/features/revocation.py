"""Token revocation on the gateway: poll the Auth service, refuse and close.

The Auth service keeps, per user, a token generation that every revocation
raises (an operator's call, a password change); tokens carry the generation
they were issued in as ``gen`` (absent = 0). A token is revoked when its
``gen`` is below the generation the gateway last heard of for its user; a user
never revoked has no entry, so tokens without ``gen`` (other minters) work.

A greenlet asks every ``Auth.RevocationPollInterval`` seconds for the
generations changed since its cursor (no HTTP call per handshake), remembers
them in a bounded map, closes the user's live sessions whose token is revoked
with 4003, and the handshake and ``auth`` frames refuse such tokens. In a
cluster each node polls on its own. The Auth service down: the gateway keeps
serving with what it knows, warns once per outage, and retries.

``verify`` is the gateway's whole token check: signature, expiry, not revoked.
"""
from __future__ import annotations

import logging
import time
import weakref
from collections import OrderedDict

import gevent
import gevent.event

from skyeim import tokens
from skyeim.config import GatewayAuthConfig
from skyeim.gateway.backends.clients import AuthService, BackendFailure
from skyeim.gateway.transport.connections import Connections
from skyeim.gateway.transport.session import Session
from skyeim.protocol import CloseCode, is_user_id

log = logging.getLogger(__name__)

PAGE = 200              # revocations per call (the service's page cap)
MAX_PAGES = 100         # calls per poll; the rest comes at the next poll
MAX_USERS = 100_000     # revoked users remembered; beyond, the oldest revocation is forgotten
# A poll starts this long before the previous one's server time: a revocation
# whose transaction committed after that query (its revokedAt a little older)
# is still seen. Applying one twice changes nothing.
OVERLAP_MS = 30_000
FIRST_POLL_WAIT = 5.0   # s a check made during the first poll may wait for it


class Revocations:
    def __init__(self, auth: GatewayAuthConfig, service: AuthService, connections: Connections):
        self.secret = auth.access_secret
        self.service, self.connections = service, connections
        self.interval = auth.revocation_poll_interval
        # a revocation matters only to tokens issued before it, and they expire within this
        self.keep_ms = (auth.access_expire + tokens.LEEWAY) * 1000
        self._revoked: OrderedDict[int, tuple[int, int]] = OrderedDict()  # user -> (gen, revokedAt)
        self._gen_of: weakref.WeakKeyDictionary[Session, int] = weakref.WeakKeyDictionary()
        self._since: int | None = None      # the cursor, ms of the Auth service's clock
        self._down = False                  # in an outage (warned once)
        self._poller: gevent.Greenlet | None = None
        self._first_poll = gevent.event.Event()

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def start(self) -> None:
        """Poll now and then every interval. Until the first poll has ended,
        checks wait for it (bounded), so that a restarted gateway refuses
        revoked tokens from its first handshake."""
        if not self.enabled:
            log.info("token revocation is off (Auth.RevocationPollInterval: 0)")
            return
        if self._poller is None:
            self._poller = gevent.spawn(self._run)

    # -- checks (no I/O; only right after start, a bounded wait for the first poll) ----

    def verify(self, token: str) -> tokens.Claims:
        """The claims of a valid token that is not revoked; else tokens.InvalidToken."""
        claims = tokens.verify(self.secret, token)
        if self.is_revoked(claims):
            raise tokens.InvalidToken("the token was revoked")
        return claims

    def is_revoked(self, claims: tokens.Claims) -> bool:
        if self._poller is not None and not self._first_poll.is_set():
            self._first_poll.wait(FIRST_POLL_WAIT)   # just started: what does the Auth service say?
        return self._revoked_gen(claims.user_id) > claims.gen

    def _revoked_gen(self, user_id: int) -> int:
        entry = self._revoked.get(user_id)
        return entry[0] if entry else 0

    def track(self, session: Session, gen: int) -> None:
        """``session`` now runs on a token of generation ``gen`` (connect, ``auth``).

        A revocation applied between the token's check and this call is caught here."""
        self._gen_of[session] = gen
        if self._revoked_gen(session.user_id) > gen:
            self._close(session)

    # -- polling ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:                  # for the life of the process; each poll is bounded
            try:
                self.poll()
            except Exception:
                log.exception("revocation poll failed")
            self._first_poll.set()   # answered or failed: checks stop waiting either way
            gevent.sleep(self.interval)

    def poll(self) -> None:
        """One round: every revocation since the cursor (at most MAX_PAGES calls)."""
        auth = self.service
        since = self._since
        if since is None:            # first poll: every revocation that may still matter
            since = int(time.time() * 1000) - self.keep_ms
        after: int | None = None
        server_now: int | None = None
        newly: dict[int, int] = {}
        for _ in range(MAX_PAGES):
            try:
                body = auth.revocations(since, after, PAGE)
            except BackendFailure as e:
                if not self._down:
                    self._down = True
                    log.warning("revocations unavailable (%s): serving with what is known, "
                                "retrying every %gs", e, self.interval)
                return               # the cursor stays: the next poll asks again
            if server_now is None:
                server_now = _int(body.get("now"))
            rows = body.get("revocations")
            rows = rows if isinstance(rows, list) else []
            for row in rows:
                self._apply(row, newly)
            last = rows[-1] if rows else None
            if not body.get("hasMore") or not isinstance(last, dict):
                break
            since, after = _int(last.get("revokedAt")) or since, _int(last.get("userId"))
        if self._down:
            self._down = False
            log.info("revocations available again")
        if server_now is not None:
            self._since = min(server_now - OVERLAP_MS, since) if body.get("hasMore") \
                else server_now - OVERLAP_MS
            self._forget_older_than(server_now - self.keep_ms)
        if newly:
            self._close_revoked(newly)

    def _apply(self, row: object, newly: dict[int, int]) -> None:
        if not isinstance(row, dict):
            return
        uid, gen, at = row.get("userId"), _int(row.get("gen")), _int(row.get("revokedAt"))
        if not is_user_id(uid) or gen is None or at is None:
            return
        if gen <= self._revoked_gen(uid):
            return                   # seen already (the overlap) or older
        self._revoked[uid] = (gen, at)
        self._revoked.move_to_end(uid)
        newly[uid] = gen
        if len(self._revoked) > MAX_USERS:
            old_uid, _ = self._revoked.popitem(last=False)
            log.warning("more than %d revoked users: forgetting user=%s's oldest revocation",
                        MAX_USERS, old_uid)

    def _forget_older_than(self, cutoff_ms: int) -> None:
        for _ in range(len(self._revoked)):   # oldest first; stops at the first young one
            uid, (_, at) = next(iter(self._revoked.items()))
            if at >= cutoff_ms:
                return
            del self._revoked[uid]

    def _close_revoked(self, newly: dict[int, int]) -> None:
        for session in list(self.connections.sessions):
            gen = newly.get(session.user_id)
            if gen is not None and not session.closing and self._gen_of.get(session, 0) < gen:
                self._close(session)

    def _close(self, session: Session) -> None:
        log.info("conn=%s user=%s token revoked: closing 4003", session.conn_id, session.user_id)
        gevent.spawn(session.close, CloseCode.TOKEN_EXPIRED, "token revoked")


def _int(v: object) -> int | None:
    return v if type(v) is int and v >= 0 else None
