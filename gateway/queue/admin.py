"""What an admin does to the delivery queue: list, show, flush, hold, release, delete.

Pure functions over a Spool that return data, plus the text/JSON renderings the CLI prints.
Changes are made under the message's claim, so they never race a delivery worker of a running
gateway: a message being delivered at this instant is reported busy and left alone.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from gateway.content import parse_headers
from gateway.errors import SpoolError
from gateway.queue.spool import QueueEntry, RecipientState, Spool

State = Literal["all", "deferred", "held", "failed"]


class QueueBusy(SpoolError):
    """A delivery worker holds the message right now; the admin may try again."""


@dataclass(frozen=True, slots=True)
class QueueFilter:
    state: State = "all"  # "all" = everything still queued (deferred or held); failed separate
    sender: str = ""  # the envelope sender contains this (case-insensitive)
    rcpt: str = ""  # an envelope recipient contains this (case-insensitive)

    def matches(self, entry: QueueEntry) -> bool:
        if self.state == "held" and not entry.held:
            return False
        if self.state == "deferred" and entry.held:
            return False
        if self.sender and self.sender.lower() not in entry.mail_from.lower():
            return False
        rcpt = self.rcpt.lower()
        return not rcpt or any(rcpt in r.address.lower() for r in entry.recipients)


@dataclass(frozen=True, slots=True)
class QueueStats:
    size: int  # messages still queued (held included)
    held: int
    bytes: int
    oldest_age_s: float  # 0 when empty


def list_entries(spool: Spool, where: QueueFilter = QueueFilter()) -> list[QueueEntry]:
    """Matching entries, oldest first."""
    entries = spool.entries(failed=where.state == "failed")
    return [e for e in entries if where.matches(e)]


def stats(spool: Spool, now: float) -> QueueStats:
    return stats_of(list(spool.entries()), now)


def stats_of(entries: list[QueueEntry], now: float) -> QueueStats:
    oldest = min((e.received_at for e in entries), default=now)
    return QueueStats(
        size=len(entries),
        held=sum(e.held for e in entries),
        bytes=sum(e.size for e in entries),
        oldest_age_s=max(0.0, now - oldest),
    )


def find(spool: Spool, msg_id: str) -> tuple[QueueEntry, bool]:
    """An entry by id, queued or failed; the flag says whether it is a failed one."""
    try:
        return spool.load(msg_id), False
    except SpoolError:
        if msg_id in spool.ids(failed=True):
            return spool.load(msg_id, failed=True), True
        raise


def flush(spool: Spool, now: float) -> tuple[list[str], list[str]]:
    """Make every deferred (not held) message due now. Returns (flushed ids, busy ids)."""
    flushed: list[str] = []
    busy: list[str] = []
    for msg_id in spool.ids():
        with spool.claimed(msg_id) as claim:
            if claim is None:
                if msg_id in spool.ids():
                    busy.append(msg_id)  # being delivered at this moment: nothing to do
                continue
            if claim.entry.held:
                continue
            claim.update(dataclasses.replace(claim.entry, next_attempt_at=now))
            flushed.append(msg_id)
    return flushed, busy


def hold(spool: Spool, msg_id: str) -> QueueEntry:
    """Stop delivery attempts for a message until it is released."""
    return _change(spool, msg_id, lambda e: dataclasses.replace(e, held=True))


def release(spool: Spool, msg_id: str, now: float) -> QueueEntry:
    """Let a held message be delivered again, at once."""
    return _change(spool, msg_id, lambda e: dataclasses.replace(e, held=False, next_attempt_at=now))


def delete(spool: Spool, msg_id: str) -> None:
    """Remove a queued or failed message for good."""
    _, is_failed = find(spool, msg_id)
    if is_failed:
        spool.delete_failed(msg_id)
        return
    claim = spool.try_claim(msg_id)
    if claim is None:
        _raise_missing_or_busy(spool, msg_id)
    else:
        spool.remove(claim)


def _change(spool: Spool, msg_id: str, change: Callable[[QueueEntry], QueueEntry]) -> QueueEntry:
    with spool.claimed(msg_id) as claim:
        if claim is None:
            _raise_missing_or_busy(spool, msg_id)
        updated = change(claim.entry)
        claim.update(updated)
        return updated


def _raise_missing_or_busy(spool: Spool, msg_id: str) -> NoReturn:
    if msg_id in spool.ids():
        raise QueueBusy(f"{msg_id}: being delivered right now, try again in a moment")
    raise SpoolError(f"{msg_id}: not in the queue")


# -- rendering ---------------------------------------------------------------------------------


def entry_json(entry: QueueEntry, now: float, failed: bool = False) -> dict[str, Any]:
    data = entry.to_json()
    data.pop("version", None)
    data["state"] = "failed" if failed else ("held" if entry.held else "deferred")
    data["age_s"] = round(max(0.0, now - entry.received_at), 3)
    data["received"] = _iso(entry.received_at)
    data["next_attempt"] = None if failed or entry.held else _iso(entry.next_attempt_at)
    return data


def render_table(entries: list[QueueEntry], now: float, failed: bool = False) -> str:
    header = f"{'ID':<22} {'STATE':<8} {'AGE':>7} {'TRIES':>5} {'SIZE':>8}  SENDER -> RECIPIENTS"
    lines = [header]
    for e in entries:
        state = "failed" if failed else ("held" if e.held else "deferred")
        recipients = ", ".join(
            r.address + ("" if r.status == "pending" else f" ({r.status})") for r in e.recipients
        )
        lines.append(
            f"{e.id:<22} {state:<8} {_age(now - e.received_at):>7} {e.attempts:>5} "
            f"{e.size:>8}  {printable(e.mail_from or '<>')} -> {printable(recipients)}"
        )
        if e.last_error:
            lines.append(f"{'':<22} last error: {printable(e.last_error)}")
    return "\n".join(lines)


def render_show(entry: QueueEntry, headers: str, now: float, failed: bool = False) -> str:
    state = "failed" if failed else ("held" if entry.held else "deferred")
    lines = [
        f"id:           {entry.id}",
        f"state:        {state}",
        f"received:     {_iso(entry.received_at)} ({_age(now - entry.received_at)} ago)",
        f"attempts:     {entry.attempts}",
        f"next attempt: {'-' if failed or entry.held else _iso(entry.next_attempt_at)}",
        f"size:         {entry.size} bytes",
        f"sender:       {printable(entry.mail_from or '<>')}",
        f"last error:   {printable(entry.last_error) or '-'}",
        "recipients:",
        *(_recipient_line(r) for r in entry.recipients),
        "",
        printable(headers, keep_newlines=True),
    ]
    return "\n".join(lines)


def _recipient_line(recipient: RecipientState) -> str:
    reply = f" ({printable(recipient.reply)})" if recipient.reply else ""
    return f"  {printable(recipient.address)}: {recipient.status}{reply}"


def message_headers(data: bytes) -> str:
    """The header block of a message, for `show` (never the body: it may be private)."""
    message = parse_headers(data)
    # A folded field keeps its lines, each continuation indented: its CRLF and TAB would
    # otherwise reach the terminal as "??" (printable() replaces control characters).
    return "".join(
        f"{k}: " + "\n    ".join(p.strip() for p in str(v).splitlines()) + "\n"
        for k, v in message.items()
    )


def _iso(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="seconds")


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def printable(text: str, keep_newlines: bool = False) -> str:
    """Terminal-safe: control characters from mail or replies could rewrite the admin's screen."""
    allowed = "\n" if keep_newlines else ""
    return "".join(c if c.isprintable() or c in allowed else "?" for c in text)
