"""Removing the fields only the gateway writes, byte for byte around them."""

from __future__ import annotations

from gateway.ourfields import remove_our_fields

ID = "mx.gateway.test"


def test_lf_line_ends_folding_and_a_body_that_looks_like_a_header() -> None:
    raw = b"X-Spam-Flag: YES\nX-Spam-Report:\n * 1.0 X\nSubject: hi\n\nX-Spam-Score: 9\n"
    assert remove_our_fields(raw, ID) == b"Subject: hi\n\nX-Spam-Score: 9\n"


def test_a_message_without_an_empty_line_is_all_header() -> None:
    assert remove_our_fields(b"Subject: a\r\nx-spam-level: ***", ID) == b"Subject: a\r\n"


def test_nothing_to_remove_returns_the_same_bytes() -> None:
    raw = b"X-Spamd-Result: ok\r\nAuthentication-Results: other.test; spf=pass\r\n\r\nbody"
    assert remove_our_fields(raw, ID) == raw


def test_below_our_stamp_keeps_ours_and_removes_the_senders() -> None:
    ours = (
        b"Authentication-Results: mx.gateway.test; none\r\nX-Spam-Score: 1.00\r\n"
        b"Received: from a ([127.0.0.1])\r\n\tby mx.gateway.test id x; date\r\n"
    )
    theirs = b"X-Spam-Score: -100\r\nReceived: from b\r\nAuthentication-Results: MX.gateway.test.;"
    rest = b" dkim=pass\r\nSubject: s\r\n\r\nbody\r\n"
    assert remove_our_fields(ours + theirs + rest, ID, below_our_stamp=True) == (
        ours + b"Received: from b\r\nSubject: s\r\n\r\nbody\r\n"
    )
    # Without any Received field nothing is taken for ours.
    assert remove_our_fields(b"X-Spam-Score: 1\r\n\r\nb", ID, below_our_stamp=True) == b"\r\nb"
