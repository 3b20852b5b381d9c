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


def test_take_lines_takes_every_whole_line_buffered_and_leaves_the_partial_one() -> None:
    async def run() -> tuple[bytes | None, bytes | None, tuple[bytes, bool]]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"a\r\nb\nc")
        reader.feed_eof()
        lines = LineReader(reader, 100)
        deadline = asyncio.get_running_loop().time() + 1
        await lines.fill(deadline)
        taken, nothing = lines.take_lines(), lines.take_lines()
        with pytest.raises(asyncio.IncompleteReadError) as eof:
            await lines.next(deadline)
        return taken, nothing, (eof.value.partial, False)

    assert asyncio.run(run()) == (b"a\r\nb\n", None, (b"c", False))
