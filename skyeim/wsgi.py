"""What every program's gevent WSGI handler shares: the access log and 431.

The gateway's WebSocket handler (skyeim.gateway.transport.websocket) and the
services' handler (skyeim.service) both mix in :class:`HttpHandlerMixin`:

- one access-log line per HTTP request (method, path without the query string,
  status, duration in ms, client address), at info level: skyeim.logs;
- a request with more than 100 header lines or a header line over 64 KiB
  (Python's http.client limits, which pywsgi uses) gets ``431 Request Header
  Fields Too Large`` and one log line, where pywsgi would print a traceback
  (more than 100) or answer 400 and reset the connection.
"""
from __future__ import annotations

import http.client
import json
import logging
import time

import gevent
from gevent.pywsgi import WSGIHandler

from skyeim import logs

log = logging.getLogger(__name__)

DRAIN_LIMIT = 1 << 20      # bytes of an oversized header block read (and dropped) before the 431
DRAIN_TIMEOUT = 2.0        # s that reading may take

_431_BODY = json.dumps({"code": "bad_request",
                        "message": "request headers too large: at most 100 header lines "
                                   "of at most 65536 bytes each"}).encode()
RESPONSE_431 = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"Content-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: " + str(len(_431_BODY)).encode() + b"\r\n\r\n" + _431_BODY)


class HttpHandlerMixin:
    """Mix in before a pywsgi WSGIHandler (sub)class."""

    def _handle_client_error(self, ex):
        if _headers_too_large(self, ex):
            _drain_header_block(self.rfile)
            log.warning("431 from %s: %s", remote_address(self), ex)
            return ("431", RESPONSE_431)
        return super()._handle_client_error(ex)

    def log_request(self):
        status = self.status
        if isinstance(status, bytes):
            status = status.decode("latin-1")
        code = (status or "-").split(" ", 1)[0]
        if code == "101":
            return                 # a WebSocket: its open and close have their own lines
        path = (getattr(self, "path", None) or "-").split("?", 1)[0]
        finish = self.time_finish or time.time()
        logs.log_request(getattr(self, "command", None) or "-", path, code,
                         (finish - self.time_start) * 1000, remote_address(self))


class Handler(HttpHandlerMixin, WSGIHandler):
    """The services' handler."""


def _headers_too_large(handler, ex: Exception) -> bool:
    if isinstance(ex, http.client.HTTPException):     # "got more than 100 headers", LineTooLong
        return True
    # pywsgi turns a LineTooLong in the headers into this status, then a ValueError
    return getattr(getattr(handler, "headers", None), "status", None) == "Line too long"


def _drain_header_block(rfile) -> None:
    """Read the rest of the header block, so that closing the socket does not reset it
    (and with it the 431) while the client is still sending."""
    read = 0
    with gevent.Timeout(DRAIN_TIMEOUT, False):
        try:
            while read < DRAIN_LIMIT:
                line = rfile.readline(65536)
                read += len(line)
                if not line or line in (b"\r\n", b"\n"):
                    break
        except (OSError, ValueError):
            pass


# environ key: the client's address as the app worked it out (the gateway believes
# X-Forwarded-For from WebSocket.TrustedProxies); the access log prefers it to the peer's
CLIENT_ADDRESS_KEY = "skyeim.client_address"


def remote_address(handler) -> str:
    environ = getattr(handler, "environ", None)
    if environ and environ.get(CLIENT_ADDRESS_KEY):
        return str(environ[CLIENT_ADDRESS_KEY])
    addr = getattr(handler, "client_address", None)
    if isinstance(addr, tuple) and addr:
        return str(addr[0])
    return str(addr or "")
