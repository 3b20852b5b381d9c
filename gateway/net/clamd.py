"""A small asyncio client for clamd's INSTREAM command, within one deadline per scan.

Written instead of using the `clamd` package (1.0.2, the latest release) because that
client connects before applying its timeout (a dead host blocks for the OS connect timeout),
sends chunks with `socket.send` (a partial send desynchronises the stream), returns None
instead of raising when clamd closes without answering (a caller reads that as "clean"),
reads replies without a bound and is blocking, so it would need a thread per scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

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
        if isinstance(self.address, TcpAddress):
            reader, writer = await asyncio.open_connection(
                self.address.host, self.address.port, limit=_MAX_REPLY_BYTES
            )
        else:
            reader, writer = await asyncio.open_unix_connection(
                self.address.path, limit=_MAX_REPLY_BYTES
            )
        try:
            with contextlib.suppress(ConnectionError):  # clamd may answer and close mid-stream
                for piece in request:  # (e.g. "size limit exceeded"): read that answer below
                    writer.write(piece)
                    await writer.drain()
            reply = await _read_reply(reader, self.address)
        except BaseException:
            # A graceful close would wait for a peer that does not read: drop the connection.
            writer.transport.abort()
            raise
        writer.close()
        with contextlib.suppress(OSError):  # a peer that reset leaves nothing to release
            await writer.wait_closed()
        return reply


def _instream_frames(data: bytes) -> Iterator[bytes]:
    """The INSTREAM command, then length-prefixed chunks, then a zero length to end."""
    yield b"zINSTREAM\0"
    for start in range(0, len(data), _CHUNK_BYTES):
        chunk = data[start : start + _CHUNK_BYTES]
        yield struct.pack("!L", len(chunk)) + chunk
    yield struct.pack("!L", 0)


async def _read_reply(reader: asyncio.StreamReader, address: TcpAddress | UnixAddress) -> str:
    try:
        raw = await reader.readuntil(b"\0")
    except asyncio.IncompleteReadError as exc:
        raise ScannerError(
            f"clamd at {address} closed the connection without a complete reply "
            f"({len(exc.partial)} bytes)"
        ) from None
    except asyncio.LimitOverrunError:
        raise ScannerError(f"clamd at {address} sent an over-long reply") from None
    return raw[:-1].decode("ascii", errors="replace").strip()
