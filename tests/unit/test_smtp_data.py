"""DataCollector: end of data, transparency, bare line endings and limits, chunk by chunk."""

from __future__ import annotations

import random
import re

import pytest

from gateway.smtp.data import DataCollector, DataProblem


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


def test_fragments_of_an_overlong_line_keep_the_line_start_straight() -> None:
    collector = DataCollector(10_000, 1000, normalize=False)
    collector.fragment(b"x" * 1500 + b"\r")  # the stream buffer ended between CR and LF
    assert not collector.feed(b"\n")
    assert not collector.feed(b".x\r\n")
    collector.fragment(b"y" * 1500)
    assert not collector.feed(b".\r\n")  # the tail of the long line, not an end
    assert collector.feed(b".\r\n")
    assert collector.problem is DataProblem.LINE_TOO_LONG


PIECES = [b"text", b"x" * 400, b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b" ", b"\xe9"]


def test_a_clean_block_is_taken_whole_exactly_as_line_by_line() -> None:
    # Random DATA streams, 1000 lines limit: whenever feed_block takes a block it must agree
    # with feeding it line by line; when it declines it must have taken nothing.
    generator = random.Random(7)
    taken = declined = 0
    for _ in range(3000):
        body = b"".join(generator.choice(PIECES) for _ in range(generator.randrange(1, 12)))
        stream = b"a" + body + b"\r\n.\r\n"
        block = stream[: stream.index(b"\r\n.\r\n") + 5]
        fast = DataCollector(10_000, 1000, normalize=False)
        if not fast.feed_block(block):
            declined += 1
            assert (fast.message(), fast.size, fast.problem) == (b"", 0, None)
            continue
        taken += 1
        slow, rest = collect(block)
        assert rest == b"" and slow.problem is None
        assert (fast.message(), fast.size) == (slow.message(), slow.size)
    assert taken > 500 and declined > 500


@pytest.mark.parametrize(
    "block",
    [
        b"a\nb\r\n.\r\n",  # bare LF
        b"a\rb\r\n.\r\n",  # bare CR
        b"x" * 999 + b"\r\n.\r\n",  # a line over the limit with its CRLF
        b"x" * 600 + b"\r\n" + b"y" * 600 + b"\r\n.\r\n",  # over the size limit
    ],
)
def test_a_block_feed_would_object_to_is_declined(block: bytes) -> None:
    collector = DataCollector(1000, 1000, normalize=True)
    assert not collector.feed_block(block)
    assert (collector.message(), collector.size) == (b"", 0)
