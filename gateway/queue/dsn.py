"""Delivery Status Notifications (RFC 3464) for mail we accepted but could not deliver, and
"relayed" notices for mail handed to an internal server that does not offer DSN.

A DSN goes to the envelope sender, never to a null sender (that would loop), from the null
sender (RFC 5321 section 4.5.5), and honours the client's NOTIFY, RET, ENVID and ORCPT
parameters (RFC 3461). It is queued like any other message and relayed to the internal server.
When the internal server offers DSN, those parameters are relayed with the message (wire form
built here) and success notices become its job (RFC 3461 section 6.2).
"""

from __future__ import annotations

import contextlib
import email.message
import email.policy
import email.utils
import re
from collections.abc import Collection, Sequence
from email.mime.text import MIMEText
from typing import Literal

from gateway.content import header_block, parse_bytes, was_cut
from gateway.errors import AlreadyQueued
from gateway.ourfields import remove_our_fields
from gateway.queue.spool import QueueEntry, RecipientState, Spool

Kind = Literal["failure", "delay", "relayed"]

_STATUS_IN_REPLY = re.compile(r"^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b")
_EXPIRED_STATUS = "4.4.7"  # RFC 3463: delivery time expired
_POLICY = email.policy.SMTP.clone(max_line_length=998)
# For an SMTPUTF8 sender: its address goes into To: as UTF-8 (RFC 6532); an encoded word is not
# allowed inside an address (RFC 2047 section 5).
_POLICY_UTF8 = _POLICY.clone(utf8=True)


def wanted(recipient: RecipientState, kind: Kind) -> bool:
    """Whether the client asked (or, without NOTIFY, would expect) this kind of DSN."""
    notify = {n.upper() for n in recipient.notify}
    if kind == "relayed":
        return "SUCCESS" in notify  # never by default (RFC 3461 4.1)
    if not notify:
        # RFC 3461 4.1: no NOTIFY means FAILURE, and DELAY at our option: delay warnings are
        # only produced when the admin configured them, so send them then.
        return True
    if "NEVER" in notify:
        return False
    return kind.upper() in notify


_STATUS_REPORTED: dict[Kind, str] = {
    "failure": "failed",
    "delay": "pending",
    "relayed": "delivered",
}


def recipients_to_report(
    entry: QueueEntry, kind: Kind, among: Collection[int] | None = None
) -> list[RecipientState]:
    """Who gets this kind of notice; `among` limits it to those recipient indexes."""
    status = _STATUS_REPORTED[kind]
    return [
        r
        for i, r in enumerate(entry.recipients)
        if r.status == status and wanted(r, kind) and (among is None or i in among)
    ]


def status_code(recipient: RecipientState, kind: Kind) -> str:
    """The RFC 3463 status: from the downstream's enhanced code, else a generic one."""
    match = _STATUS_IN_REPLY.match(recipient.reply)
    if kind == "relayed":
        return match[1] if match and match[1].startswith("2") else "2.0.0"
    if match:
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
    report["Subject"] = _SUBJECTS[kind]
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

    # RET=FULL asks for the whole message with failures (RFC 3461 4.3); a success notice
    # gets the headers, enough to say which message it is about.
    full = entry.dsn_ret.upper() == "FULL" and kind != "relayed"
    # Our verdict and authentication results are for the internal server only: they would
    # tell a spammer which symbols and score their mail got (reporting_mta is our hostname,
    # the authserv-id we write).
    report.attach(_returned(remove_our_fields(original, reporting_mta), full=full))
    return report.as_bytes(policy=policy)


_SUBJECTS: dict[Kind, str] = {
    "failure": "Undelivered Mail Returned to Sender",
    "delay": "Delayed Mail (still being retried)",
    "relayed": "Successful Mail Delivery Report",
}
_ACTIONS: dict[Kind, str] = {"failure": "failed", "delay": "delayed", "relayed": "relayed"}


def _explanation(
    entry: QueueEntry, kind: Kind, recipients: Sequence[RecipientState], reporting_mta: str
) -> str:
    if kind == "failure":
        opening = (
            f"This is the mail system at {reporting_mta}.\n\n"
            "Your message could not be delivered to one or more recipients.\n"
            "It is attached below. The reasons:\n"
        )
    elif kind == "delay":
        opening = (
            f"This is the mail system at {reporting_mta}.\n\n"
            "Your message has not been delivered yet to the recipients below.\n"
            "We keep trying; you do not need to send it again.\n"
        )
    else:
        opening = (
            f"This is the mail system at {reporting_mta}.\n\n"
            "Your message was handed on to the mail server of the recipients below, which\n"
            "sends no delivery notices: this is the last one you will get for them.\n"
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
        ("Action", _ACTIONS[kind]),
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
    """RET=FULL: the whole message; otherwise, or when it is past the parse bounds (see
    gateway.content.parse_bytes), only its headers (RFC 3462 text/rfc822-headers)."""
    parsed = parse_bytes(original) if full else None
    if parsed is not None and not was_cut(parsed):
        part = email.message.Message(policy=_POLICY)
        part.set_type("message/rfc822")
        part.set_payload([parsed])
        return part
    headers = header_block(original).replace(b"\r\n", b"\n").rstrip(b"\n")
    part = email.message.Message(policy=_POLICY)
    part.set_type("text/rfc822-headers")
    # The header bytes as they came: decoded as UTF-8 (or with U+FFFD for what is not), an
    # 8-bit header made the generator raise, and the notice was never queued.
    part.set_payload(headers.decode("ascii", "surrogateescape") + "\n")
    if not headers.isascii():
        part["Content-Transfer-Encoding"] = "8bit"
    return part


class SpoolBouncer:
    """Queues DSNs for the delivery workers (the Bouncer the DeliveryService calls)."""

    def __init__(self, spool: Spool, reporting_mta: str, remote_mta: str) -> None:
        self.spool = spool
        self.reporting_mta = reporting_mta
        self.remote_mta = remote_mta

    def notify(
        self,
        entry: QueueEntry,
        original: bytes,
        kind: Kind,
        now: float,
        among: Collection[int] | None = None,
    ) -> str | None:
        """Queue a DSN if anyone should get one (of the recipient indexes `among`, if given);
        returns its queue id. Blocking (disk)."""
        if not entry.mail_from:
            return None  # never bounce a bounce
        if kind != "failure" and not entry.sender_authenticated:
            return None  # a forged sender would get them: backscatter, and our verdict inside
        recipients = recipients_to_report(entry, kind, among)
        if not recipients:
            return None
        dsn = build_dsn(entry, original, kind, recipients, self.reporting_mta, self.remote_mta, now)
        # One id per message and kind: after a crash between queueing the DSN and recording
        # that it was queued, the retry finds it in the queue instead of sending a second one.
        dsn_id = f"{entry.id}-{kind}"
        if kind == "relayed" and entry.attempts > 1:
            # Recipients delivered by a later attempt get their own notice: the first one may
            # still be queued under the plain id.
            dsn_id = f"{dsn_id}-{entry.attempts}"
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


def mail_parameters(entry: QueueEntry) -> tuple[str, ...]:
    """RET and ENVID as the client gave them, for relaying MAIL to a server offering DSN."""
    params = [f"RET={entry.dsn_ret}"] if entry.dsn_ret else []
    if entry.dsn_envid:
        params.append(f"ENVID={xtext_encode(entry.dsn_envid)}")
    return tuple(params)


def rcpt_parameters(recipient: RecipientState) -> tuple[str, ...]:
    """NOTIFY and ORCPT as the client gave them, for relaying RCPT to a server offering DSN."""
    params = [f"NOTIFY={','.join(recipient.notify)}"] if recipient.notify else []
    address_type, _, address = recipient.orcpt.partition(";")
    if address:
        encoded = (
            _utf8_addr_xtext(address) if address_type.upper() == "UTF-8" else xtext_encode(address)
        )
        params.append(f"ORCPT={address_type};{encoded}")
    return tuple(params)


def xtext_encode(text: str) -> str:
    """RFC 3461 section 4: "!" to "~" except "+" and "=" as they are, any other byte as "+HH"."""
    return "".join(
        chr(byte) if 0x21 <= byte <= 0x7E and byte not in (0x2B, 0x3D) else f"+{byte:02X}"
        for byte in text.encode("utf-8")
    )


_EMBEDDED_UNICODE = re.compile(r"(\\x\{[0-9A-Fa-f]{1,6}\})")


def _utf8_addr_xtext(address: str) -> str:
    """RFC 6533 utf-8-addr-xtext, valid with or without SMTPUTF8: "\\x{HEX}" for anything but
    printable ASCII other than "+", "=" and "\\". The client's own "\\x{..}" stay as they are
    (they were kept encoded when its ORCPT was read)."""
    parts = _EMBEDDED_UNICODE.split(address)
    for i in range(0, len(parts), 2):  # the odd ones are the client's "\\x{..}"
        parts[i] = "".join(
            c if 0x21 <= ord(c) <= 0x7E and c not in "+=\\" else f"\\x{{{ord(c):X}}}"
            for c in parts[i]
        )
    return "".join(parts)


def _params(options: Sequence[str]) -> dict[str, str]:
    pairs = (option.partition("=") for option in options)
    return {name.upper(): value for name, _, value in pairs}


def _xtext_decode(text: str) -> str:
    """RFC 3461 section 4: "+HH" encodes one byte."""
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m[1], 16)), text)
