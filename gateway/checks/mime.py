"""One reading of every message: a message that readers split into different MIME trees,
encodings or file names is held, never judged by whichever reading the email package picked.

The parser (gateway.content) already reads headers as RFC 5322 says, obsolete syntax included,
and notes on each part what can be read two ways; this check turns those notes into symbols.
"""

from __future__ import annotations

import itertools
from email.errors import StartBoundaryNotFoundDefect

from gateway.checks.filetypes import file_extension
from gateway.content import (
    MAX_PARTS,
    AmbiguousField,
    ObsoleteHeaderSyntax,
    boundary_readings,
    part_filenames,
)
from gateway.model import CheckResult, Phase, Symbol, Transaction
from gateway.pipeline.check import Check

_MAX_REASON_CHARS = 200  # reasons end up in SMTP replies and log lines


class MimeCheck(Check):
    name = "mime"
    phase = Phase.DATA
    symbols = frozenset({"MIME_AMBIGUOUS", "MIME_OBSOLETE_HEADER"})

    async def run(self, tx: Transaction) -> CheckResult:
        ambiguous: list[str] = []
        obsolete: list[str] = []
        for index, part in enumerate(itertools.islice(tx.message.walk(), MAX_PARTS)):
            where = "message" if index == 0 else f"part {index}"
            for defect in part.defects:
                if isinstance(defect, AmbiguousField):
                    ambiguous.append(f"{where}: {defect}")
                elif isinstance(defect, StartBoundaryNotFoundDefect):
                    # Readers that match boundaries more loosely (ClamAV, some clients) split
                    # it into parts the checks never saw. No ham of the corpus has one.
                    ambiguous.append(f"{where}: multipart whose boundary never appears")
                elif isinstance(defect, ObsoleteHeaderSyntax):
                    obsolete.append(f"{where}: {defect}")
            if len(boundaries := boundary_readings(part)) > 1:
                ambiguous.append(f"{where}: boundary read as {_quoted(boundaries)}")
            names = part_filenames(part)
            if len({file_extension(name) for name in names}) > 1:
                ambiguous.append(f"{where}: file name read as {_quoted(names)}")
        found = []
        if ambiguous:
            found.append(Symbol("MIME_AMBIGUOUS", _reason(ambiguous)))
        if obsolete:
            found.append(Symbol("MIME_OBSOLETE_HEADER", _reason(obsolete)))
        return self.result(*found)


def _quoted(values: list[str]) -> str:
    return " and ".join(repr(value[:60]) for value in values[:3])


def _reason(findings: list[str]) -> str:
    text = "; ".join(dict.fromkeys(findings))  # one per kind and place, in message order
    return "".join(c if c.isprintable() else "?" for c in text)[:_MAX_REASON_CHARS]
