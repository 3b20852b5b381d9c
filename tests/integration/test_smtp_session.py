"""A real smtplib client against the real front end: the three outcomes admins test with."""

from __future__ import annotations

import json
import logging
import smtplib

import pytest

from gateway.checks.gtube import GTUBE_QUARANTINE, GTUBE_REJECT
from gateway.smtp import replies
from tests.support.gateway_fixture import RunningGateway


def message(body: bytes = b"Hello.\r\n", subject: str = "test") -> bytes:
    return (
        b"From: Alice <alice@sender.test>\r\n"
        b"To: Bob <bob@example.test>\r\n"
        b"Subject: " + subject.encode() + b"\r\n"
        b"Date: Sun, 29 Nov 2026 02:45:00 +0000\r\n"
        b"Message-ID: <1@sender.test>\r\n"
        b"\r\n" + body
    )


def reply_text(reply: str) -> bytes:
    return reply[4:].encode()


def test_clean_message_is_queued_with_our_headers(gateway: RunningGateway) -> None:
    with gateway.client() as smtp:
        smtp.ehlo()
        smtp.mail("alice@sender.test")
        smtp.rcpt("bob@example.test")
        code, text = smtp.data(message())
    assert code == 250
    [msg_id] = gateway.spool.ids()
    assert text == reply_text(replies.queued(msg_id))
    assert gateway.recorder.notified == [msg_id]
    entry = gateway.spool.load(msg_id)
    assert entry.mail_from == "alice@sender.test"
    assert [r.address for r in entry.recipients] == ["bob@example.test"]
    stored = gateway.spool.read_data(msg_id)
    head, _, body = stored.partition(b"\r\n\r\n")
    assert body == b"Hello.\r\n"
    assert head.startswith(
        b"Authentication-Results: mx.gateway.test;\r\n\tnone\r\n"
        b"X-Spam-Score: 0.00\r\nX-Spam-Status: No, score=0.00 required=6.00 "
    )
    assert (
        b"Received: from client.test ([127.0.0.1])\r\n\tby mx.gateway.test with ESMTP id "
        + msg_id.encode()
        + b"\r\n\tfor <bob@example.test>; "
        in head
    )


def test_gtube_is_rejected_with_the_configured_reply(gateway: RunningGateway) -> None:
    with gateway.client() as smtp:
        smtp.ehlo()
        smtp.mail("alice@sender.test")
        smtp.rcpt("bob@example.test")
        code, text = smtp.data(message(GTUBE_REJECT + b"\r\n"))
    assert (code, text) == (554, b"5.7.1 Message rejected: GTUBE test string")
    assert gateway.spool.ids() == []


def test_gtube_quarantine_is_held_not_queued(gateway: RunningGateway) -> None:
    with gateway.client() as smtp:
        smtp.ehlo()
        smtp.mail("alice@sender.test")
        smtp.rcpt("bob@example.test")
        code, text = smtp.data(message(GTUBE_QUARANTINE + b"\r\n"))
    assert code == 250
    assert text.startswith(b"2.0.0 Ok: held as ")
    held_id = text.decode().rpartition(" ")[2]
    assert text == reply_text(replies.held(held_id))
    assert gateway.spool.ids() == []
    assert gateway.recorder.notified == []
    stored = gateway.quarantine.read_message(held_id)
    assert b"X-Spam-Status: Yes, score=0.00 required=6.00 symbols=GTUBE_QUARANTINE\r\n" in stored


def test_one_log_line_per_transaction(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.transaction")
    with gateway.client() as smtp:
        smtp.ehlo()
        smtp.sendmail("alice@sender.test", ["bob@example.test"], message())
        with pytest.raises(smtplib.SMTPDataError):
            smtp.sendmail("alice@sender.test", ["bob@example.test"], message(GTUBE_REJECT))
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail("alice@sender.test", ["eve@elsewhere.test"], message())
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.transaction"]
    assert [line["outcome"] for line in lines] == ["accept", "reject", "reject"]
    accepted, rejected, refused = lines
    assert accepted["queue_id"] == accepted["id"]
    assert accepted["client_ip"] == "127.0.0.1"
    assert accepted["helo"] == "client.test"
    assert accepted["sender"] == "alice@sender.test"
    assert accepted["recipients"] == ["bob@example.test"]
    assert accepted["reply"] == replies.queued(accepted["id"])
    assert set(accepted["check_times_s"]) == {"headers", "gtube"}
    assert rejected["symbols"] == [
        {
            "name": "GTUBE_REJECT",
            "score": 0.0,
            "reason": "GTUBE reject test string found",
            "check": "gtube",
        }
    ]
    assert rejected["reply"].startswith("554 5.7.1")
    assert refused["reply"] == refused["refused_recipients"][0]["reply"]
    assert refused["refused_recipients"] == [
        {
            "rcpt": "eve@elsewhere.test",
            "reply": replies.relay_denied("we do not relay for this domain"),
        }
    ]
    assert len({accepted["id"], rejected["id"], refused["id"]}) == 3


def test_forged_authentication_results_naming_us_are_removed(gateway: RunningGateway) -> None:
    forged = b"Authentication-Results: mx.gateway.test; dmarc=pass header.from=bank.test\r\n"
    theirs = b"Authentication-Results: mx.sender.test; spf=pass\r\n"
    with gateway.client() as smtp:
        smtp.sendmail("alice@sender.test", ["bob@example.test"], forged + theirs + message())
    [msg_id] = gateway.spool.ids()
    stored = gateway.spool.read_data(msg_id)
    assert b"dmarc=pass" not in stored
    assert theirs in stored
    assert stored.count(b"Authentication-Results: mx.gateway.test;") == 1
