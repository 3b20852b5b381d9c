"""Attachment policy: blocked file types by name and content, also inside archives.

Every part of the MIME tree is looked at (within `max_parts`), and so are uuencoded and yEnc
files in the message text (mail clients show them as attachments); decoding shares one byte
budget per message, and archives are listed, never extracted (gateway.checks.archive).
"""

from __future__ import annotations

import email.errors
import email.header
import email.message
from dataclasses import dataclass

from gateway.checks.archive import ArchiveLimits, Budget, Problem, archive_kind, list_archive
from gateway.checks.filetypes import TYPE_SYMBOLS, TypeRules
from gateway.checks.textfiles import MAX_TEXT_FILES, text_files
from gateway.content import (
    MessageCut,
    MimeNestingTooDeep,
    parameters_cut,
    part_bytes,
    part_filename,
    part_filenames,
    was_cut,
)
from gateway.model import CheckResult, OnError, Phase, Symbol, Transaction
from gateway.pipeline.check import INLINE_MAX_BYTES, Check
from gateway.threads import in_thread

_ARCHIVE_SYMBOLS = {
    Problem.BOMB: "ATTACH_ARCHIVE_BOMB",
    Problem.LIMIT: "ATTACH_LIMIT",
    Problem.ENCRYPTED: "ATTACH_ARCHIVE_ENCRYPTED",
    Problem.BROKEN: "ATTACH_ARCHIVE_BROKEN",
    # An entry larger than clamd scans (its MaxFileSize): clamd says "OK" without looking.
    Problem.UNSCANNABLE: "AV_UNSCANNABLE",
}
_MAX_REASON_CHARS = 200  # reasons end up in SMTP replies and log lines


@dataclass(frozen=True, slots=True)
class AttachmentLimits:
    max_parts: int
    max_decoded_bytes: int
    max_archive_entries: int
    archive: ArchiveLimits


@dataclass(frozen=True, slots=True)
class Part:
    name: str  # file name, or "part N" when it has none
    data: bytes
    other_names: tuple[str, ...] = ()  # the name as other readers read it (part_filenames)


class AttachmentsCheck(Check):
    name = "attachments"
    phase = Phase.DATA
    # AV_UNSCANNABLE too: the antivirus check's symbol, for entries clamd would not scan.
    symbols = frozenset({*TYPE_SYMBOLS.values(), *_ARCHIVE_SYMBOLS.values()})

    def __init__(
        self,
        rules: TypeRules,
        limits: AttachmentLimits,
        timeout_s: float = 10.0,
        on_error: OnError = OnError.TEMPFAIL,
    ) -> None:
        super().__init__(timeout_s, on_error)
        self.rules = rules
        self.limits = limits

    @property
    def error_symbol(self) -> str:
        return "ATTACH_ERROR"  # the ATTACH_ prefix of this check's symbols

    async def run(self, tx: Transaction) -> CheckResult:
        # Decoding and listing attachments is CPU work: off the event loop, so sessions go on.
        # A small message of text only has little to decode, and the thread hop would cost
        # more; a small one with an attachment may hold a compressed file that inflates a
        # thousandfold.
        if len(tx.raw) <= INLINE_MAX_BYTES and _text_only(tx.message, self.limits.max_parts):
            return self.result(*self._inspect_message(tx))
        return self.result(*await in_thread(self._inspect_message, tx))

    def _inspect_message(self, tx: Transaction) -> list[Symbol]:
        found = _Findings()
        budget = Budget(self.limits.max_decoded_bytes, self.limits.max_archive_entries)
        for part in _attachments(tx, self.limits.max_parts, budget, found):
            self._inspect(part, budget, found)
        return found.symbols()

    def _inspect(self, part: Part, budget: Budget, found: _Findings) -> None:
        for match in self.rules.by_name(part.name) + self.rules.by_content(part.data):
            found.add(match.symbol, part.name, match.how)
        for other in part.other_names:
            for match in self.rules.by_name(other):
                found.add(match.symbol, other, f"{match.how} (a reading of {part.name!r})")
        kind = archive_kind(part.data, part.name)
        if kind is None:
            return
        listing = list_archive(part.data, part.name, kind, self.limits.archive, budget)
        macro = self.rules.ooxml_macro()
        for path in listing.names:
            for match in self.rules.by_name(path):
                found.add(match.symbol, path, match.how)
            if macro is not None and path.lower().endswith("/vbaproject.bin"):
                found.add(macro.symbol, path, macro.how)
        for path, head in listing.heads:  # entries read on the way: a PE in a .gz
            for match in self.rules.by_content(head):
                found.add(match.symbol, path, match.how)
        for finding in listing.findings:
            found.add(_ARCHIVE_SYMBOLS[finding.problem], finding.path, finding.detail)


class _Findings:
    """One symbol per name: the first file that triggered it, and how many more did."""

    def __init__(self) -> None:
        self._first: dict[str, str] = {}
        self._more: dict[str, int] = {}

    def add(self, symbol: str, path: str, how: str) -> None:
        if symbol in self._first:
            self._more[symbol] = self._more.get(symbol, 0) + 1
        else:
            self._first[symbol] = f"file={_printable(path)} {how}"

    def symbols(self) -> list[Symbol]:
        found = []
        for name, reason in self._first.items():
            more = self._more.get(name)
            text = f"{reason} (+{more} more)" if more else reason
            found.append(Symbol(name, text[:_MAX_REASON_CHARS]))
        return found


def _attachments(tx: Transaction, max_parts: int, budget: Budget, found: _Findings) -> list[Part]:
    """Decoded leaf parts worth inspecting; limits reached become ATTACH_LIMIT findings."""
    root = tx.message
    for defect in root.defects:
        if isinstance(defect, MessageCut | MimeNestingTooDeep):  # the rest was never parsed
            found.add("ATTACH_LIMIT", "message", str(defect))
        if isinstance(defect, MimeNestingTooDeep):  # no MIME tree at all, only headers
            return []
    parts: list[Part] = []
    stack: list[email.message.Message] = [root]
    seen = 0
    while stack:
        msg = stack.pop()
        seen += 1
        if seen > max_parts:
            found.add("ATTACH_LIMIT", "message", f"more than {max_parts} MIME parts")
            break
        if cut := parameters_cut(msg):  # a name or boundary there may hide an attachment
            found.add("ATTACH_LIMIT", part_filename(msg) or f"part {seen}", cut)
        if msg is not root and was_cut(msg):
            # Header fields past the bound: its Content-Type, name or encoding may be among
            # them, so what the part is cannot be told.
            found.add("ATTACH_LIMIT", f"part {seen}", "more header fields than are read")
        if msg.is_multipart():  # before get_payload(), which is safe on multiparts only
            children = msg.get_payload()
            if isinstance(children, list):
                stack.extend(
                    reversed([p for p in children if isinstance(p, email.message.Message)])
                )
            continue
        name = part_filename(msg)
        if not name and msg.get_content_maintype() == "text":
            # The message text itself, not an attachment; but files uuencoded or yEnc-
            # encoded in it are shown as attachments by Outlook and others.
            encoded = text_files(part_bytes(msg), MAX_TEXT_FILES)
            if encoded.more:
                detail = f"more than {MAX_TEXT_FILES} uuencoded or yEnc files"
                found.add("ATTACH_LIMIT", f"part {seen}", detail)
            for text_file in encoded.files:
                if not budget.take_bytes(len(text_file.data)):
                    found.add("ATTACH_LIMIT", text_file.name, "decode budget exhausted")
                    break
                parts.append(Part(text_file.name, text_file.data))
            continue
        data = part_bytes(msg)
        # Decoded bytes count, as the limit says; decoding costs no more than the part's
        # size, which the message size limit already bounds.
        if not budget.take_bytes(len(data)):
            found.add("ATTACH_LIMIT", name or f"part {seen}", "decode budget exhausted")
            continue
        # Clients pick differently among filename, filename*, name and name*: judge them all.
        others = tuple(other for other in part_filenames(msg) if other != name)
        parts.append(Part(name or f"part {seen}", data, others))
    return parts


def _text_only(root: email.message.Message, max_parts: int) -> bool:
    """No attachment and no uuencoded or yEnc file in the text: nothing to inflate."""
    for seen, part in enumerate(root.walk()):
        if seen >= max_parts:
            return False
        if part.is_multipart():
            continue
        if part.get_content_maintype() != "text" or part_filename(part, decode_words=False):
            return False
        if b"begin " in part_bytes(part):
            return False
    return True


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)
