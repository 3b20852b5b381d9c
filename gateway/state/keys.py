"""What the kinds of state share: the clock (tests inject one), the client-network key, the
error and the SQLite settings of the embedded stores."""

from __future__ import annotations

import ipaddress
import time
from typing import Protocol

from gateway.errors import GatewayError

BUSY_TIMEOUT_MS = 5000  # another worker's decision holds the write lock for well under 1 ms
PRUNE_INTERVAL_S = 600.0  # how often (by the injected clock) expired rows are removed


class StateError(GatewayError):
    """Shared state could not be read or written."""


class Clock(Protocol):
    def time(self) -> float: ...


class SystemClock:
    def time(self) -> float:
        return time.time()


def client_network(client_ip: str, ipv4_prefix: int = 24, ipv6_prefix: int = 64) -> str:
    """The client's network: mail farms send and retry from sibling addresses, so state is
    kept per /24 (IPv4) or /64 (IPv6) rather than per address. IPv4-mapped IPv6 is IPv4."""
    try:
        ip = ipaddress.ip_address(client_ip)
    except ValueError:
        return client_ip
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
