"""`gateway scan` hands the pipeline what the SMTP layer would: CRLF line ends, no mbox line."""

from __future__ import annotations

import tracemalloc

import pytest

from gateway.scan import to_wire_format


@pytest.mark.parametrize(
    ("raw", "wire"),
    [
        (b"a\nb", b"a\r\nb\r\n"),
        (b"a\n", b"a\r\n"),
        (b"", b""),
        (b"\n", b"\r\n"),
        (b"a\n\n", b"a\r\n\r\n"),
        (b"a\r\r\nb\r", b"a\r\n\r\nb\r\n"),
        (b"From x@y Mon Jan 1 00:00:00 2001\nA: b\n", b"A: b\r\n"),
    ],
)
def test_line_ends_become_crlf(raw: bytes, wire: bytes) -> None:
    assert to_wire_format(raw) == wire


def test_a_file_of_many_short_lines_costs_a_few_copies_of_itself() -> None:
    # A list of its lines cost ~90 bytes a line: 1 GB for 25 MB of empty lines.
    raw = b"Subject: x\n\n" + b"\n" * 2_000_000
    tracemalloc.start()
    try:
        to_wire_format(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * len(raw)
