"""Connection limits per client address and per user, checked before the upgrade.

``WebSocket.MaxConnectionsPerIp`` bounds the sockets one address holds (so one
host cannot take the whole ``MaxConnections``); ``MaxConnectionsPerUser``
bounds the sockets of one user, counted from the handshake until the socket
is gone. With MultiLogin ``kick`` a user normally holds one socket (plus, for
a moment, the one being replaced), so this limit stops floods of handshakes
with one token. 0 turns a limit off.

The client address is the TCP peer's, unless that peer is one of
``WebSocket.TrustedProxies``: then it is the rightmost X-Forwarded-For entry
that is not itself a trusted proxy (entries further left are whatever the
client chose to send, and prove nothing).
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str]) -> list[Network]:
    """Addresses or CIDR blocks; raises ValueError naming a bad one."""
    return [ipaddress.ip_network(item.strip(), strict=False) for item in items]


class ConnectionLimits:
    def __init__(self, per_ip: int, per_user: int, trusted_proxies: Iterable[str] = ()):
        self.per_ip, self.per_user = per_ip, per_user
        self.trusted = parse_networks(trusted_proxies)
        # only addresses and users that hold a socket: entries go at 0, so these
        # maps are as large as the live connections, never larger
        self.by_ip: dict[str, int] = {}
        self.by_user: dict[int, int] = {}

    def client_ip(self, environ: dict) -> str:
        peer = environ.get("REMOTE_ADDR") or ""
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        if not forwarded or not self._is_trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded.split(",") if h.strip()][-32:]   # bounded
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop if _is_ip(hop) else peer
        return hops[0] if hops and _is_ip(hops[0]) else peer

    def acquire(self, ip: str, user_id: int) -> str | None:
        """Count one more socket, or say why not (a message for the refusal)."""
        if self.per_ip and self.by_ip.get(ip, 0) >= self.per_ip:
            return "too many connections from this address"
        if self.per_user and self.by_user.get(user_id, 0) >= self.per_user:
            return "too many connections for this user"
        self.by_ip[ip] = self.by_ip.get(ip, 0) + 1
        self.by_user[user_id] = self.by_user.get(user_id, 0) + 1
        return None

    def release(self, ip: str, user_id: int) -> None:
        _decrement(self.by_ip, ip)
        _decrement(self.by_user, user_id)

    def _is_trusted(self, addr: str) -> bool:
        if not self.trusted:
            return False
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)


def _is_ip(addr: str) -> bool:
    try:
        ipaddress.ip_address(addr)
        return True
    except ValueError:
        return False


def _decrement(counts: dict, key) -> None:
    n = counts.get(key, 0) - 1
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)
