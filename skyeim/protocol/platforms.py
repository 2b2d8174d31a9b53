"""The ``platform`` query parameter of the handshake (docs/protocol.md, "Several
devices per user"): which kind of device a connection is, for MultiLogin
``one-per-platform``."""
from __future__ import annotations

PLATFORMS = frozenset({"web", "ios", "android", "desktop"})
UNKNOWN_PLATFORM = "unknown"      # a client that names none (every v1 client)


def parse_platform(value: str | None) -> str | None:
    """A platform, "unknown" when absent, None when invalid."""
    if value is None or value == "":
        return UNKNOWN_PLATFORM
    return value if value in PLATFORMS else None
