"""A small asyncio client for clamd's INSTREAM command, within one deadline per scan.

Written instead of using the `clamd` package (1.0.2, the latest release) because that
client connects before applying its timeout (a dead host blocks for the OS connect timeout),
sends chunks with `socket.send` (a partial send desynchronises the stream), returns None
instead of raising when clamd closes without answering (a caller reads that as "clean"),
reads replies without a bound and is blocking, so it would need a thread per scan.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.config import parse_hostport
from gateway.errors import ScannerError

DEFAULT_PORT = 3310
_CHUNK_BYTES = 64 * 1024  # well under clamd's StreamMaxLength; few syscalls per megabyte
_MAX_REPLY_BYTES = 4096  # a real reply is one short line; more is garbage
_SIZE_LIMIT_REPLY = "INSTREAM size limit exceeded. ERROR"


class ScanStatus(StrEnum):
    CLEAN = "clean"
    FOUND = "found"
    TOO_LARGE = "too_large"  # clamd refused the stream: over its StreamMaxLength


@dataclass(frozen=True, slots=True)
class ScanResult:
    status: ScanStatus
    signature: str = ""  # the signature name when FOUND


@dataclass(frozen=True, slots=True)
class TcpAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class UnixAddress:
    path: str

    def __str__(self) -> str:
        return self.path


def parse_address(text: str) -> TcpAddress | UnixAddress:
    """'tcp://host:port' (port defaults to 3310) or an absolute unix socket path."""
    if text.startswith("tcp://"):
        host, port = parse_hostport(text.removeprefix("tcp://"), DEFAULT_PORT)
        if not host or not 1 <= port <= 65535:
            raise ValueError(f"{text!r} is not tcp://host:port")
        return TcpAddress(host, port)
    if text.startswith("/"):
        return UnixAddress(text)
    raise ValueError(f"{text!r} is neither tcp://host:port nor an absolute unix socket path")


def parse_reply(reply: str) -> ScanResult:
    """Interpret one INSTREAM reply line; anything unexpected is a ScannerError."""
    if reply == _SIZE_LIMIT_REPLY:
        return ScanResult(ScanStatus.TOO_LARGE)
    if reply == "stream: OK":
        return ScanResult(ScanStatus.CLEAN)
    body = reply.removeprefix("stream: ")
    if body != reply and body.endswith(" FOUND"):
        signature = body.removesuffix(" FOUND").strip()
        if signature and signature.isprintable():
            return ScanResult(ScanStatus.FOUND, signature)
    if reply.endswith(" ERROR"):
        raise ScannerError(f"clamd error: {reply[:200]}")
    raise ScannerError(f"unexpected clamd reply: {reply[:200]!r}")


class ClamdClient:
    """One connection per scan, as clamd expects; each scan is bounded by `timeout_s`."""

    def __init__(self, address: TcpAddress | UnixAddress, timeout_s: float) -> None:
        self.address = address
        self.timeout_s = timeout_s

    async def instream(self, data: bytes) -> ScanResult:
        """Scan `data` (a whole message: clamd decodes MIME and archives itself)."""
        return parse_reply(await self._command(_instream_frames(data)))

    async def _command(self, request: Iterable[bytes]) -> str:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._exchange(request)
        except TimeoutError:
            raise ScannerError(
                f"clamd at {self.address} did not answer within {self.timeout_s:g}s"
            ) from None
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ScannerError(f"clamd at {self.address}: {why}") from None

    async def _exchange(self, request: Iterable[bytes]) -> str:
        # Plain non-blocking sockets, not asyncio streams: clamd answers and closes at once
        # when it refuses a stream (size limit), and the reset that follows made the stream
        # raise its stored error before the reply it had already received was read (AV_ERROR
        # instead of AV_OVERSIZE). The kernel keeps that reply readable after a reset.
        loop = asyncio.get_running_loop()
        sock = await _connect(self.address)
        with sock:
            try:
                for piece in request:
                    await loop.sock_sendall(sock, piece)
            except (BrokenPipeError, ConnectionResetError):
                pass  # clamd stopped reading: its answer, if any, is read below
            return await _read_reply(loop, sock, self.address)


async def _connect(address: TcpAddress | UnixAddress) -> socket.socket:
    loop = asyncio.get_running_loop()
    if isinstance(address, UnixAddress):
        targets: list[tuple[int, tuple[Any, ...] | str]] = [(socket.AF_UNIX, address.path)]
    else:
        infos = await loop.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        targets = [(family, sockaddr) for family, _, _, _, sockaddr in infos]
    error: OSError = OSError(f"no address for {address}")
    for family, sockaddr in targets:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:  # cancelled by the deadline
            sock.close()
            raise
        return sock
    raise error


def _instream_frames(data: bytes) -> Iterator[bytes]:
    """The INSTREAM command, then length-prefixed chunks, then a zero length to end."""
    yield b"zINSTREAM\0"
    for start in range(0, len(data), _CHUNK_BYTES):
        chunk = data[start : start + _CHUNK_BYTES]
        yield struct.pack("!L", len(chunk)) + chunk
    yield struct.pack("!L", 0)


async def _read_reply(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, address: TcpAddress | UnixAddress
) -> str:
    raw = b""
    while b"\0" not in raw:
        if len(raw) > _MAX_REPLY_BYTES:
            raise ScannerError(f"clamd at {address} sent an over-long reply")
        try:
            chunk = await loop.sock_recv(sock, _MAX_REPLY_BYTES)
        except ConnectionResetError:
            chunk = b""  # reset after all it sent was read: as good as a close
        if not chunk:
            raise ScannerError(
                f"clamd at {address} closed the connection without a complete reply "
                f"({len(raw)} bytes)"
            )
        raw += chunk
    return raw[: raw.index(b"\0")].decode("ascii", errors="replace").strip()
