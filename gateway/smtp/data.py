"""Collecting the DATA of one message, the SMTP-smuggling-safe way.

aiosmtpd 1.4.6 already ends DATA only on CRLF.CRLF, but keeps bare CR and bare LF inside the
lines it returns, which a downstream server may read as line ends (CVE-2023-51764 class). Here
the stream is cut at every LF, so each chunk is one line as *some* MTA could see it:

- only a chunk `.` CRLF that follows a CRLF-terminated chunk ends DATA;
- a chunk ending in a bare LF, or holding a bare CR, is a bare line ending: "reject" refuses
  the message after the real end of DATA, "normalize" turns every bare CR or LF into CRLF.
  Normalised text is content, so the delivery side dot-stuffs it again: a `.` line smuggled
  in that way reaches the internal server as `..`, never as an end of data;
- the transparency dot is removed only at the start of a real (CRLF-started) line.

Size and line limits keep reading until the end of DATA (RFC 5321 4.2.5), so the session
stays in step, and stop storing data so a huge message costs no memory.
"""

from __future__ import annotations

import re
from enum import Enum

_BARE_CR_OR_LF = re.compile(rb"[\r\n]")


class DataProblem(Enum):
    TOO_BIG = "too big"
    LINE_TOO_LONG = "line too long"
    BARE_LINE_ENDING = "bare CR or LF"


class DataCollector:
    """Feed it the DATA stream cut at LF (`feed`) or over-long pieces (`fragment`)."""

    def __init__(self, max_message_bytes: int, max_line_bytes: int, normalize: bool) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_line_bytes = max_line_bytes
        self.normalize = normalize
        self.size = 0  # bytes of message content, whether stored or not
        self.problem: DataProblem | None = None
        self._parts: list[bytes] = []
        self._at_line_start = True
        self._line_bytes = 0  # length so far of the line being read, across fragments
        self._fragment_ended_in_cr = False

    def feed(self, chunk: bytes) -> bool:
        """Take one LF-terminated chunk from the stream; True when it was the end-of-data line."""
        if self._at_line_start and chunk == b".\r\n":
            return True
        # The limit is on the line as meant: a dot doubled for transparency does not count.
        stuffed = self._at_line_start and chunk.startswith(b".")
        if self._line_bytes + len(chunk) - stuffed > self.max_line_bytes:
            self._fail(DataProblem.LINE_TOO_LONG)
        self._line_bytes = 0
        # The CR of a CRLF may have been the last byte of the previous fragment.
        crlf = chunk.endswith(b"\r\n") or (chunk == b"\n" and self._fragment_ended_in_cr)
        self._fragment_ended_in_cr = False
        body = chunk[:-2] if crlf else chunk[:-1]
        if self._at_line_start and body.startswith(b"."):
            body = body[1:]
        self._at_line_start = crlf
        if not crlf or b"\r" in body:
            if not self.normalize:
                self._fail(DataProblem.BARE_LINE_ENDING)
            body = _BARE_CR_OR_LF.sub(b"\r\n", body)
        line = body + b"\r\n"
        self.size += len(line)
        if self.size > self.max_message_bytes:
            self._fail(DataProblem.TOO_BIG)
        if self.problem is None:
            self._parts.append(line)
        return False

    def feed_block(self, block: bytes) -> bool:
        """All of DATA through its final CRLF.CRLF (not starting with a dot), in one go. Only
        for a block `feed` would take without objection: no bare CR or LF, every line within
        the line limit, the whole within the size limit; else False, with nothing taken."""
        content = block[:-3]  # up to the CRLF before the final dot
        crlf = content.count(b"\r\n")
        if content.count(b"\r") != crlf or content.count(b"\n") != crlf:
            return False
        if max(map(len, content.split(b"\r\n"))) + 2 > self.max_line_bytes:
            return False
        content = content.replace(b"\r\n.", b"\r\n")  # the transparency dots
        if len(content) > self.max_message_bytes:
            return False
        self.size = len(content)
        self._parts.append(content)
        return True

    def fragment(self, data: bytes) -> None:
        """A piece of a line longer than max_line_bytes: never stored, only counted."""
        self._line_bytes += len(data)
        self.size += len(data)
        self._at_line_start = False
        self._fragment_ended_in_cr = data.endswith(b"\r")
        self._fail(DataProblem.LINE_TOO_LONG)

    def message(self) -> bytes:
        """The message with CRLF line ends (only when `problem` is None)."""
        return b"".join(self._parts)

    def _fail(self, problem: DataProblem) -> None:
        # The first problem wins but size beats everything: it is the one a client can fix.
        if self.problem is None or problem is DataProblem.TOO_BIG:
            self.problem = problem
        self._parts.clear()
