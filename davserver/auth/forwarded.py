"""The client's address behind a reverse proxy, for login throttling and logs.

Behind nginx or HAProxy every request comes from the proxy's address, so counting failed
logins per address would count every client together (a few wrong passwords from anyone
would lock everyone out). With ``[server] trusted_proxies`` set, the address is taken
from ``X-Forwarded-For`` — only when the request really comes from one of those proxies,
and only the rightmost entry that is not itself a trusted proxy: that one was written by
a proxy we trust; everything to its left is whatever the client chose to send.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks; a bad entry is a config error (ValueError)."""
    return tuple(ipaddress.ip_network(str(e).strip(), strict=False) for e in entries)


def _trusted(addr: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_address(environ: dict, trusted: tuple[Network, ...]) -> str:
    peer = environ.get("REMOTE_ADDR", "")
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if _trusted(hop, trusted):
            continue
        try:
            return str(ipaddress.ip_address(hop))
        except ValueError:
            return peer  # not what a proxy writes: fall back to the proxy's own address
    return peer
