"""A request body read as a stream (uploads), and what is left of it when the
gateway refuses it part way (413). gevent's server would read and discard the
rest after the answer, however large; ``refuse_rest`` makes it read (and drop)
what follows for at most LINGER_SECONDS, LINGER_BYTES, or until the client pauses
LINGER_IDLE (a lingering close, as nginx does: a client that stops sending on the
answer gets to read it, instead of a reset), then close the connection."""
from __future__ import annotations

import time

import gevent

LINGER_BYTES = 32 << 20         # bytes of a refused body still read (and dropped) after the answer
LINGER_SECONDS = 2.0
LINGER_IDLE = 0.5
CHUNK = 64 * 1024


def body_chunks(environ: dict, chunk: int = CHUNK):
    """The request body in chunks of at most ``chunk`` bytes (Content-Length or chunked)."""
    stream = environ["wsgi.input"]
    while True:
        data = stream.read(chunk)
        if not data:
            return
        yield data


def refuse_rest(environ: dict, response) -> None:
    """After ``response`` (a werkzeug Response) is written, read a bounded part of what
    is left of the body, then drop the connection; the body is never read in full."""
    response.headers["Connection"] = "close"
    stream = environ.get("wsgi.input")
    if stream is None:
        return

    def linger() -> None:
        left, until = LINGER_BYTES, time.monotonic() + LINGER_SECONDS
        try:
            while left > 0 and time.monotonic() < until:
                data = None
                with gevent.Timeout(min(LINGER_IDLE, max(until - time.monotonic(), 0.01)), False):
                    data = stream.read(min(CHUNK, left))
                if not data:       # the end, a pause, or the time is up
                    break
                left -= len(data)
        except Exception:          # the client went away or sent a broken chunk
            pass
        # gevent's Input: nothing left to discard after the response (the connection closes)
        if hasattr(stream, "chunked_input"):
            stream.chunked_input = False
            stream.content_length = stream.position

    response.call_on_close(linger)
