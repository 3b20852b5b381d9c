"""The parser reads header sections as RFC 5322 does, obsolete syntax included, and notes what
other readers may read otherwise (gateway.content); the mime check turns that into symbols."""

from __future__ import annotations

import asyncio

import pytest

from gateway.checks.mime import MimeCheck
from gateway.content import (
    AmbiguousField,
    ObsoleteHeaderSyntax,
    boundary_readings,
    parse_bytes,
    parse_headers,
    part_filenames,
)
from tests.support.attachments_mail import transaction


def _symbols(raw: bytes) -> dict[str, str]:
    result = asyncio.run(MimeCheck().run(transaction(raw)))
    return {s.name: s.reason for s in result.symbols}


@pytest.mark.parametrize("parse", [parse_bytes, parse_headers])
def test_white_space_before_the_colon_is_still_a_header(parse: object) -> None:
    raw = (
        b"X-Pad : x\r\nFrom\t: CEO <ceo@example.test>\r\nFrom: a@b.test\r\nSubject: hi\r\n"
        b"\r\nbody\r\n"
    )
    message = parse(raw)  # type: ignore[operator]
    assert message.keys() == ["X-Pad", "From", "From", "Subject"]
    assert message.get_unixfrom() is None
    assert [type(d) for d in message.defects] == [ObsoleteHeaderSyntax, ObsoleteHeaderSyntax]


def test_an_mbox_from_line_stays_an_envelope_line() -> None:
    message = parse_bytes(b"From alice@b.test Tue Dec  8 04:00:00 2026\r\nFrom: a@b.test\r\n\r\nx")
    assert message.get_unixfrom() == "From alice@b.test Tue Dec  8 04:00:00 2026"
    assert message.get_all("From") == ["a@b.test"]


def test_a_part_header_in_obsolete_syntax_keeps_its_part() -> None:
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type : text/html\r\n'
        b'Content-Disposition : attachment; filename="a.html"\r\n\r\n<p>x</p>\r\n--b--\r\n'
    )
    [part] = parse_bytes(raw).get_payload()
    assert (part.get_content_type(), part.get_filename()) == ("text/html", "a.html")


def test_a_repeated_field_with_the_same_value_is_not_ambiguous() -> None:
    raw = b"Content-Type: text/plain\r\ncontent-type:  TEXT/plain\r\n\r\nx"
    assert not any(isinstance(d, AmbiguousField) for d in parse_bytes(raw).defects)
    assert _symbols(raw) == {}


def test_every_file_name_reading_is_listed() -> None:
    raw = (
        b'Content-Type: application/pdf; name="a.exe"\r\n'
        b"Content-Disposition: attachment; filename=\"a.pdf\"; filename*=utf-8''%C3%A4.pdf\r\n\r\nx"
    )
    message = parse_bytes(raw)
    assert part_filenames(message) == ["a.pdf", "\u00e4.pdf", "a.exe"]
    reason = _symbols(raw)["MIME_AMBIGUOUS"]
    assert "file name read as 'a.pdf' and '\u00e4.pdf' and 'a.exe'" in reason


def test_rfc2231_continuations_are_one_reading() -> None:
    raw = b'Content-Disposition: attachment; filename*0="invo"; filename*1="ice.exe"\r\n\r\nx'
    assert part_filenames(parse_bytes(raw)) == ["invoice.exe"]


def test_a_boundary_given_twice_is_two_readings_even_when_the_first_is_never_found() -> None:
    raw = (
        b'Content-Type: multipart/mixed; boundary="A"; boundary="B"\r\n\r\n'
        b"--B\r\n\r\nx\r\n--B--\r\n"
    )
    message = parse_bytes(raw)
    assert not message.is_multipart()  # the email package took "A" and found no part
    assert boundary_readings(message) == ["A", "B"]
    reason = _symbols(raw)["MIME_AMBIGUOUS"]
    assert "boundary read as 'A' and 'B'" in reason
    assert "multipart whose boundary never appears" in reason


def test_obsolete_syntax_alone_is_scored_not_held() -> None:
    assert _symbols(b"Subject : hi\r\n\r\nx") == {
        "MIME_OBSOLETE_HEADER": "message: white space after 'Subject'"
    }


def test_a_long_header_line_without_colon_is_read_in_linear_time() -> None:
    raw = b"From: a@b.test\r\n" + b"X" * 2_000_000 + b" " * 1000 + b"\r\n\r\nbody"
    assert parse_bytes(raw).get_all("From") == ["a@b.test"]
