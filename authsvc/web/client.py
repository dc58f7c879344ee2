"""The client's address: X-Forwarded-For is believed only from trusted proxies."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

__all__ = ["client_ip", "request_client_ip"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=16)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_ip(remote_addr: str, forwarded_for: Iterable[str], trusted: tuple[str, ...]) -> str:
    """The peer itself unless it is a trusted proxy; then the right-most address of
    X-Forwarded-For that is not a trusted proxy (addresses left of it could be forged
    by the client). A malformed entry stops the walk: it is taken as the client."""
    networks = _networks(trusted)
    if not networks or not _trusted(remote_addr, networks):
        return remote_addr
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop[:64]
    return hops[0][:64] if hops else remote_addr


def request_client_ip() -> str:
    """The client address of the Flask request being answered."""
    from flask import current_app, request

    trusted = current_app.extensions["authsvc"].settings.trusted_proxies
    return client_ip(request.remote_addr or "", request.headers.getlist("X-Forwarded-For"), trusted)
