"""Delivery Status Notifications (RFC 3464) for mail we accepted but could not deliver.

A DSN goes to the envelope sender, never to a null sender (that would loop), from the null
sender (RFC 5321 section 4.5.5), and honours the client's NOTIFY, RET, ENVID and ORCPT
parameters (RFC 3461). It is queued like any other message and relayed to the internal server.
"""

from __future__ import annotations

import contextlib
import email.message
import email.parser
import email.policy
import email.utils
import re
from collections.abc import Sequence
from email.mime.text import MIMEText
from typing import Literal

from gateway.errors import AlreadyQueued
from gateway.queue.spool import QueueEntry, RecipientState, Spool

Kind = Literal["failure", "delay"]

_STATUS_IN_REPLY = re.compile(r"^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b")
_EXPIRED_STATUS = "4.4.7"  # RFC 3463: delivery time expired
_POLICY = email.policy.SMTP.clone(max_line_length=998)
# For an SMTPUTF8 sender: its address goes into To: as UTF-8 (RFC 6532); an encoded word is not
# allowed inside an address (RFC 2047 section 5).
_POLICY_UTF8 = _POLICY.clone(utf8=True)


def wanted(recipient: RecipientState, kind: Kind) -> bool:
    """Whether the client asked (or, without NOTIFY, would expect) this kind of DSN."""
    notify = {n.upper() for n in recipient.notify}
    if not notify:
        # RFC 3461 4.1: no NOTIFY means FAILURE, and DELAY at our option: delay warnings are
        # only produced when the admin configured them, so send them then.
        return True
    if "NEVER" in notify:
        return False
    return kind.upper() in notify


def recipients_to_report(entry: QueueEntry, kind: Kind) -> list[RecipientState]:
    status = "failed" if kind == "failure" else "pending"
    return [r for r in entry.recipients if r.status == status and wanted(r, kind)]


def status_code(recipient: RecipientState, kind: Kind) -> str:
    """The RFC 3463 status: from the downstream's enhanced code, else a generic one."""
    if match := _STATUS_IN_REPLY.match(recipient.reply):
        code = match[1]
        if kind == "delay" and code.startswith("5"):
            return "4" + code[1:]
        return code
    if recipient.reply.startswith("expired"):
        return _EXPIRED_STATUS
    return "5.0.0" if kind == "failure" else "4.0.0"


def build_dsn(
    entry: QueueEntry,
    original: bytes,
    kind: Kind,
    recipients: Sequence[RecipientState],
    reporting_mta: str,
    remote_mta: str,
    now: float,
) -> bytes:
    """The multipart/report message (CRLF line ends, ready to queue)."""
    policy = _POLICY if entry.mail_from.isascii() else _POLICY_UTF8
    report = email.message.Message(policy=policy)
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = entry.mail_from
    report["Subject"] = (
        "Undelivered Mail Returned to Sender"
        if kind == "failure"
        else "Delayed Mail (still being retried)"
    )
    report["Date"] = email.utils.formatdate(now, usegmt=True)
    report["Message-ID"] = email.utils.make_msgid(domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834: no auto-replies to this
    report.set_type("multipart/report")
    report.set_param("report-type", "delivery-status")

    explanation = _explanation(entry, kind, recipients, reporting_mta)
    charset = "us-ascii" if explanation.isascii() else "utf-8"
    report.attach(MIMEText(explanation, "plain", charset, policy=_POLICY))

    status = email.message.Message(policy=_POLICY)
    status.set_type("message/delivery-status")
    blocks: list[email.message.Message | str] = [_per_message(entry, reporting_mta)]
    blocks += [_per_recipient(r, kind, remote_mta, now) for r in recipients]
    status.set_payload(blocks)
    report.attach(status)

    report.attach(_returned(original, full=entry.dsn_ret.upper() == "FULL"))
    return report.as_bytes(policy=policy)


def _explanation(
    entry: QueueEntry, kind: Kind, recipients: Sequence[RecipientState], reporting_mta: str
) -> str:
    if kind == "failure":
        opening = (
            f"This is the mail system at {reporting_mta}.\n\n"
            "Your message could not be delivered to one or more recipients.\n"
            "It is attached below. The reasons:\n"
        )
    else:
        opening = (
            f"This is the mail system at {reporting_mta}.\n\n"
            "Your message has not been delivered yet to the recipients below.\n"
            "We keep trying; you do not need to send it again.\n"
        )
    lines = [f"  <{r.address}>: {r.reply or 'no reason given'}" for r in recipients]
    return opening + "\n" + "\n".join(lines) + "\n"


def _fields(pairs: Sequence[tuple[str, str]]) -> email.message.Message:
    block = email.message.Message(policy=_POLICY)
    for name, value in pairs:
        block[name] = value
    return block


def _per_message(entry: QueueEntry, reporting_mta: str) -> email.message.Message:
    pairs = [("Reporting-MTA", f"dns; {reporting_mta}")]
    if entry.dsn_envid:
        pairs.append(("Original-Envelope-Id", entry.dsn_envid))
    pairs.append(("Arrival-Date", email.utils.formatdate(entry.received_at, usegmt=True)))
    return _fields(pairs)


def _per_recipient(
    recipient: RecipientState, kind: Kind, remote_mta: str, now: float
) -> email.message.Message:
    address_type = "rfc822" if recipient.address.isascii() else "utf-8"  # RFC 6533
    pairs: list[tuple[str, str]] = []
    if recipient.orcpt:
        pairs.append(("Original-Recipient", recipient.orcpt))
    pairs += [
        ("Final-Recipient", f"{address_type}; {recipient.address}"),
        ("Action", "failed" if kind == "failure" else "delayed"),
        ("Status", status_code(recipient, kind)),
        ("Remote-MTA", f"dns; {remote_mta}"),
    ]
    if _STATUS_IN_REPLY.match(recipient.reply):
        pairs.append(("Diagnostic-Code", f"smtp; {recipient.reply}"))
    elif recipient.reply:
        pairs.append(("X-Gateway-Diagnostic", recipient.reply))
    pairs.append(("Last-Attempt-Date", email.utils.formatdate(now, usegmt=True)))
    return _fields(pairs)


def _returned(original: bytes, full: bool) -> email.message.Message:
    """RET=FULL: the whole message; otherwise only its headers (RFC 3462 text/rfc822-headers)."""
    if full:
        part = email.message.Message(policy=_POLICY)
        part.set_type("message/rfc822")
        part.set_payload(
            [email.parser.BytesParser(policy=email.policy.compat32).parsebytes(original)]
        )
        return part
    headers, _, _ = original.replace(b"\r\n", b"\n").partition(b"\n\n")
    part = email.message.Message(policy=_POLICY)
    part.set_type("text/rfc822-headers")
    part.set_payload(headers.decode("utf-8", "replace") + "\n")
    return part


class SpoolBouncer:
    """Queues DSNs for the delivery workers (the Bouncer the DeliveryService calls)."""

    def __init__(self, spool: Spool, reporting_mta: str, remote_mta: str) -> None:
        self.spool = spool
        self.reporting_mta = reporting_mta
        self.remote_mta = remote_mta

    def notify(self, entry: QueueEntry, original: bytes, kind: Kind, now: float) -> str | None:
        """Queue a DSN if anyone should get one; returns its queue id. Blocking (disk)."""
        if not entry.mail_from:
            return None  # never bounce a bounce
        recipients = recipients_to_report(entry, kind)
        if not recipients:
            return None
        dsn = build_dsn(entry, original, kind, recipients, self.reporting_mta, self.remote_mta, now)
        # One id per message and kind: after a crash between queueing the DSN and recording
        # that it was queued, the retry finds it in the queue instead of sending a second one.
        dsn_id = f"{entry.id}-{kind}"
        with contextlib.suppress(AlreadyQueued):
            self.spool.enqueue(dsn_id, "", [entry.mail_from], dsn, now=now)
        return dsn_id


def mail_dsn_options(options: Sequence[str]) -> tuple[str, str]:
    """RET and ENVID from MAIL FROM parameters (RFC 3461 4.3, 4.4): ("FULL"|"HDRS"|"", envid)."""
    params = _params(options)
    ret = params.get("RET", "").upper()
    return (ret if ret in ("FULL", "HDRS") else ""), _xtext_decode(params.get("ENVID", ""))


def rcpt_dsn_options(options: Sequence[str]) -> tuple[tuple[str, ...], str]:
    """NOTIFY and ORCPT from RCPT TO parameters (RFC 3461 4.1, 4.2)."""
    params = _params(options)
    notify = tuple(n.strip().upper() for n in params.get("NOTIFY", "").split(",") if n.strip())
    orcpt = params.get("ORCPT", "")
    address_type, _, address = orcpt.partition(";")
    return notify, (f"{address_type};{_xtext_decode(address)}" if address else "")


def _params(options: Sequence[str]) -> dict[str, str]:
    pairs = (option.partition("=") for option in options)
    return {name.upper(): value for name, _, value in pairs}


def _xtext_decode(text: str) -> str:
    """RFC 3461 section 4: "+HH" encodes one byte."""
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m[1], 16)), text)
