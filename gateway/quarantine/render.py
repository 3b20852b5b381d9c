"""Turn quarantine entries into text an admin reads in a terminal, or JSON for scripts.

Everything here comes from strangers' mail, so every string goes through `safe_text`: a
message must not be able to move the cursor, recolour the terminal or reorder text (bidi).
HTML is never rendered and attachments are never opened; they are only named.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.message
import email.policy
import time
import unicodedata
from html.parser import HTMLParser
from typing import Any

from gateway.content import (
    decode_header_value,
    decode_text,
    defuse_markup,
    part_bytes,
    part_charset,
    part_filename,
)
from gateway.model import parse_message
from gateway.quarantine.store import CorruptEntry, Entry

PREVIEW_CHARS = 2000
MAX_PARTS = 200  # MIME parts looked at for the preview; a bomb of parts is not walked further
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
_BLOCK_TAGS = {"p", "br", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table"}


def safe_text(text: str, keep_newlines: bool = False) -> str:
    """`text` with every control, format and unassigned character shown as a visible escape."""
    out = []
    for char in text:
        if keep_newlines and char in "\n\t":
            out.append(char)
        elif unicodedata.category(char) in _UNSAFE_CATEGORIES:
            out.append(f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def utc(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp))


def iso_utc(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


# -- list ------------------------------------------------------------------------------------


def table(entries: list[Entry | CorruptEntry], width: int | None) -> str:
    """A table that fits `width` columns (None: no limit, e.g. into a pipe); the subject gets
    what the other columns leave. A corrupt entry gets one line with its problem instead."""
    header = ["ID", "RECEIVED (UTC)", "SCORE", "STATE", "FROM", "TO", "SUBJECT"]
    rows = [header] + [_row(e) for e in entries if isinstance(e, Entry)]
    caps = [64, 19, 8, 10, 32, 32]
    widths = [min(cap, max(len(r[i]) for r in rows)) for i, cap in enumerate(caps)]
    longest_subject = max(len(r[-1]) for r in rows)
    widths.append(
        longest_subject if width is None else max(10, width - sum(widths) - 2 * len(widths))
    )

    def line(row: list[str]) -> str:
        return "  ".join(_fit(c, w).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    good_rows = iter(rows[1:])
    lines = [line(header)]
    for entry in entries:
        if isinstance(entry, CorruptEntry):
            text = f"{_cell(entry.id).ljust(widths[0])}  CORRUPT  {_cell(entry.problem)}"
            lines.append(text if width is None else _fit(text, width))
        else:
            lines.append(line(next(good_rows)))
    return "\n".join(lines)


def _row(e: Entry) -> list[str]:
    to = e.rcpt_tos[0] if e.rcpt_tos else ""
    if len(e.rcpt_tos) > 1:
        to += f" +{len(e.rcpt_tos) - 1}"
    state = e.state.value + ("!" if e.problem else "")  # "!": see the problem on stderr
    cells = [e.id, utc(e.received_at), f"{e.score:.2f}", state, e.header_from or e.mail_from, to]
    return [_cell(c) for c in [*cells, e.subject]]


def _cell(value: str) -> str:
    return safe_text(" ".join(value.split()))


def _fit(value: str, width: int) -> str:
    return value if len(value) <= width else value[: max(0, width - 1)] + "…"


def entry_json(entry: Entry | CorruptEntry) -> dict[str, Any]:
    if isinstance(entry, CorruptEntry):
        return {"id": entry.id, "corrupt": True, "problem": entry.problem}
    return {
        "id": entry.id,
        "received_at": iso_utc(entry.received_at),
        "client_ip": entry.client_ip,
        "helo": entry.helo,
        "mail_from": entry.mail_from,
        "rcpt_tos": list(entry.rcpt_tos),
        "from": entry.header_from,
        "subject": entry.subject,
        "size": entry.size,
        "score": entry.score,
        "action": entry.action,
        "reason": entry.reason,
        "state": entry.state.value,
        "release_id": entry.release_id or None,
        "released_at": iso_utc(entry.released_at),
        "symbols": [s.to_json() for s in entry.symbols],
        "problem": entry.problem or None,
    }


# -- show ------------------------------------------------------------------------------------


def show(entry: Entry, raw: bytes | None) -> str:
    """Everything needed to judge one message; `raw` is None when its file is missing."""
    lines = [
        f"Quarantine id   {entry.id}",
        f"Received        {utc(entry.received_at)} UTC from {entry.client_ip} "
        f"(HELO {entry.helo or '-'})",
        f"Envelope from   <{entry.mail_from}>",
        f"Envelope to     {', '.join(entry.rcpt_tos)}",
        f"Size            {entry.size} bytes",
        f"State           {entry.state.value}"
        + (
            f" at {utc(entry.released_at)} UTC, queue id {entry.release_id}"
            if entry.released_at
            else ""
        ),
        f"Verdict         {entry.action}: {entry.reason}",
        f"Score           {entry.score:.2f}",
    ]
    if entry.symbols:
        name_w = max(len(s.name) for s in entry.symbols)
        check_w = max(len(s.check) for s in entry.symbols)
        lines.append("")
        lines.append(f"  {'SYMBOL'.ljust(name_w)}   SCORE  {'CHECK'.ljust(check_w)}  REASON")
        for s in entry.symbols:
            lines.append(
                f"  {s.name.ljust(name_w)}  {s.score:6.2f}  {s.check.ljust(check_w)}  {s.reason}"
            )
    if raw is None:
        lines += ["", f"Message file missing: {entry.problem or 'unreadable'}"]
        return "\n".join(safe_text(line) for line in lines)
    message = parse_message(raw)
    lines += ["", "Headers"]
    lines += [f"  {name}: {_header_text(value)}" for name, value in message.items()]
    attachments, preview, source = _walk(message)
    if attachments:
        lines += ["", "Attachments (listed only, never opened)"]
        lines += [f"  {a}" for a in attachments]
    lines += ["", f"Preview ({source}, first {PREVIEW_CHARS} characters)"]
    text = "\n".join(safe_text(line) for line in lines)
    body = safe_text(preview[:PREVIEW_CHARS], keep_newlines=True).expandtabs(4)
    return text + "\n" + "\n".join("  " + line for line in body.splitlines())


def _header_text(value: object) -> str:
    return " ".join(decode_header_value(value).split())


def _walk(message: email.message.Message) -> tuple[list[str], str, str]:
    """(attachment descriptions, preview text, where the preview came from)."""
    attachments: list[str] = []
    plain: str | None = None
    html: str | None = None
    for count, part in enumerate(message.walk()):
        if count >= MAX_PARTS:
            attachments.append(f"(more than {MAX_PARTS} MIME parts; the rest not listed)")
            break
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        filename = part_filename(part)
        disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        if filename or disposition == "attachment" or not ctype.startswith("text/"):
            name = _header_text(filename) if filename else "(no name)"
            attachments.append(f"{name}  {ctype}  {len(part_bytes(part))} bytes")
        elif ctype == "text/plain" and plain is None:
            plain = _decoded_text(part)
        elif ctype == "text/html" and html is None:
            html = _decoded_text(part)
    if plain is not None:
        return attachments, plain, "text/plain"
    if html is not None:
        return attachments, html_to_text(html), "text extracted from HTML, not rendered"
    return attachments, "", "no text part"


def _decoded_text(part: email.message.Message) -> str:
    return decode_text(part_bytes(part), part_charset(part)).replace("\r\n", "\n")


class _TextOfHtml(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip_depth += 1
        elif tag in _BLOCK_TAGS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip_depth:
            self._skip_depth -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.chunks.append(data)


def html_to_text(html: str) -> str:
    """The readable text of an HTML body: no scripts, styles, images or links are followed."""
    parser = _TextOfHtml()
    parser.feed(defuse_markup(html))
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.chunks).splitlines())
    return "\n".join(line for line in lines if line)
