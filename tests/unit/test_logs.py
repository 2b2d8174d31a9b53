"""skyeim.logs: the line formats (ISO 8601 UTC times; json objects)."""
from __future__ import annotations

import json
import logging

from skyeim.logs import JsonFormatter, TextFormatter, iso_utc


def _record(msg: str, fields: dict | None = None) -> logging.LogRecord:
    rec = logging.LogRecord("skyeim.access", logging.INFO, __file__, 1, msg, (), None)
    rec.created = 1796565787.1239       # 2026-12-06T14:03:07.123Z
    if fields is not None:
        rec.fields = fields
    return rec


def test_iso_utc_is_utc_with_milliseconds_and_z():
    assert iso_utc(1796565787.1239) == "2026-12-06T14:03:07.123Z"
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"


def test_text_line_starts_with_time_level_logger():
    assert TextFormatter().format(_record("GET /healthz 200 0.4ms -")) == \
        "2026-12-06T14:03:07.123Z INFO skyeim.access GET /healthz 200 0.4ms -"


def test_json_line_is_one_object_with_the_fields():
    line = JsonFormatter().format(_record("hi\nthere", {"status": 200, "path": "/x"}))
    assert "\n" not in line
    assert json.loads(line) == {"ts": "2026-12-06T14:03:07.123Z", "level": "INFO",
                                "logger": "skyeim.access", "msg": "hi\nthere",
                                "status": 200, "path": "/x"}


def test_json_fields_never_replace_the_standard_keys():
    obj = json.loads(JsonFormatter().format(_record("m", {"msg": "spoof", "ts": "x"})))
    assert obj["msg"] == "m" and obj["ts"] == "2026-12-06T14:03:07.123Z"
