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

What one network read brings is taken in one piece when `feed` would take each of its lines
without refusing the message (`feed_lines`), bare line endings normalised in one piece too;
otherwise, and for a line still arriving, line by line. The result is the same byte for byte
(tests/unit/test_smtp_data.py checks it on random streams).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from enum import Enum

from gateway.smtp.limits import MemoryAccount
from gateway.smtp.lines import LineReader

_BARE_CR_OR_LF = re.compile(rb"[\r\n]")
# RFC 5321 4.5.3.1.6: the line limit does not count a dot doubled for transparency, so lines
# are read up to one byte past it (`LineReader.next(extra=...)`).
TRANSPARENCY_EXTRA = 1


class DataProblem(Enum):
    TOO_BIG = "too big"
    LINE_TOO_LONG = "line too long"
    BARE_LINE_ENDING = "bare CR or LF"
    NO_MEMORY = "too much mail in progress"


class DataCollector:
    """Feed it the DATA stream cut at LF (`feed`) or over-long pieces (`fragment`)."""

    def __init__(
        self,
        max_message_bytes: int,
        max_line_bytes: int,
        normalize: bool,
        memory: MemoryAccount | None = None,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_line_bytes = max_line_bytes
        self.normalize = normalize
        # What is stored is held in `memory` until `release()`; None: no shared limit.
        self.memory = memory
        self._held = 0
        self.size = 0  # bytes of message content, whether stored or not
        self.problem: DataProblem | None = None
        self._parts: list[bytes] = []
        self._at_line_start = True
        self._line_bytes = 0  # length so far of the line being read, across fragments
        self._fragment_ended_in_cr = False

    async def read_from(
        self, lines: LineReader, read_line: Callable[[], Awaitable[tuple[bytes, bool]]]
    ) -> None:
        """Read DATA through its end from `lines`: what each network read brought as whole
        lines in one piece (`feed_lines`), a line still arriving through `read_line` (which
        waits within the session's limits and cuts an over-long line into pieces)."""
        while True:
            block = lines.take_lines()
            if block is not None:
                ended, taken = self.feed_lines(block)
                if ended:
                    lines.unread(block[taken:])  # pipelined commands after the dot
                    return
                continue
            chunk, complete = await read_line()
            if not complete:
                self.fragment(chunk)
            elif self.feed(chunk):
                return

    def feed(self, chunk: bytes) -> bool:
        """Take one LF-terminated chunk from the stream; True when it was the end-of-data line."""
        if self._at_line_start and chunk == b".\r\n":
            return True
        if self.problem is not None:
            self._skip(chunk)
            return False
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
        if self.problem is None and self._hold(len(line)):
            self._parts.append(line)
        return False

    def feed_lines(self, block: bytes) -> tuple[bool, int]:
        """Take LF-terminated lines (`block` ends in LF) as `feed` would, one after another;
        returns whether DATA ended and how many bytes of `block` were taken (through the
        end-of-data line). Clean runs of lines (CRLF only, within the limits) are taken in
        one piece: line by line, 25 MB of empty lines cost a minute of CPU on the event loop."""
        if self._line_bytes or self._fragment_ended_in_cr:  # the rest of a long line first
            first = block.index(b"\n") + 1
            if self.feed(block[:first]):
                return True, first
            ended, taken = self.feed_lines(block[first:]) if first < len(block) else (False, 0)
            return ended, first + taken
        end = self._end_of_data(block)
        content = block if end == -1 else block[: end - 3]  # without the "." CRLF line
        if self.problem is not None:
            if content:
                self._skip(content)  # whole lines: as the last of them would leave it
        elif not self._take_clean(content):
            return self._feed_each(block)
        return (False, len(block)) if end == -1 else (True, end)

    def _end_of_data(self, block: bytes) -> int:
        """Where the end-of-data line in `block` ends, or -1. A CRLF always ends a chunk of
        the stream (chunks are cut at LF), so "CRLF . CRLF" is an end wherever it is."""
        if self._at_line_start and block.startswith(b".\r\n"):
            return 3
        found = block.find(b"\r\n.\r\n")
        return -1 if found == -1 else found + 5

    def _take_clean(self, content: bytes) -> bool:
        """Take `content` (whole lines) at once if `feed` would take each of its lines without
        refusing the message: every line within the limit, the whole within the size and
        memory limits, bare line endings only where they are normalised (as `feed` does it).
        False, with nothing taken, otherwise."""
        crlf = content.count(b"\r\n")
        bare = content.count(b"\r") != crlf or content.count(b"\n") != crlf
        if bare and not self.normalize:
            return False  # line by line, to the first bare line ending
        # The transparency dots: only at the start of a line that follows a CRLF.
        unstuffed = content[1:] if self._at_line_start and content.startswith(b".") else content
        unstuffed = unstuffed.replace(b"\r\n.", b"\r\n")
        # Each line with its line end within the limit (a regex search is 10 times slower).
        if max(map(len, unstuffed.split(b"\n"))) + 1 > self.max_line_bytes:
            return False
        if bare:  # every CRLF, bare CR and bare LF becomes one CRLF
            unstuffed = unstuffed.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            unstuffed = unstuffed.replace(b"\n", b"\r\n")
        if self.size + len(unstuffed) > self.max_message_bytes:
            return False
        if self.memory is not None and len(unstuffed) > self.memory.free_bytes:
            return False  # line by line, to the line that does not fit
        self._hold(len(unstuffed))
        self.size += len(unstuffed)
        if unstuffed:
            self._parts.append(unstuffed)
        if content:
            self._at_line_start = content.endswith(b"\r\n")
        return True

    def _skip(self, chunk: bytes) -> None:
        """Past a problem nothing is stored, and only the end of data and the size matter: the
        size then counts the bytes as received."""
        self._at_line_start = chunk.endswith(b"\r\n") or (
            chunk == b"\n" and self._fragment_ended_in_cr
        )
        self._line_bytes = 0
        self._fragment_ended_in_cr = False
        self.size += len(chunk)
        if self.size > self.max_message_bytes:
            self._fail(DataProblem.TOO_BIG)

    def _feed_each(self, block: bytes) -> tuple[bool, int]:
        """Each line of `block` as the line reader hands it out: an over-long one in pieces."""
        position = 0
        while position < len(block):
            line_end = block.index(b"\n", position) + 1
            while line_end - position > self.max_line_bytes + TRANSPARENCY_EXTRA:
                self.fragment(block[position : position + self.max_line_bytes + TRANSPARENCY_EXTRA])
                position += self.max_line_bytes + TRANSPARENCY_EXTRA
            if self.feed(block[position:line_end]):
                return True, line_end
            position = line_end
        return False, position

    def fragment(self, data: bytes) -> None:
        """A piece of a line longer than max_line_bytes: never stored, only counted."""
        self._line_bytes += len(data)
        self.size += len(data)
        self._at_line_start = False
        self._fragment_ended_in_cr = data.endswith(b"\r")
        self._fail(DataProblem.LINE_TOO_LONG)

    def message(self) -> bytes:
        """The message with CRLF line ends (only when `problem` is None), once: the pieces
        are let go, so it is not held twice while it is checked. Its bytes stay held in
        `memory` until `release()`."""
        message = b"".join(self._parts)
        self._parts.clear()
        return message

    def release(self) -> None:
        """The message is done with (refused, stored or abandoned): give its memory back."""
        if self.memory is not None:
            self.memory.give_back(self._held)
        self._held = 0

    def _hold(self, n: int) -> bool:
        if self.memory is not None and not self.memory.take(n):
            self._fail(DataProblem.NO_MEMORY)
            return False
        self._held += n
        return True

    def _fail(self, problem: DataProblem) -> None:
        # The first problem wins but size beats everything: it is the one a client can fix.
        if self.problem is None or problem is DataProblem.TOO_BIG:
            self.problem = problem
        self._parts.clear()
        self.release()
