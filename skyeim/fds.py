"""Open-file descriptors: the limit every program runs with, and what to do near it.

Every socket is a descriptor, and a VM's default soft ``RLIMIT_NOFILE`` is
1,024 while the hard limit is far higher (supervisord's ``minfds``, systemd's
``LimitNOFILE``). So every program raises its soft limit to the hard one at
start (:func:`raise_limit`, as Go's runtime does) and logs what it got.

If descriptors run short anyway:

* :class:`FdBudget` says when the process holds more than ``limit - reserve``
  descriptors; the gateway then refuses WebSocket handshakes with 503
  ``overloaded`` at once, keeping the reserve for calls to the services,
  Redis, log files and ``/healthz``.
* :class:`QuietAccept`, mixed into a gevent ``StreamServer``, keeps the accept
  loop going on EMFILE/ENFILE without a traceback: it closes a spare
  descriptor kept for this moment, accepts the waiting connection, answers it
  503 ``overloaded``, closes it, and pauses accepting briefly (one warning
  line per interval, not per connection).
"""
from __future__ import annotations

import errno
import logging
import os
import resource
import socket
import time

import gevent

log = logging.getLogger(__name__)

DEFAULT_RESERVE = 128        # descriptors kept for the services, Redis, logs, probes
REFRESH_INTERVAL = 1.0       # s between counts of /proc/self/fd
REFRESH_EVERY = 64           # or after this many admissions, whichever comes first
UNLIMITED_CAP = 1 << 20      # what "unlimited" means when raising (Linux's nr_open default)
_SHORTAGE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def limits() -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of this process."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def raise_limit() -> tuple[int, int, int]:
    """Raise the soft open-files limit to the hard limit; (before, now, hard).
    A failure leaves the limit as it was (and is logged by the caller's line)."""
    soft, hard = limits()
    target = hard if hard != resource.RLIM_INFINITY else _nr_open()
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return soft, limits()[0], hard


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return UNLIMITED_CAP


def open_count() -> int:
    """Descriptors this process holds now (raises OSError when it has none left to look)."""
    return len(os.listdir("/proc/self/fd")) - 1      # minus the one listdir itself opened


def start_up(program: str, reserve: int = DEFAULT_RESERVE, max_connections: int | None = None,
             expected_connections: int = 10_000, logger: logging.Logger = log) -> int:
    """At start: raise the limit, log it, and warn when the connections cannot fit.

    ``max_connections``: the gateway's WebSocket.MaxConnections (0 = no limit,
    then ``expected_connections`` is checked); None for a service. Returns the
    soft limit now in force."""
    before, soft, hard = raise_limit()
    raised = f" (raised from {before})" if soft != before else ""
    if max_connections is None:
        logger.info("%s: open-files limit %d%s, hard limit %d", program, soft, raised, hard)
        return soft
    room = max(0, soft - reserve - _safe_count())
    logger.info("%s: open-files limit %d%s, hard limit %d; room for about %d WebSocket "
                "connections (%d descriptors kept in reserve)", program, soft, raised, hard, room, reserve)
    wanted = max_connections or expected_connections
    if room < wanted:
        what = (f"WebSocket.MaxConnections is {max_connections}" if max_connections
                else f"MaxConnections is 0 (no limit) and {expected_connections} connections is a usual load")
        logger.warning("%s: %s but the open-files limit (%d) leaves room for about %d: "
                       "raise the hard limit (supervisord minfds, systemd LimitNOFILE, ulimit -Hn); "
                       "handshakes past it get 503 overloaded", program, what, soft, room)
    return soft


def _safe_count() -> int:
    try:
        return open_count()
    except OSError:
        return 0


class FdBudget:
    """Whether this process may take one more long-lived socket.

    Counting /proc/self/fd costs about a millisecond with thousands open, so
    the count is refreshed every REFRESH_INTERVAL s or REFRESH_EVERY
    admissions; in between, each admission counts as one more descriptor
    (never fewer than are really open, give or take the closes)."""

    def __init__(self, reserve: int = DEFAULT_RESERVE, clock=time.monotonic):
        self.reserve = reserve
        self._clock = clock
        self._counted = 0
        self._since = 0
        self._at = float("-inf")

    def exhausted(self) -> bool:
        soft = limits()[0]
        if soft == resource.RLIM_INFINITY:
            return False
        now = self._clock()
        if self._since >= REFRESH_EVERY or now - self._at >= REFRESH_INTERVAL:
            try:
                self._counted = open_count()
            except OSError:                # not even one descriptor left to look with
                return True
            self._since, self._at = 0, now
        return self._counted + self._since >= soft - self.reserve

    def admitted(self) -> None:
        """One more socket kept open (counted until the next refresh)."""
        self._since += 1


_BODY = b'{"code": "overloaded", "message": "the server has no file descriptors left; retry"}'
_OVERLOADED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
               b"Connection: close\r\nRetry-After: 1\r\nContent-Length: %d\r\n\r\n%s"
               % (len(_BODY), _BODY))


class QuietAccept:
    """Mixin for a gevent StreamServer (before it in the bases): EMFILE and its
    kin in ``accept()`` pause the accept loop briefly instead of logging a
    traceback, and the waiting connection gets 503 ``overloaded``."""

    accept_pause = 0.05          # s accepting pauses after a shortage
    accept_reserve = DEFAULT_RESERVE // 2   # descriptors accept() leaves free: 503 past them
    warn_interval = 10.0         # s between two warnings about it

    _spare_fd: int | None = None
    _last_warning = float("-inf")
    _refused_since_warning = 0

    def init_socket(self):
        super().init_socket()
        self._keep_spare()

    def _keep_spare(self) -> None:
        if self._spare_fd is None:
            try:
                self._spare_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._spare_fd = None

    def do_read(self):
        try:
            got = super().do_read()
        except OSError as e:
            if e.errno not in _SHORTAGE_ERRNOS:
                raise
            self._shortage(e)
            return None
        if got and self._near_the_limit(got[0]):
            # keep the last descriptors for what is already running (calls to the
            # services, Redis, logs): this connection gets 503 at once
            self._refused_since_warning += 1
            _answer_overloaded(got[0])
            self._warn("fewer than %d descriptors left" % self.accept_reserve)
            return None
        return got

    def _near_the_limit(self, sock) -> bool:
        """The kernel gives the lowest free descriptor: one this high means at
        least that many are open."""
        soft = limits()[0]
        return soft != resource.RLIM_INFINITY and sock.fileno() >= soft - self.accept_reserve

    def _shortage(self, e: OSError) -> None:
        self._refuse_one()
        self._warn(e.strerror or str(e))
        # pause: the listening socket stays readable, so accept would spin
        self.stop_accepting()
        gevent.spawn_later(self.accept_pause, self._resume_accepting)

    def _warn(self, why: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= self.warn_interval:
            log.warning("out of file descriptors (%s) accepting on %s: answering 503 overloaded "
                        "(%d refused since the last warning); raise the open-files limit",
                        why, self.address, self._refused_since_warning)
            self._last_warning, self._refused_since_warning = now, 0

    def _resume_accepting(self) -> None:
        if self.started and not self.closed:
            self.start_accepting()

    def _refuse_one(self) -> None:
        """Use the spare descriptor to take one waiting connection and answer it 503."""
        if self._spare_fd is None:
            self._keep_spare()
            return
        os.close(self._spare_fd)
        self._spare_fd = None
        try:
            fd, _ = self.socket._accept()      # non-blocking, as in StreamServer.do_read
        except OSError:
            fd = None
        if fd is not None:
            self._refused_since_warning += 1
            _answer_overloaded(socket.socket(fileno=fd))
        self._keep_spare()

    def close(self):
        if self._spare_fd is not None:
            os.close(self._spare_fd)
            self._spare_fd = None
        super().close()


def _answer_overloaded(conn) -> None:
    """503 overloaded on a just-accepted connection, without waiting for anything, and close it."""
    try:
        conn.setblocking(False)
        try:
            conn.recv(65536)           # the request, if it is in: closing unread data resets
        except OSError:
            pass
        conn.send(_OVERLOADED)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        conn.close()
