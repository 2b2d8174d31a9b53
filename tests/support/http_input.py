"""Bad HTTP input for tests/test_http_input.py: every POST endpoint of the gateway
and the three services (read from their Flask url_maps, so a new endpoint is
covered without editing the test), and the bodies to send them.

The body families follow the WebSocket fuzzer's (tests/test_fuzz_frames.py):
text that is not JSON, JSON that is not an object, wrong types in every field,
huge numbers, very long strings, nesting too deep to parse, invalid UTF-8 and
binary junk.
"""
from __future__ import annotations

import importlib
import json
import re
import socket
from pathlib import Path

from skyeim import config

# app factories; the apps are built in the test process only to read their routes
SERVICE_APPS = {"message": config.ServiceConfig, "friend": config.ServiceConfig,
                "auth": config.AuthServiceConfig}

SERVER_API_KEY = "http-input-server-api-key"     # the server API (/server/v1) is mounted with a key
PATH_PARAM = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")
PARAM_VALUES = {"group_id": "1", "user_id": "1", "friend_id": "1", "peer_id": "1"}


def post_routes(tmp: Path) -> list[tuple[str, str]]:
    """[(program, path)] of every POST rule: program is "gateway" or a service's name;
    path parameters are filled in (an id of 1)."""
    from skyeim.gateway.app import create_app
    from skyeim.gateway.composition import Gateway

    routes = []
    gw_cfg = config.from_mapping(config.GatewayConfig, {"Auth": {"AccessSecret": "r" * 32},
                                                        "ServerApi": {"Key": SERVER_API_KEY}})
    routes += [("gateway", p) for p in _posts(create_app(Gateway.from_config(gw_cfg)))]
    for name, cls in SERVICE_APPS.items():
        raw = {"Name": name, "Port": 1, "DataSource": f"sqlite:///{tmp / (name + '.db')}"}
        if name == "auth":
            raw["AccessSecret"] = "s" * 32
        app = importlib.import_module(f"skyeim.{name}.app").create_app(config.from_mapping(cls, raw))
        routes += [(name, p) for p in _posts(app)]
    return routes


def _posts(app) -> list[str]:
    out = []
    for rule in app.url_map.iter_rules():
        if "POST" in rule.methods and not rule.websocket:
            out.append(PATH_PARAM.sub(lambda m: PARAM_VALUES.get(m.group(1), "1"), rule.rule))
    return sorted(set(out))


def _nested(depth: int, open_: str, close: str, inner: str = "1") -> bytes:
    return (open_ * depth + inner + close * depth).encode()


# every key a POST body of the contract uses: each gets each wrong-typed value
FIELDS = ("userId", "peerId", "fromUserId", "toUserId", "friendId", "msgId", "msgIds",
          "content", "contentType", "username", "password", "oldPassword", "newPassword",
          "userIds", "messages", "deliveries", "limit", "name", "groupId", "token", "seq")
WRONG_VALUES = {
    "null": None, "true": True, "float": 1.5, "neg": -1, "zero": 0, "list": [], "object": {},
    "list-of-junk": [None, "x", {}, 1.5], "empty": "",
}
PER_FIELD = ("null", "list", "object", "float")    # also sent one field at a time
HUGE_NUMBERS = {
    "int-2^63": b"9223372036854775808", "int-2^64": b"18446744073709551616",
    "int-400-digits": b"1" + b"0" * 400, "int-5000-digits": b"9" * 5000,
    "float-1e400": b"1e400", "neg-1e400": b"-1e400", "float-tiny": b"1e-400",
    "nan": b"NaN", "infinity": b"Infinity",
}


def bodies() -> dict[str, bytes]:
    """name -> raw body (sent with Content-Type: application/json)."""
    out: dict[str, bytes] = {}
    # not JSON (the fuzzer's bad_json texts)
    for i, text in enumerate(["{not json", "", "   ", "{'type': 'ping'}", '{"type": "ping"',
                              "ping", "[1, 2,]", "\x00", '{"a":1}{"b":2}', "{" * 3]):
        out[f"not-json-{i}"] = text.encode()
    # JSON that is not an object
    for i, value in enumerate([[], [{"userId": 1}], "x", 1, 1.5, True, None]):
        out[f"not-object-{i}"] = json.dumps(value).encode()
    # nesting beyond any parser's limit, at the top and inside a field (test_fuzz_frames TOO_DEEP)
    for depth in (5_000, 100_000):
        out[f"deep-list-{depth}"] = _nested(depth, "[", "]")
        out[f"deep-dict-{depth}"] = _nested(depth, '{"a":', "}")
        out[f"deep-in-field-{depth}"] = b'{"userId":' + _nested(depth, "[", "]") + b"}"
    # wrong types in every field, one field at a time and all at once
    for kind, value in WRONG_VALUES.items():
        out[f"wrong-{kind}-all"] = json.dumps({f: value for f in FIELDS}).encode()
        if kind in PER_FIELD:
            for f in FIELDS:
                out[f"wrong-{kind}-{f}"] = json.dumps({f: value}).encode()
    # huge numbers, in every field at once
    for kind, literal in HUGE_NUMBERS.items():
        out[f"huge-{kind}"] = b"{" + b",".join(f'"{f}":'.encode() + literal for f in FIELDS) + b"}"
        out[f"huge-top-{kind}"] = literal
    # very long strings (the fuzzer's long-strings family), everywhere
    for length in (70_000, 500_000):
        out[f"long-string-{length}"] = json.dumps({f: "é" * (length // len(FIELDS))
                                                   for f in FIELDS}).encode()
    # invalid UTF-8 (the fuzzer's 1007 family) and binary junk (its binary family)
    out["utf8-lone-continuation"] = b'{"username":"\x80abc","password":"x"}'
    out["utf8-overlong"] = b'{"content":"\xc0\xaf"}'
    out["utf8-surrogate"] = b'{"content":"\xed\xa0\x80"}'
    out["utf8-truncated"] = b'{"name":"\xe2\x82"}'
    out["escaped-lone-surrogate"] = b'{"content":"\\ud800","name":"\\udfff","username":"\\ud83d"}'
    out["binary"] = bytes(range(256)) * 4
    out["nul-bytes"] = b"\x00" * 1024
    out["bom-then-object"] = b"\xef\xbb\xbf{}"
    out["utf16"] = '{"userId": 1}'.encode("utf-16")
    return out


def raw_request(host: str, port: int, head: bytes, timeout: float = 10.0) -> bytes:
    """Send ``head`` (request line and headers, ending in a blank line) and read the
    whole answer until the server closes (or ``timeout``)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(head)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (socket.timeout, ConnectionResetError):
            pass
    return b"".join(chunks)
