"""Which peers are trusted proxies (``trusted_proxies``: the web app in front of a service, a load balancer in front
of the web app): only what they write is believed, never what any other client sends. The rate limits believe
their X-Forwarded-For (``ratelimit.client_address``); tracing believes their trace context (``telemetry``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted_proxies(text: str) -> tuple[Network, ...]:
    """``"127.0.0.1, 10.0.0.0/8"`` → networks; ValueError on anything else."""
    networks: list[Network] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if part:
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"trusted_proxies: {part!r} is not an IP address or network") from None
    return tuple(networks)


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    """Whether ``address`` (an IP address as text) is in one of the ``trusted`` networks."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in trusted)


def peer_is_trusted(scope: Scope, trusted: Sequence[Network]) -> bool:
    """Whether the request's peer (the connection's other end, never a header) is a trusted proxy."""
    client = scope.get("client")
    return bool(trusted) and client is not None and is_trusted(str(client[0]), trusted)
