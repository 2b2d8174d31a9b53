"""One table of close and error codes: skyeim.protocol (Python) and the web client
module (skyeim/gateway/static/skyeim-client.js) agree, and the page's other scripts
use the module's constants instead of spelling the values again."""
from __future__ import annotations

import re
from pathlib import Path

from skyeim.protocol import CloseCode, ErrorCode

STATIC = Path(__file__).resolve().parents[1] / "skyeim" / "gateway" / "static"
CLIENT_JS = STATIC / "skyeim-client.js"
TABLE = re.compile(r"export const (\w+) = Object\.freeze\(\{(.*?)\}\);", re.S)
ENTRY = re.compile(r"^\s*([A-Z_]+):\s*(\d+|\"[^\"]*\"),?\s*(?://.*)?$")


def js_tables() -> dict[str, dict[str, int | str]]:
    """Every ``export const NAME = Object.freeze({KEY: value, ...});`` of the module."""
    tables = {}
    for name, body in TABLE.findall(CLIENT_JS.read_text()):
        entries = {}
        for line in body.splitlines():
            if not line.strip() or line.strip().startswith("//"):
                continue
            m = ENTRY.match(line)
            if m:
                key, raw = m.groups()
                entries[key] = raw.strip('"') if raw.startswith('"') else int(raw)
        tables[name] = entries
    return tables


def test_the_js_close_codes_are_skyeim_protocol_close_codes():
    assert js_tables()["CloseCode"] == {c.name: c.value for c in CloseCode}


def test_the_js_error_codes_are_skyeim_protocol_error_codes():
    assert js_tables()["ErrorCode"] == {c.name: c.value for c in ErrorCode}


def test_the_js_client_reconnects_after_the_same_codes_as_the_python_rule():
    """CloseCode.reconnect in Python; reconnectsAfter() in the module names the same codes."""
    source = CLIENT_JS.read_text()
    rule = re.search(r"export function reconnectsAfter\(code\) \{\s*return (.*?);\s*\}", source, re.S)
    assert rule, "reconnectsAfter() not found"
    named = set(re.findall(r"CloseCode\.([A-Z_]+)", rule.group(1)))
    assert named == {c.name for c in CloseCode if not c.reconnect}


def test_the_page_uses_the_modules_constants_not_bare_values():
    # 1000 is also a second in ms: as a close code it would stand in a close() or a comparison
    codes = {str(c.value) for c in CloseCode if c != CloseCode.NORMAL}
    normal = re.compile(r"(close\(|code\s*[!=]==?\s*)1000\b")
    # "error" is also the error frame's type and the module's event name
    errors = {c.value for c in ErrorCode} - {ErrorCode.ERROR.value}
    for script in sorted(STATIC.glob("*.js")):
        if script == CLIENT_JS:
            continue
        text = script.read_text()
        numbers = set(re.findall(r"\b\d{4}\b", text)) & codes
        assert not numbers and not normal.search(text), \
            f"{script.name} spells close codes {numbers or 1000}: use CloseCode"
        strings = set(re.findall(r"[\"']([a-z_]+)[\"']", text)) & errors
        assert not strings, f"{script.name} spells error codes {strings}: use ErrorCode"
