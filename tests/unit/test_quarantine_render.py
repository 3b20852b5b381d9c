"""What the admin's terminal shows of hostile mail: readable, and never interpreted."""

from __future__ import annotations

import base64
import email

import pytest

from gateway.quarantine import render
from gateway.quarantine.store import CorruptEntry, Entry, QuarantineStore
from tests.support.quarantine import hold, make_message

ESC = "\x1b"


def test_safe_text_makes_control_and_bidi_characters_visible() -> None:
    hostile = f"ok{ESC}[2J\r\x07\u202ereversed\u200b é 日本"
    assert render.safe_text(hostile) == "ok\\x1b[2J\\x0d\\x07\\u202ereversed\\u200b é 日本"
    assert render.safe_text("a\nb\tc", keep_newlines=True) == "a\nb\tc"
    assert render.safe_text("a\nb") == "a\\x0ab"


def test_table_fits_the_width_and_escapes_every_cell(quarantine_store: QuarantineStore) -> None:
    data = make_message(
        subject=f"=?utf-8?b?{base64.b64encode(f'{ESC}]0;pwned{ESC}'.encode()).decode()}?="
    )
    qid = hold(quarantine_store, data=data, rcpt_tos=("bob@example.test", "eve@example.test"))
    entries: list[Entry | CorruptEntry] = [
        quarantine_store.get(qid),
        CorruptEntry("0123456789abcdef", "unreadable index row: score 'x' is not a number"),
    ]

    text = render.table(entries, width=120)

    assert ESC not in text
    header, row, corrupt = text.splitlines()
    assert header.split()[:3] == ["ID", "RECEIVED", "(UTC)"]
    assert row.startswith(qid) and "8.00" in row and "bob@example.test +1" in row
    assert "\\x1b]0;" in row
    assert "CORRUPT" in corrupt and "is not a number" in corrupt
    assert max(len(line) for line in text.splitlines()) <= 120


def test_show_explains_the_verdict_and_previews_plain_text(
    quarantine_store: QuarantineStore,
) -> None:
    data = make_message(body=f"Hello{ESC}[31m red\r\nsecond line\r\n")
    qid = hold(quarantine_store, data=data)

    text = render.show(quarantine_store.get(qid), data)

    assert ESC not in text
    assert f"Quarantine id   {qid}" in text
    assert "Verdict         quarantine: score 8 >= quarantine threshold 6" in text
    assert "HDR_MISSING_DATE    1.00  headers  no Date header" in text
    assert "GTUBE_QUARANTINE    0.00  gtube    quarantine test string at offset 120" in text
    assert "  Subject: Cheap pills" in text
    assert "Preview (text/plain" in text
    assert "  Hello\\x1b[31m red\n  second line" in text


def test_show_never_renders_html_or_opens_attachments(quarantine_store: QuarantineStore) -> None:
    secret = base64.b64encode(b"ATTACHMENT-CONTENT-NEVER-SHOWN").decode()
    data = (
        "From: a@bad.test\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        "<html><head><style>p{color:red}</style><script>alert('x')</script></head>"
        "<body><p>Pay <b>now</b></p><img src='http://tracker.test/p.gif'></body></html>\r\n"
        "--b\r\nContent-Type: application/pdf; name=invoice.pdf\r\n"
        "Content-Disposition: attachment; filename=invoice.pdf\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{secret}\r\n--b--\r\n"
    ).encode()
    qid = hold(quarantine_store, data=data)

    text = render.show(quarantine_store.get(qid), data)

    assert "Preview (text extracted from HTML, not rendered" in text
    assert "  Pay now" in text
    for never in ("<b>", "alert", "color:red", "tracker.test", "ATTACHMENT-CONTENT"):
        assert never not in text
    assert "invoice.pdf  application/pdf" in text


def test_show_of_an_entry_whose_file_is_gone(quarantine_store: QuarantineStore) -> None:
    qid = hold(quarantine_store)
    quarantine_store.message_path(qid).unlink()
    text = render.show(quarantine_store.get(qid), None)
    assert "Message file missing: message file missing" in text
    assert "HDR_MISSING_DATE" in text


def test_json_carries_every_symbol_with_its_reason(quarantine_store: QuarantineStore) -> None:
    qid = hold(quarantine_store)
    data = render.entry_json(quarantine_store.get(qid))
    assert data["id"] == qid and data["state"] == "held" and data["problem"] is None
    assert data["received_at"][10] == "T" and data["received_at"].endswith("Z")
    assert data["symbols"][0] == {
        "name": "HDR_MISSING_DATE",
        "score": 1.0,
        "reason": "no Date header",
        "check": "headers",
    }
    assert render.entry_json(CorruptEntry("abc", "bad")) == {
        "id": "abc",
        "corrupt": True,
        "problem": "bad",
    }


def test_into_a_pipe_the_subject_is_not_cut(quarantine_store: QuarantineStore) -> None:
    subject = "a subject long enough to be cut in any terminal " * 4
    qid = hold(quarantine_store, subject=subject.strip())
    entries: list[Entry | CorruptEntry] = [quarantine_store.get(qid)]
    assert render.table(entries, None).splitlines()[1].endswith(subject.strip())
    assert render.table(entries, 100).splitlines()[1].endswith("…")


def test_show_previews_text_in_a_hostile_charset(quarantine_store: QuarantineStore) -> None:
    data = make_message(
        subject="=?undefined?Q?x?=",
        extra_headers="MIME-Version: 1.0\r\nContent-Type: text/plain; charset=idna\r\n",
        body="pay the fee today\r\n",
    )
    qid = hold(quarantine_store, data=data)
    assert "  pay the fee today" in render.show(quarantine_store.get(qid), data)


def test_show_lists_an_8bit_text_attachment_in_a_hostile_charset(
    quarantine_store: QuarantineStore,
) -> None:
    # get_payload() (for the size) decoded it with charset idna, and raised.
    data = make_message(
        extra_headers='MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n',
        body="--b\r\nContent-Type: text/plain\r\n\r\npay the fee today\r\n"
        "--b\r\nContent-Type: text/plain; charset=idna; name=notes.txt\r\n\r\ncaf\xe9\r\n--b--\r\n",
    )
    qid = hold(quarantine_store, data=data)
    text = render.show(quarantine_store.get(qid), data)
    assert "notes.txt  text/plain  5 bytes" in text
    assert "  pay the fee today" in text


def test_show_of_mime_nested_too_deep_to_parse_still_shows_the_headers(
    quarantine_store: QuarantineStore,
) -> None:
    nested = "".join(
        f'Content-Type: multipart/mixed; boundary="b{n}"\r\n\r\n--b{n}\r\n' for n in range(1, 1200)
    )
    top = 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b0"\r\n'
    data = make_message(extra_headers=top, body="--b0\r\n" + nested + "deep\r\n")
    with pytest.raises(RecursionError):  # what show() met before
        email.message_from_bytes(data)
    qid = hold(quarantine_store, data=data)
    text = render.show(quarantine_store.get(qid), data)
    assert "  Subject: Cheap pills" in text
