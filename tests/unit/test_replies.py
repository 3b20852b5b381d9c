"""Every reply carries a code and an RFC 3463 enhanced status code of the same class."""

from __future__ import annotations

import re

import pytest

from gateway.smtp import replies

ENHANCED = re.compile(r"([245])\d\d ([245])\.\d{1,3}\.\d{1,3} \S")


def every_reply() -> list[str]:
    constants = [v for k, v in vars(replies).items() if k.isupper() and isinstance(v, str)]
    made = [
        replies.syntax("X"),
        replies.too_big(1),
        replies.relay_denied("why"),
        replies.sender_ok(),
        replies.recipient_ok(),
        replies.queued("id"),
        replies.held("id"),
        replies.rejected("id", "why"),
        replies.refused("id", "why"),
        replies.refused_at_connect("id", "why"),
        replies.deferred("id", "why"),
        replies.deferred_at_connect("id", "why"),
        replies.internal_error("id"),
        replies.internal_error_closing("id"),
        replies.storage_error("id"),
    ]
    return constants + made


@pytest.mark.parametrize("reply", every_reply())
def test_reply_has_an_enhanced_status_code_of_its_class(reply: str) -> None:
    match = ENHANCED.match(reply)
    if reply.startswith("354"):  # the DATA go-ahead is not a completion reply (RFC 2034)
        return
    assert match is not None, reply
    assert match.group(1) == match.group(2), reply


def test_the_dot_line_hint_is_the_only_reply_without_enhanced_code() -> None:
    assert [r for r in every_reply() if not ENHANCED.match(r)] == [replies.START_MAIL]


def test_internal_errors_name_the_transaction() -> None:
    assert replies.internal_error("abc123") == "451 4.3.0 Internal error, transaction abc123"


def test_configured_replies_cannot_inject_a_second_reply() -> None:
    reply = replies.configured("554 5.7.1 bad {reason}\r\n250 2.0.0 fake".replace("{reason}", "x"))
    assert "\r" not in reply and "\n" not in reply
    assert reply.startswith("554 5.7.1 bad x??250")


def test_ehlo_reply_is_multiline_with_a_final_space() -> None:
    assert replies.ehlo("mx.test", ["SIZE 10", "PIPELINING"]) == [
        "250-mx.test",
        "250-SIZE 10",
        "250 PIPELINING",
    ]
