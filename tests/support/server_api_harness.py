"""Helpers for the server API tests (PROTOCOL.md 9.2): the key, the ws.yaml
override that sets it, raw calls with any key, and the error-shape check."""
from __future__ import annotations

import secrets
from typing import Any

import requests

KEY = "test-key-" + secrets.token_hex(8)
WS_OVERRIDE = {"ServerApi": {"Key": KEY}}
_MISSING = object()


def call(base_url: str, method: str, path: str, *, key: Any = KEY,
         json_body: Any = _MISSING, **kw: Any) -> requests.Response:
    """``method`` ``/server/v1`` + ``path`` on the gateway at ``base_url``; ``key`` None
    sends no X-Api-Key."""
    headers = kw.pop("headers", {})
    if key is not None:
        headers["X-Api-Key"] = key
    if json_body is not _MISSING:
        kw["json"] = json_body
    return requests.request(method, f"{base_url}/server/v1{path}", headers=headers,
                            timeout=10, **kw)


def assert_error(r: requests.Response, status: int, code: str, names: str | None = None) -> dict:
    """A ``{code, message}`` error of ``status``; its message names ``names`` when given."""
    assert r.status_code == status, f"expected {status} {code}, got {r.status_code} {r.text}"
    body = r.json()
    assert body.get("code") == code, body
    assert isinstance(body.get("message"), str), body
    if names is not None:
        assert names in body["message"], f"the message should name {names!r}: {body}"
    return body


def metric_value(base_url: str, name: str, **labels: str) -> float:
    """A sample of the gateway's /metrics at its admin listener ``base_url`` (0 when absent)."""
    text = requests.get(base_url + "/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    line_start = f"{name}{{{want}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.split()[-1])
    return 0.0
