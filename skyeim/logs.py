"""Logging set-up: one line per event. Never log tokens, passwords or query strings.

Every line starts with its time in ISO 8601, UTC, to the millisecond
(``2026-12-06T14:03:07.123Z``), then the level, the logger and the message::

    2026-12-06T14:03:07.123Z INFO skyeim.access GET /api/login 200 3.1ms

With ``Log: {Format: json}`` each line is one JSON object instead, with ``ts``,
``level``, ``logger``, ``msg`` and the event's own fields (the access log's
``method``, ``path``, ``status``, ``duration_ms``, ...), for a log shipper.

The access log (logger ``skyeim.access``, docs/operations.md "Logs") has one
line per HTTP request and one per WebSocket open and close, at info level.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

ACCESS_LOGGER = "skyeim.access"
access_log = logging.getLogger(ACCESS_LOGGER)

# third-party loggers that are noise even with --debug (urllib3: one line per
# pooled connection the gateway opens to a service)
_QUIET = ("urllib3", "geventwebsocket")


def iso_utc(created: float) -> str:
    """``2026-12-06T14:03:07.123Z`` for a time.time() value."""
    ms = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER MESSAGE``, the time in ISO 8601 UTC; a traceback follows, if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{iso_utc(record.created)} {record.levelname} {record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the record's ``fields``, and
    ``exc`` (the traceback as one string) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {"ts": iso_utc(record.created), "level": record.levelname,
                               "logger": record.name, "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for k, v in fields.items():
                obj.setdefault(k, v)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False, default=str)


def setup(level: str = "info", debug: bool = False, fmt: str = "text", access: bool = True) -> None:
    """Configure the root logger: stderr, one line per event, in ``fmt`` (text or json)."""
    # no thread name in our lines: without this every greenlet that logs gets a gevent
    # _DummyThread for its life (~1 KB for each idle connection's handler greenlet)
    logging.logThreads = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else getattr(logging, level.upper(), logging.INFO))
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    # the access log is on at info level unless Log.Access is false (and then --debug shows it)
    access_log.setLevel(logging.NOTSET if access or debug else logging.WARNING)
    logging.captureWarnings(True)


def log_request(method: str, path: str, status: str | int, duration_ms: float,
                remote: str = "") -> None:
    """One access-log line for an HTTP request (never the query string: it may hold a token)."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info("%s %s %s %.1fms %s", method, path, status, duration_ms, remote or "-",
                        extra={"fields": {"event": "http", "method": method, "path": path,
                                          "status": _int(status), "duration_ms": round(duration_ms, 1),
                                          "remote": remote}})


def log_ws_open(path: str, remote: str = "", user_id: int | None = None) -> None:
    if access_log.isEnabledFor(logging.INFO):
        access_log.info("WS open %s user=%s %s", path, user_id if user_id is not None else "-",
                        remote or "-",
                        extra={"fields": {"event": "ws_open", "path": path, "user_id": user_id,
                                          "remote": remote}})


def log_ws_close(path: str, code: int | None, duration_ms: float, remote: str = "",
                 user_id: int | None = None) -> None:
    if access_log.isEnabledFor(logging.INFO):
        access_log.info("WS close %s user=%s code=%s %.1fms %s", path,
                        user_id if user_id is not None else "-", code, duration_ms, remote or "-",
                        extra={"fields": {"event": "ws_close", "path": path, "user_id": user_id,
                                          "close_code": code, "duration_ms": round(duration_ms, 1),
                                          "remote": remote}})


def _int(status: str | int) -> int | str:
    try:
        return int(str(status).split(" ", 1)[0])
    except ValueError:
        return str(status)
