"""`gateway scan`: the full pipeline offline on raw message files, with every symbol explained."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.mailsources import MailSourceError, iter_messages, split_mbox
from gateway.model import Action, Connection, Envelope, Transaction, Verdict, new_id
from gateway.net.dns import begin_scope
from gateway.pipeline.engine import Pipeline

ASSUMED_CLIENT_IP = "127.0.0.1"


@dataclass(frozen=True)
class ScanEnvelope:
    client_ip: str = ASSUMED_CLIENT_IP
    helo: str = "localhost"
    mail_from: str = ""
    rcpt_tos: tuple[str, ...] = ()
    client_ip_assumed: bool = False  # no --client-ip: every verdict says so


def assumed_ip_note(envelope: ScanEnvelope, spf_enabled: bool) -> str:
    """Why a verdict may not be the one the message got at the gateway: SPF judged the
    sender against this host's address (a saved legitimate message came out SPF_FAIL and,
    with p=reject, DMARC_REJECT)."""
    if not envelope.client_ip_assumed:
        return ""
    note = f"no --client-ip: the client was taken to be {envelope.client_ip}"
    if spf_enabled:
        note += "; SPF (and DMARC through it) judged the sender against that address"
    return note


def to_wire_format(raw: bytes) -> bytes:
    """What the SMTP layer would hand the pipeline: no mbox 'From ' line, CRLF line endings."""
    if raw.startswith(b"From "):
        raw = raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    # Whole-buffer replaces: a list of its lines cost 1 GB for 12 million empty ones.
    wire = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return wire if not wire or wire.endswith(b"\r\n") else wire + b"\r\n"


async def scan_bytes(pipeline: Pipeline, raw: bytes, envelope: ScanEnvelope) -> Verdict:
    begin_scope()  # each message its own DNS session: one timeout, then its lookups fail fast
    tx_id = new_id()
    connection = Connection(id=tx_id, client_ip=envelope.client_ip, helo=envelope.helo)
    tx = Transaction(
        tx_id,
        connection,
        Envelope(mail_from=envelope.mail_from, rcpt_tos=envelope.rcpt_tos),
        to_wire_format(raw),
    )
    outcome = await pipeline.run_message(tx)
    return outcome.verdict


def verdict_to_json(
    path: str, verdict: Verdict, envelope: ScanEnvelope | None = None, note: str = ""
) -> dict[str, Any]:
    envelope = envelope or ScanEnvelope()
    return {
        "file": path,
        "client_ip": envelope.client_ip,
        "client_ip_assumed": envelope.client_ip_assumed,
        "note": note,
        "action": verdict.action.value,
        "score": verdict.score,
        "thresholds": {"quarantine": verdict.quarantine_at, "reject": verdict.reject_at},
        "reason": verdict.reason,
        "forced_by": verdict.forced_by.name if verdict.forced_by else None,
        "symbols": [s.to_json() for s in verdict.symbols],
    }


def render_text(path: str, verdict: Verdict, note: str = "") -> str:
    lines = [
        f"{path}: {verdict.action.value.upper()}  score {verdict.score:.2f} "
        f"(quarantine at {verdict.quarantine_at:g}, reject at {verdict.reject_at:g})",
        f"  why: {verdict.reason}",
    ]
    width = max((len(s.name) for s in verdict.symbols), default=0)
    for symbol in sorted(verdict.symbols, key=lambda s: (-abs(s.score), s.name)):
        lines.append(f"  {symbol.name:<{width}} {symbol.score:>7.2f}  {symbol.reason}")
    if not verdict.symbols:
        lines.append("  (no symbols)")
    if note:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


@dataclass(frozen=True)
class ScanOutput:
    text: str
    failed: bool  # the file could not be read: `text` is the error line
    action: Action | None = None  # the verdict's action, None when failed


# `gateway scan --check`: the exit code says the strongest verdict over all messages, as
# `spamc -c` does (0 and 1-2 keep the meanings every gateway command gives them).
CHECK_EXIT_CODES = {
    Action.ACCEPT: 0,
    Action.TAG: 3,
    Action.QUARANTINE: 4,
    Action.TEMPFAIL: 5,
    Action.REJECT: 6,
}
EXIT_FAILED = 1


def exit_code(outputs: Sequence[ScanOutput], check: bool) -> int:
    """1 when a file could not be scanned; else with `check` the strongest verdict's code."""
    if any(o.failed for o in outputs):
        return EXIT_FAILED
    if not check:
        return 0
    return max((CHECK_EXIT_CODES[o.action] for o in outputs if o.action is not None), default=0)


def split_file(raw: bytes) -> list[bytes]:
    """The messages of one file: several for an mbox (each verdict its own), else the file.

    Only a strict mbox separator as the first line makes a file an mbox, so a message that
    merely starts with a `From ` line is still one message."""
    first_line = raw.split(b"\n", 1)[0]
    if raw.startswith(b"From ") and len(split_mbox(first_line + b"\nX: y\n")) == 1:
        return split_mbox(raw) or [raw]
    return [raw]


async def scan_files(
    pipeline: Pipeline, paths: Sequence[str], envelope: ScanEnvelope, as_json: bool
) -> list[ScanOutput]:
    """Scan each file in turn; an unreadable file is reported and does not stop the others.

    An mbox gives one verdict per message (`FILE#n`); a directory (or Maildir) one per
    message file below it, with the files that are not mail reported as skipped."""
    outputs: list[ScanOutput] = []
    note = assumed_ip_note(envelope, any(c.name == "spf" for c in pipeline.checks))

    async def scan_one(origin: str, raw: bytes) -> None:
        verdict = await scan_bytes(pipeline, raw, envelope)
        text = (
            json.dumps(verdict_to_json(origin, verdict, envelope, note))
            if as_json
            else render_text(origin, verdict, note)
        )
        outputs.append(ScanOutput(text, False, verdict.action))

    def skipped(path: Path, reason: str) -> None:
        outputs.append(ScanOutput(f"gateway scan: {path}: skipped: {reason}", True))

    for path in paths:
        if Path(path).is_dir():
            try:
                for found in iter_messages(Path(path), skipped):
                    await scan_one(found.origin, found.raw)
            except (MailSourceError, OSError) as exc:
                outputs.append(ScanOutput(f"gateway scan: {path}: {exc}", True))
            continue
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            outputs.append(ScanOutput(f"gateway scan: {path}: {exc.strerror or exc}", True))
            continue
        messages = split_file(raw)
        for index, message in enumerate(messages):
            await scan_one(f"{path}#{index + 1}" if len(messages) > 1 else path, message)
    return outputs
