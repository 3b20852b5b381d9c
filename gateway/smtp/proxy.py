"""The PROXY protocol (HAProxy, versions 1 and 2): the real client behind a load balancer.

With [smtp] proxy_protocol on, a connection from one of `trusted_proxies` must start with a
PROXY header naming the client it carries; that client's address is then the one every check
and limit sees (SPF, DNS lists, DMARC, per-IP limits). Nobody else can claim an address: from
any other peer no header is read, and a "PROXY ..." line is an unknown SMTP command.

https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct

V1_PREFIX = b"PROXY "
V1_MAX_BYTES = 107  # the whole v1 line, CRLF included (spec 2.1)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_MAX_BYTES = 16 + 216  # fixed part + addresses; TLVs beyond that are not ours to hold
HEADER_TIMEOUT_S = 10.0


class ProxyHeaderError(Exception):
    """The trusted proxy sent no valid PROXY header: the connection is closed."""


# (client ip, client port), or None: a LOCAL/UNKNOWN header (the proxy's own health check),
# whose connection keeps the proxy's address.
ProxiedClient = tuple[str, int] | None


async def read_proxy_header(reader: asyncio.StreamReader) -> ProxiedClient:
    start = await reader.readexactly(6)
    if start == V1_PREFIX:
        return _parse_v1(start + await _read_line(reader, V1_MAX_BYTES - 6))
    if start == V2_SIGNATURE[:6]:
        rest = await reader.readexactly(6 + 4)
        if start + rest[:6] != V2_SIGNATURE:
            raise ProxyHeaderError("bad v2 signature")
        ver_cmd, family, length = struct.unpack("!BBH", rest[6:])
        if length > V2_MAX_BYTES:
            raise ProxyHeaderError(f"v2 header of {length} bytes")
        return _parse_v2(ver_cmd, family, await reader.readexactly(length))
    raise ProxyHeaderError("no PROXY header")


async def _read_line(reader: asyncio.StreamReader, limit: int) -> bytes:
    line = b""
    while not line.endswith(b"\r\n"):
        if len(line) >= limit:
            raise ProxyHeaderError("v1 line too long")
        line += await reader.readexactly(1)
    return line


def _parse_v1(line: bytes) -> ProxiedClient:
    parts = line[:-2].decode("ascii", "replace").split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return None
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("malformed v1 line")
    _, family, source, _, source_port, _ = parts
    try:
        address = ipaddress.ip_address(source)
        port = int(source_port)
    except ValueError:
        raise ProxyHeaderError("malformed v1 address") from None
    if address.version != (4 if family == "TCP4" else 6) or not 0 <= port <= 65535:
        raise ProxyHeaderError("malformed v1 address")
    return str(address), port


def _parse_v2(ver_cmd: int, family: int, body: bytes) -> ProxiedClient:
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"v2 version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command == 0:  # LOCAL
        return None
    if command != 1:
        raise ProxyHeaderError(f"v2 command {command}")
    if family == 0x11 and len(body) >= 12:  # TCP over IPv4
        source, _, port, _ = struct.unpack("!4s4sHH", body[:12])
    elif family == 0x21 and len(body) >= 36:  # TCP over IPv6
        source, _, port, _ = struct.unpack("!16s16sHH", body[:36])
    elif family == 0x00:  # UNSPEC: keep the proxy's address
        return None
    else:
        raise ProxyHeaderError(f"v2 family 0x{family:02x} with {len(body)} bytes")
    return str(ipaddress.ip_address(source)), port


def trusted(peer_ip: str, networks: tuple[str, ...]) -> bool:
    try:
        address = ipaddress.ip_address(peer_ip)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)
