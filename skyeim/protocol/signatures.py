"""The X-SkyeIM-Signature of webhooks and the before-send hook (PROTOCOL.md 9.3, 9.4):
``sha256=<hex HMAC-SHA256 of the exact body bytes, keyed with Webhooks.Secret>``.

The gateway signs with ``sign``; a team's receiver checks with ``verify_signature``
(re-exported by skyeim.server), always over the raw body bytes, before parsing them.
"""
from __future__ import annotations

import hashlib
import hmac

HEADER = "X-SkyeIM-Signature"
_PREFIX = "sha256="


def sign(body: bytes, secret: str | bytes) -> str:
    """The header value for ``body``."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return _PREFIX + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secret: str | bytes) -> bool:
    """Whether ``header`` (the X-SkyeIM-Signature value) signs ``body`` with ``secret``.
    Constant time; False for a missing or malformed header or an empty secret."""
    if not header or not secret or not isinstance(body, (bytes, bytearray)):
        return False
    return hmac.compare_digest(sign(bytes(body), secret).encode("ascii"),
                               header.strip().encode("ascii", "replace"))
