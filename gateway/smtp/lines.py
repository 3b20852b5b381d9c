"""Lines from the client, cut at LF, with bounded length and one timer per network read.

A timer per line (asyncio.timeout around StreamReader.readuntil) costs more than the rest of
DATA handling together; here lines are cut out of a local buffer, and the deadline is armed
only when more bytes must come from the network.
"""

from __future__ import annotations

import asyncio
import math

READ_SIZE = 65536


class LineReader:
    def __init__(self, reader: asyncio.StreamReader, max_line_bytes: int) -> None:
        self._reader = reader
        self.max_line_bytes = max_line_bytes
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already known to hold no LF
        self.received = 0  # bytes read from the network so far, as they came
        self._waiting: asyncio.Timeout | None = None  # the deadline of a read under way

    async def next(self, deadline: float, extra: int = 0) -> tuple[bytes, bool]:
        """(line, True) for a line ending in LF and at most max_line_bytes (+ `extra`) long,
        or (piece, False) for the next that many bytes of a longer line.

        Raises TimeoutError at `deadline` (a loop.time() value) and IncompleteReadError at EOF.
        """
        limit = self.max_line_bytes + extra
        while True:
            end = self._buffer.find(b"\n", self._scanned, limit)
            if end != -1:
                return self._take(end + 1), True
            if len(self._buffer) >= limit:
                return self._take(limit), False
            self._scanned = len(self._buffer)
            await self.fill(deadline)

    def take_lines(self) -> bytes | None:
        """Every whole line buffered (through the last LF), or None when no LF is buffered."""
        end = self._buffer.rfind(b"\n")
        return None if end == -1 else self._take(end + 1)

    def unread(self, data: bytes) -> None:
        """Put taken bytes back in front of the buffer."""
        self._buffer[:0] = data
        self._scanned = 0

    def starts_with(self, prefix: bytes) -> bool:
        return self._buffer.startswith(prefix)

    def buffered_bytes(self) -> int:
        return len(self._buffer)

    async def fill(self, deadline: float) -> None:
        """One network read into the buffer; TimeoutError at `deadline`, IncompleteReadError
        at EOF."""
        try:
            async with asyncio.timeout_at(deadline) as self._waiting:
                data = await self._reader.read(READ_SIZE)
        finally:
            self._waiting = None
        if not data:
            raise asyncio.IncompleteReadError(bytes(self._buffer), None)
        self.received += len(data)
        self._buffer += data

    def shorten_deadline(self, deadline: float) -> None:
        """Bring the deadline of a read under way forward to `deadline`, if it is later."""
        waiting = self._waiting
        if waiting is not None and (waiting.when() or math.inf) > deadline:
            waiting.reschedule(deadline)

    def discard_buffered(self) -> None:
        """Forget bytes received but not read yet (plaintext pipelined after STARTTLS)."""
        self._buffer.clear()
        self._scanned = 0

    def _take(self, size: int) -> bytes:
        taken = bytes(self._buffer[:size])
        del self._buffer[:size]  # O(1): bytearray drops a prefix by moving its start
        self._scanned = 0
        return taken
