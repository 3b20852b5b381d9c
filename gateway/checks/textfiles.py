"""Files carried inside a message's text: uuencoded (`begin 644 invoice.exe`) and yEnc
(`=ybegin ... name=x.exe`) blocks, which Outlook and news readers show as attachments and
ClamAV decodes, but which are no MIME part.

One pass over the text: each block is decoded from its begin line to its end line (or the
first line that does not fit), and the search goes on after it, so blocks never overlap and a
text of a million `begin` lines costs one scan. At most `max_files` blocks are returned.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

MAX_TEXT_FILES = 100  # per text part; more: the rest is reported as a limit
_BEGIN = re.compile(
    rb"^(?:begin [0-7]{3,4} +(?P<uu>[^\r\n]+)|=ybegin (?P<y>[^\r\n]*))\r?$", re.MULTILINE
)
_YENC_NAME = re.compile(rb"\bname=(.*)$")
_YENC_TABLE = bytes((b - 42) % 256 for b in range(256))


@dataclass(frozen=True, slots=True)
class TextFile:
    name: str
    data: bytes


@dataclass(slots=True)
class TextFiles:
    files: list[TextFile]
    more: bool  # past max_files: not all were decoded


def text_files(text: bytes, max_files: int = MAX_TEXT_FILES) -> TextFiles:
    found = TextFiles([], False)
    if b"begin " not in text:  # the common case: no block, no regex pass
        return found
    pos = 0
    while match := _BEGIN.search(text, pos):
        if len(found.files) >= max_files:
            found.more = True
            break
        start = match.end() + 1  # past the begin line's "\n"
        if match.group("uu") is not None:
            data, pos = _uudecode(text, start)
            name = match.group("uu")
        else:
            data, pos = _ydecode(text, start)
            named = _YENC_NAME.search(match.group("y"))
            name = named.group(1) if named else b""
        pos = max(pos, match.end())
        label = name.strip().decode("utf-8", errors="replace") or "uuencoded file"
        found.files.append(TextFile(label, data))
    return found


def _lines(text: bytes, pos: int) -> tuple[bytes, int]:
    """The line at `pos` without its end, and where the next one starts."""
    end = text.find(b"\n", pos)
    if end < 0:
        end = len(text)
    return text[pos:end].rstrip(b"\r"), end + 1


def _uudecode(text: bytes, pos: int) -> tuple[bytes, int]:
    out = bytearray()
    while pos < len(text):
        line, after = _lines(text, pos)
        if line == b"end":
            return bytes(out), after
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            break  # not uuencoded: the block ends here, the line may start the next one
        pos = after
    return bytes(out), pos


def _ydecode(text: bytes, pos: int) -> tuple[bytes, int]:
    pieces = []
    while pos < len(text):
        line, after = _lines(text, pos)
        if line.startswith(b"=yend"):
            pos = after
            break
        if line.startswith(b"=ybegin "):
            break  # a new block without this one's end
        if not line.startswith(b"=ypart "):
            pieces.append(line)
        pos = after
    # "=" escapes the next byte (+64); every byte is stored +42.
    escaped = b"".join(pieces).split(b"=")
    data = bytearray(escaped[0])
    for piece in escaped[1:]:
        if piece:
            data.append((piece[0] - 64) % 256)
            data += piece[1:]
    return bytes(data).translate(_YENC_TABLE), pos
