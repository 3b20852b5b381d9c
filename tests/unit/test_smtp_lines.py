"""LineReader: lines cut at LF, over-long lines in pieces, deadlines, EOF (a fed StreamReader)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.smtp.lines import LineReader


async def read_all(data: bytes, max_line: int, eof: bool = True) -> list[tuple[bytes, bool]]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    lines = LineReader(reader, max_line)
    deadline = asyncio.get_running_loop().time() + 1
    out = []
    try:
        while True:
            out.append(await lines.next(deadline))
    except asyncio.IncompleteReadError as rest:
        assert rest.partial == b""
    return out


def test_lines_and_pieces() -> None:
    got = asyncio.run(read_all(b"ab\r\n" + b"x" * 10 + b"\r\nlf\n", max_line=5))
    assert got == [
        (b"ab\r\n", True),
        (b"xxxxx", False),
        (b"xxxxx", False),
        (b"\r\n", True),
        (b"lf\n", True),
    ]


def test_a_line_of_exactly_the_limit_is_whole() -> None:
    assert asyncio.run(read_all(b"abc\r\n", max_line=5)) == [(b"abc\r\n", True)]


def test_silence_raises_timeout() -> None:
    async def wait_for_line() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"partial")
        lines = LineReader(reader, 100)
        await lines.next(asyncio.get_running_loop().time() + 0.05)

    with pytest.raises(TimeoutError):
        asyncio.run(wait_for_line())


def test_discard_buffered_drops_what_was_not_read() -> None:
    async def run() -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(b"STARTTLS\r\nMAIL FROM:<x@y>\r\n")
        lines = LineReader(reader, 100)
        deadline = asyncio.get_running_loop().time() + 1
        first, _ = await lines.next(deadline)
        lines.discard_buffered()
        reader.feed_data(b"EHLO after\r\n")
        second, _ = await lines.next(deadline)
        return first + second

    assert asyncio.run(run()) == b"STARTTLS\r\nEHLO after\r\n"


def test_waiting_for_the_end_of_data_does_not_search_the_same_bytes_again() -> None:
    # A client dripping DATA a few bytes per packet: a search from the start after every read
    # costs the square of the message size (256 KiB in 1-byte packets: ~3e10 bytes compared)
    # on the event loop every session shares.
    class Counting(bytearray):
        searched = 0

        def find(self, sub: object, start: int = 0, end: int | None = None) -> int:  # type: ignore[override]
            stop = len(self) if end is None else min(end, len(self))
            Counting.searched += max(0, stop - start)
            return super().find(sub, start, end)  # type: ignore[arg-type]

    async def drip() -> bytes | None:
        reader = asyncio.StreamReader()
        lines = LineReader(reader, 1000)
        lines._buffer = Counting()
        deadline = asyncio.get_running_loop().time() + 5
        for piece in [b"Subject: x\r\n\r\n", *[b"ab\r"] * 3000, b"\n.", b"\r", b"\n"]:
            reader.feed_data(piece)
            await lines.fill(deadline)
            block = lines.take_through(b"\r\n.\r\n", 1 << 20)
            if block is not None:
                return block
        return None

    block = asyncio.run(drip())
    assert block is not None and block.endswith(b"ab\rab\r\n.\r\n")
    assert Counting.searched < 4 * len(block)
