"""DataCollector: end of data, transparency, bare line endings and limits, chunk by chunk."""

from __future__ import annotations

import asyncio
import random
import re

import pytest

from gateway.smtp.data import TRANSPARENCY_EXTRA, DataCollector, DataProblem
from gateway.smtp.limits import MessageMemory
from gateway.smtp.lines import LineReader

CLIENT = "192.0.2.1"


def collect(
    stream: bytes, normalize: bool = False, max_bytes: int = 10_000, max_line: int = 1000
) -> tuple[DataCollector, bytes]:
    """Feed `stream` cut at LF, as the session reads it; return the collector and the rest."""
    collector = DataCollector(max_bytes, max_line, normalize)
    rest = stream
    while rest:
        chunk, lf, rest = rest.partition(b"\n")
        if collector.feed(chunk + lf):
            return collector, rest
    raise AssertionError("no end of data")


def test_crlf_dot_crlf_ends_data_and_the_rest_is_left() -> None:
    collector, rest = collect(b"a\r\nb\r\n.\r\nQUIT\r\n")
    assert collector.problem is None
    assert collector.message() == b"a\r\nb\r\n"
    assert rest == b"QUIT\r\n"


def test_an_empty_message_ends_at_once() -> None:
    collector, rest = collect(b".\r\n")
    assert collector.message() == b""
    assert rest == b""


@pytest.mark.parametrize(
    "fake_end",
    [b"\n.\n", b"\n.\r\n", b"\r.\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r", b"\n.\r"],
    ids=repr,
)
def test_fake_ends_do_not_end_data(fake_end: bytes) -> None:
    stream = b"x" + fake_end + b"MAIL FROM:<a@b.test>\r\n.\r\n"
    rejected, rest = collect(stream)
    assert rejected.problem is DataProblem.BARE_LINE_ENDING
    assert rest == b""
    normalized, rest = collect(stream, normalize=True)
    assert normalized.problem is None
    assert rest == b""
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", normalized.message()) is None


def test_normalize_turns_each_bare_cr_or_lf_into_crlf() -> None:
    collector, _ = collect(b"a\nb\rc\r\r\n.\r\n", normalize=True)
    assert collector.message() == b"a\r\nb\r\nc\r\n\r\n"


def test_transparency_dot_is_removed_at_real_line_starts_only() -> None:
    collector, _ = collect(b"..\r\n..x\r\n.y\r\n.\r\n", normalize=True)
    assert collector.message() == b".\r\n.x\r\ny\r\n"
    # After a bare LF the "line" is not a real SMTP line: its dot is content.
    collector, _ = collect(b"a\n..b\r\n.\r\n", normalize=True)
    assert collector.message() == b"a\r\n..b\r\n"


def test_too_big_keeps_reading_but_stores_nothing() -> None:
    collector, rest = collect(b"0123456789\r\n" * 10 + b".\r\nNOOP\r\n", max_bytes=100)
    assert collector.problem is DataProblem.TOO_BIG
    assert collector.size == 120
    assert collector.message() == b""
    assert rest == b"NOOP\r\n"


def test_line_limit_counts_the_crlf() -> None:
    ok, _ = collect(b"x" * 998 + b"\r\n.\r\n")
    assert ok.problem is None
    long, _ = collect(b"x" * 999 + b"\r\n.\r\n")
    assert long.problem is DataProblem.LINE_TOO_LONG


def test_size_beats_other_problems() -> None:
    collector, _ = collect(b"x\n" + b"y" * 2000 + b"\r\n.\r\n", max_bytes=100)
    assert collector.problem is DataProblem.TOO_BIG


def test_what_does_not_fit_the_shared_memory_is_not_stored_and_gives_its_memory_back() -> None:
    memory = MessageMemory(1000, 1000).account(CLIENT)
    first = DataCollector(10_000, 1000, normalize=False, memory=memory)
    first.feed_lines(b"x" * 598 + b"\r\n")
    assert memory.memory.held_bytes == 600
    second = DataCollector(10_000, 1000, normalize=False, memory=memory)
    assert second.feed_lines(b"y" * 498 + b"\r\n.\r\n") == (True, 503)
    assert second.problem is DataProblem.NO_MEMORY
    assert memory.memory.held_bytes == 600  # nothing of the second is held
    assert first.message() == b"x" * 598 + b"\r\n"
    first.release()
    assert memory.memory.held_bytes == 0
    # A message too big for the limit *and* for max_message_bytes is refused for its size.
    third = DataCollector(
        700, 1000, normalize=False, memory=MessageMemory(650, 650).account(CLIENT)
    )
    third.feed_lines(b"z" * 798 + b"\r\n" + b".\r\n")
    assert third.problem is DataProblem.TOO_BIG


def test_fragments_of_an_overlong_line_keep_the_line_start_straight() -> None:
    collector = DataCollector(10_000, 1000, normalize=False)
    collector.fragment(b"x" * 1500 + b"\r")  # the stream buffer ended between CR and LF
    assert not collector.feed(b"\n")
    assert not collector.feed(b".x\r\n")
    collector.fragment(b"y" * 1500)
    assert not collector.feed(b".\r\n")  # the tail of the long line, not an end
    assert collector.feed(b".\r\n")
    assert collector.problem is DataProblem.LINE_TOO_LONG


class Network:
    """The client's side of a LineReader: the stream arriving in the given pieces."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def read(self, size: int) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""


def cut(stream: bytes, generator: random.Random) -> list[bytes]:
    pieces, position = [], 0
    while position < len(stream):
        size = generator.choice([1, 2, 7, 100, 1500, 70_000])
        pieces.append(stream[position : position + size])
        position += size
    return pieces


async def read_data(
    pieces: list[bytes],
    blockwise: bool,
    max_bytes: int,
    normalize: bool,
    memory_bytes: int | None = None,
) -> tuple[bytes, int, DataProblem | None, bytes]:
    """DATA read as the session reads it (`read_from`) or strictly line by line (`feed`):
    message, size, problem and what is left for the next command. With `memory_bytes`, a
    shared memory limit that must hold exactly the message at the end."""
    network = Network(list(pieces))
    lines = LineReader(network, 1000)  # type: ignore[arg-type]
    memory = (
        None if memory_bytes is None else MessageMemory(memory_bytes, memory_bytes).account(CLIENT)
    )
    collector = DataCollector(max_bytes, 1000, normalize, memory)
    deadline = asyncio.get_running_loop().time() + 5

    async def read_line() -> tuple[bytes, bool]:
        return await lines.next(deadline, extra=TRANSPARENCY_EXTRA)

    if blockwise:
        await collector.read_from(lines, read_line)
    else:
        while True:
            chunk, complete = await read_line()
            if not complete:
                collector.fragment(chunk)
            elif collector.feed(chunk):
                break
    rest = bytes(lines._buffer) + b"".join(network.pieces)
    message = collector.message()
    if memory is not None:
        assert memory.memory.held_bytes == len(message)
        collector.release()
        assert memory.memory.held_bytes == 0
    return message, collector.size, collector.problem, rest


PIECES = [
    *[b"text", b"x" * 400, b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b" ", b"\xe9"],
    *[b"\r\n" * 50, b"\r\n.\r\n", b"y" * 1500],
]


def test_reading_whole_lines_at_once_gives_what_reading_line_by_line_gives() -> None:
    # Random streams (bare CR and LF, dots, lines over the 1000 limit, ends of data inside,
    # sizes around the message limit) arriving in random pieces: taking what each read
    # brought in one piece must agree with feeding each line, byte for byte.
    generator = random.Random(7)
    outcomes: set[DataProblem | None] = set()
    for _ in range(3000):
        body = b"".join(generator.choice(PIECES) for _ in range(generator.randrange(1, 40)))
        stream = b"a" + body + b"\r\n.\r\nQUIT\r\n"
        pieces = cut(stream, generator)
        max_bytes = generator.choice([300, 2000, 100_000])
        normalize = generator.random() < 0.5
        memory = generator.choice([None, 250, 1800, 10**6])
        blockwise = asyncio.run(read_data(pieces, True, max_bytes, normalize, memory))
        line_by_line = asyncio.run(read_data(pieces, False, max_bytes, normalize, memory))
        assert blockwise == line_by_line, stream
        outcomes.add(blockwise[2])
    assert outcomes == {None, *DataProblem}


@pytest.mark.parametrize(
    ("stream", "normalize", "expected"),
    [
        (b"\r\n" * 4_000_000 + b".\r\n", False, b"\r\n" * 4_000_000),
        # Bare LFs everywhere, normalised: line by line that was 17 s and 1.1 GB for 16 MB.
        (b"a\n" * 4_000_000 + b"\r\n.\r\n", True, b"a\r\n" * 4_000_000 + b"\r\n"),
    ],
    ids=["empty lines", "bare LFs normalised"],
)
def test_a_large_message_is_read_in_a_few_pieces(
    stream: bytes, normalize: bool, expected: bytes
) -> None:
    # 8 MB of empty lines: line by line that was 4 million feeds (a minute for 25 MB, on the
    # event loop every session shares); here one feed per network read.
    pieces = [stream[i : i + 65536] for i in range(0, len(stream), 65536)]
    feeds = 0
    original = DataCollector.feed

    def counting(self: DataCollector, chunk: bytes) -> bool:
        nonlocal feeds
        feeds += 1
        return original(self, chunk)

    DataCollector.feed = counting  # type: ignore[method-assign]
    try:
        message, size, problem, rest = asyncio.run(read_data(pieces, True, 10**8, normalize))
    finally:
        DataCollector.feed = original  # type: ignore[method-assign]
    assert (message == expected, size, problem, rest) == (True, len(expected), None, b"")
    assert feeds <= len(pieces)


def test_a_client_dripping_data_is_not_searched_again_per_packet() -> None:
    # A few bytes per packet: a search from the start after every read costs the square of
    # the message size on the event loop every session shares.
    class Counting(bytearray):
        searched = 0

        def find(self, sub: object, start: int = 0, end: int | None = None) -> int:  # type: ignore[override]
            stop = len(self) if end is None else min(end, len(self))
            Counting.searched += max(0, stop - start)
            return super().find(sub, start, end)  # type: ignore[arg-type]

        def rfind(self, sub: object, start: int = 0, end: int | None = None) -> int:  # type: ignore[override]
            stop = len(self) if end is None else min(end, len(self))
            Counting.searched += max(0, stop - start)
            return super().rfind(sub, start, end)  # type: ignore[arg-type]

    pieces = [b"Subject: x\r\n\r\n", *[b"ab\r"] * 300, b"\n"] * 10 + [b".", b"\r", b"\n"]

    async def drip() -> bytes:
        lines = LineReader(Network(list(pieces)), 1000)  # type: ignore[arg-type]
        lines._buffer = Counting()
        collector = DataCollector(10**6, 1000, normalize=True)
        deadline = asyncio.get_running_loop().time() + 5
        await collector.read_from(lines, lambda: lines.next(deadline, extra=TRANSPARENCY_EXTRA))
        return collector.message()

    message = asyncio.run(drip())
    assert message.endswith(b"ab\r\nab\r\n")
    assert Counting.searched < 4 * len(b"".join(pieces))
