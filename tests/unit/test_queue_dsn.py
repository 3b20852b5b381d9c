"""DSN construction (RFC 3464), parsed back with the email package; NOTIFY/RET/ENVID/ORCPT."""

from __future__ import annotations

import email
import email.message
import email.policy
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.content import MAX_HEADER_BLOCK_BYTES
from gateway.queue.dsn import (
    Kind,
    SpoolBouncer,
    build_dsn,
    mail_dsn_options,
    mail_parameters,
    rcpt_dsn_options,
    rcpt_parameters,
    recipients_to_report,
    status_code,
    xtext_encode,
)
from gateway.queue.spool import QueueEntry, RecipientState, Spool

ORIGINAL = b"From: a@example.org\r\nSubject: quarterly report\r\n\r\nthe body text\r\n"
NOW = 1_800_000_000.0


def entry(
    *recipients: RecipientState, mail_from: str = "a@example.org", ret: str = ""
) -> QueueEntry:
    return QueueEntry(
        id="m1",
        mail_from=mail_from,
        recipients=recipients,
        received_at=NOW - 100,
        next_attempt_at=NOW,
        dsn_ret=ret,
        dsn_envid="ENV-42",
        sender_authenticated=True,  # SPF or aligned DKIM passed: it may get any notice
    )


def parse(dsn: bytes) -> email.message.Message:
    return email.message_from_bytes(dsn, policy=email.policy.compat32)


def test_failure_dsn_structure_parses_back() -> None:
    failed = RecipientState(
        "b@example.test", "failed", "550 5.1.1 No such user", orcpt="rfc822;B@example.test"
    )
    delivered = RecipientState("c@example.test", "delivered", "250 OK")
    queued = entry(failed, delivered)
    dsn = build_dsn(queued, ORIGINAL, "failure", recipients_to_report(queued, "failure"),
                    "mx.gateway.test", "relay.internal", NOW)  # fmt: skip
    assert b"\r\n" in dsn and b"\n" not in dsn.replace(b"\r\n", b"")
    message = parse(dsn)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert message["To"] == "a@example.org"
    assert message["Auto-Submitted"] == "auto-replied"
    text, status, returned = message.get_payload()
    assert "550 5.1.1 No such user" in text.get_payload()
    assert status.get_content_type() == "message/delivery-status"
    per_message, *per_recipient = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mx.gateway.test"
    assert per_message["Original-Envelope-Id"] == "ENV-42"
    assert len(per_recipient) == 1  # the delivered recipient is not reported
    [rcpt] = per_recipient
    assert rcpt["Final-Recipient"] == "rfc822; b@example.test"
    assert rcpt["Original-Recipient"] == "rfc822;B@example.test"
    assert (rcpt["Action"], rcpt["Status"]) == ("failed", "5.1.1")
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user"
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "quarterly report" in returned.get_payload()
    assert "the body text" not in dsn.decode()  # without RET=FULL only headers come back


def test_ret_full_returns_the_whole_message() -> None:
    queued = entry(RecipientState("b@example.test", "failed", "554 5.6.0 no"), ret="FULL")
    dsn = build_dsn(queued, ORIGINAL, "failure", queued.recipients, "mx", "relay", NOW)
    returned = parse(dsn).get_payload()[2]
    assert returned.get_content_type() == "message/rfc822"
    assert returned.get_payload()[0]["Subject"] == "quarterly report"
    assert b"the body text" in dsn


def test_ret_full_of_a_message_past_the_parse_bounds_returns_its_headers() -> None:
    # 600,000 tiny parts: parsing them all to return them took 27 s and 470 MB.
    part = b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    original = (
        b'From: a@example.org\r\nSubject: parts\r\nContent-Type: multipart/mixed; boundary="b"'
        b"\r\n\r\n" + part * 10_000
    )
    queued = entry(RecipientState("b@example.test", "failed", "554 5.6.0 no"), ret="FULL")
    dsn = build_dsn(queued, original, "failure", queued.recipients, "mx", "relay", NOW)
    returned = parse(dsn).get_payload()[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Subject: parts" in returned.get_payload()
    assert len(dsn) < 10_000


def test_the_returned_headers_of_a_message_without_an_empty_line_are_bounded() -> None:
    # No empty line: by RFC 5322 it is all header, and all 3 MB of it came back in the DSN.
    original = b"From: a@example.org\r\nSubject: no body\r\n" + (b"x" * 78 + b"\r\n") * 40_000
    queued = entry(RecipientState("b@example.test", "failed", "554 5.6.0 no"))
    dsn = build_dsn(queued, original, "failure", queued.recipients, "mx", "relay", NOW)
    returned = parse(dsn).get_payload()[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Subject: no body" in returned.get_payload()
    assert len(original) > 3_000_000 and len(dsn) < MAX_HEADER_BLOCK_BYTES + 10_000


@pytest.mark.parametrize("subject", [b"caf\xc3\xa9", b"caf\xe9"], ids=["utf-8", "latin-1"])
def test_a_message_with_8bit_headers_gets_its_notice_with_the_headers_as_they_came(
    subject: bytes,
) -> None:
    # The returned headers were decoded as UTF-8 with U+FFFD for the rest, and the generator
    # then raised on any non-ASCII character: the sender never got the notice.
    original = b"From: a@example.org\r\nSubject: " + subject + b"\r\n\r\nbody\r\n"
    queued = entry(RecipientState("b@example.test", "failed", "550 5.1.1 no"))
    dsn = build_dsn(queued, original, "failure", queued.recipients, "mx", "relay", NOW)
    assert b"\r\nSubject: " + subject + b"\r\n" in dsn
    returned = parse(dsn).get_payload()[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert returned["Content-Transfer-Encoding"] == "8bit"


@pytest.mark.parametrize(
    ("reply", "kind", "expected"),
    [
        ("550 5.1.1 No such user", "failure", "5.1.1"),
        ("550 no enhanced code", "failure", "5.0.0"),
        ("expired in the queue after 9 attempts; last reply: 451 x", "failure", "4.4.7"),
        ("452 4.2.2 Mailbox full", "delay", "4.2.2"),
        ("connection to 127.0.0.1:1 failed: refused", "delay", "4.0.0"),
    ],
)
def test_status_codes(reply: str, kind: str, expected: str) -> None:
    assert status_code(RecipientState("b@x", "failed", reply), kind) == expected  # type: ignore[arg-type]


def test_notify_decides_who_is_reported() -> None:
    queued = entry(
        RecipientState("default@x", "failed", "550 5.1.1 x"),
        RecipientState("never@x", "failed", "550 5.1.1 x", notify=("NEVER",)),
        RecipientState("success@x", "failed", "550 5.1.1 x", notify=("SUCCESS",)),
        RecipientState("delay@x", "pending", "451 4.3.0 x", notify=("DELAY", "FAILURE")),
        RecipientState("quiet@x", "pending", "451 4.3.0 x"),
    )
    assert [r.address for r in recipients_to_report(queued, "failure")] == ["default@x"]
    assert [r.address for r in recipients_to_report(queued, "delay")] == ["delay@x", "quiet@x"]


def test_bouncer_queues_from_null_sender_and_never_bounces_a_bounce(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "queue", min_free_bytes=0)
    bouncer = SpoolBouncer(spool, "mx.gateway.test", "relay.internal")
    failed = RecipientState("b@example.test", "failed", "550 5.1.1 No such user")
    dsn_id = bouncer.notify(entry(failed), ORIGINAL, "failure", NOW)
    assert dsn_id is not None and spool.ids() == [dsn_id]
    queued = spool.load(dsn_id)
    assert queued.mail_from == "" and [r.address for r in queued.recipients] == ["a@example.org"]
    assert bouncer.notify(entry(failed, mail_from=""), ORIGINAL, "failure", NOW) is None
    never = RecipientState("b@example.test", "failed", "550 5.1.1 x", notify=("NEVER",))
    assert bouncer.notify(entry(never), ORIGINAL, "failure", NOW) is None
    assert spool.ids() == [dsn_id]


def test_dsn_parameters_are_read_from_smtp_options() -> None:
    assert mail_dsn_options(["SIZE=100", "RET=hdrs", "ENVID=QQ+2B314"]) == ("HDRS", "QQ+314")
    assert mail_dsn_options(["RET=BOGUS"]) == ("", "")
    notify, orcpt = rcpt_dsn_options(["NOTIFY=SUCCESS,delay", "ORCPT=rfc822;b+2Bx@example.test"])
    assert notify == ("SUCCESS", "DELAY") and orcpt == "rfc822;b+x@example.test"
    assert rcpt_dsn_options([]) == ((), "")


def test_dsn_to_an_smtputf8_sender_carries_the_address_as_utf8() -> None:
    failed = RecipientState("b@example.test", "failed", "550 5.1.1 No such user")
    queued = entry(failed, mail_from="jörg@exämple.de")
    dsn = build_dsn(queued, ORIGINAL, "failure", recipients_to_report(queued, "failure"),
                    "mx.gateway.test", "relay.internal", NOW)  # fmt: skip
    assert "To: jörg@exämple.de\r\n".encode() in dsn
    assert b"=?utf-8?" not in dsn.split(b"\r\n\r\n", 1)[0]


def test_a_bounce_retried_after_a_crash_is_queued_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "queue", min_free_bytes=0)
    bouncer = SpoolBouncer(spool, "mx.gateway.test", "relay.internal")
    failed = RecipientState("b@example.test", "failed", "550 5.1.1 No such user")
    first = bouncer.notify(entry(failed), ORIGINAL, "failure", NOW)
    # The crash came before the message was moved to failed/: the same bounce is asked again.
    again = bouncer.notify(entry(failed), ORIGINAL, "failure", NOW + 60)
    assert first == again and spool.ids() == [first]


def test_dsn_parameters_are_relayed_as_the_client_gave_them() -> None:
    # What the session stored (decoded) goes back on the wire in xtext: a round trip.
    options = ["RET=HDRS", "ENVID=QQ+2B314+3D"]
    ret, envid = mail_dsn_options(options)
    queued = QueueEntry("m1", "a@x", (), NOW, NOW, dsn_ret=ret, dsn_envid=envid)
    assert mail_parameters(queued) == tuple(options)
    notify, orcpt = rcpt_dsn_options(["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;b+2Bx@example.test"])
    recipient = RecipientState("b@example.test", notify=notify, orcpt=orcpt)
    assert rcpt_parameters(recipient) == (
        "NOTIFY=SUCCESS,DELAY",
        "ORCPT=rfc822;b+2Bx@example.test",
    )
    assert rcpt_parameters(RecipientState("b@example.test")) == ()
    assert mail_parameters(entry(ret="")) == ("ENVID=ENV-42",)
    assert xtext_encode("a b+c=d\u00e9") == "a+20b+2Bc+3Dd+C3+A9"


def test_utf8_orcpt_is_relayed_as_utf8_addr_xtext() -> None:
    # RFC 6533: raw UTF-8 would need SMTPUTF8 downstream; "\\x{HEX}" never does.
    raw = RecipientState("b@example.test", orcpt="utf-8;j\u00f6rg+1@ex\\x{E4}mple.de")
    assert rcpt_parameters(raw) == ("ORCPT=utf-8;j\\x{F6}rg\\x{2B}1@ex\\x{E4}mple.de",)


def test_relayed_notice_only_for_notify_success() -> None:
    queued = entry(
        RecipientState("success@x", "delivered", "250 2.0.0 ok", notify=("SUCCESS",)),
        RecipientState("both@x", "delivered", "250 ok", notify=("SUCCESS", "FAILURE")),
        RecipientState("default@x", "delivered", "250 2.0.0 ok"),
        RecipientState("failure@x", "delivered", "250 2.0.0 ok", notify=("FAILURE",)),
        RecipientState("never@x", "delivered", "250 2.0.0 ok", notify=("NEVER",)),
        RecipientState("pending@x", "pending", "451 4.3.0 x", notify=("SUCCESS",)),
    )
    reported = recipients_to_report(queued, "relayed")
    assert [r.address for r in reported] == ["success@x", "both@x"]
    assert [r.address for r in recipients_to_report(queued, "relayed", among={1})] == ["both@x"]
    assert [status_code(r, "relayed") for r in reported] == ["2.0.0", "2.0.0"]


def test_relayed_notice_structure_and_ids(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "queue", min_free_bytes=0)
    bouncer = SpoolBouncer(spool, "mx.gateway.test", "relay.internal")
    success = RecipientState(
        "b@example.test", "delivered", "250 2.0.0 ok", ("SUCCESS",), "rfc822;B@example.test"
    )
    queued = entry(success, ret="FULL")
    assert bouncer.notify(queued, ORIGINAL, "relayed", NOW) == "m1-relayed"
    again = bouncer.notify(queued, ORIGINAL, "relayed", NOW)  # asked twice: queued once
    later = bouncer.notify(replace(queued, attempts=3), ORIGINAL, "relayed", NOW)
    assert again == "m1-relayed" and later == "m1-relayed-3"
    assert spool.ids() == ["m1-relayed", "m1-relayed-3"]
    message = parse(spool.read_data("m1-relayed"))
    assert message["Subject"] == "Successful Mail Delivery Report"
    _, status, returned = message.get_payload()
    per_message, rcpt = status.get_payload()
    assert per_message["Original-Envelope-Id"] == "ENV-42"
    assert rcpt["Original-Recipient"] == "rfc822;B@example.test"
    assert (rcpt["Action"], rcpt["Status"]) == ("relayed", "2.0.0")
    assert returned.get_content_type() == "text/rfc822-headers"  # even with RET=FULL
    assert bouncer.notify(entry(success, mail_from=""), ORIGINAL, "relayed", NOW) is None


@pytest.mark.parametrize("kind", ["relayed", "delay"])
def test_an_unauthenticated_sender_gets_no_success_or_delay_notice(
    tmp_path: Path, kind: Kind
) -> None:
    """No SPF pass, no aligned DKIM: the sender may be forged (backscatter, and the notice
    would carry our verdict to whoever forged it). Failures still go, as RFC 5321 6.1 wants."""
    spool = Spool(tmp_path / "queue", min_free_bytes=0)
    bouncer = SpoolBouncer(spool, "mx.gateway.test", "relay.internal")
    status = {"relayed": "delivered", "delay": "pending"}[kind]
    recipient = RecipientState("b@example.test", status, "451 4.2.0 later", ("SUCCESS", "DELAY"))
    forged = replace(entry(recipient), sender_authenticated=False)
    assert bouncer.notify(forged, ORIGINAL, kind, NOW) is None
    assert bouncer.notify(entry(recipient), ORIGINAL, kind, NOW) == f"m1-{kind}"
    failed = RecipientState("c@example.test", "failed", "550 5.1.1 no such user")
    assert bouncer.notify(replace(forged, recipients=(failed,)), ORIGINAL, "failure", NOW)
    assert sorted(spool.ids()) == sorted(["m1-failure", f"m1-{kind}"])
