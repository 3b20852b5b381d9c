"""Read raw messages from what admins have at hand: single files, directories, Maildirs, mbox.

Used by `gateway learn` and by `training/` (which adds labels and corpus layouts on top).
Every message comes out as the bytes an MX would have seen in DATA: a leading mbox `From `
envelope line is removed. Broken sources are skipped with a reason, never fatal for the rest.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import GatewayError

MAX_MESSAGE_BYTES = 25 * 1024 * 1024  # the SMTP default limit: bigger files are not mail we saw

# A strict mbox separator ("From sender Tue Aug 20 10:00:00 2002"): the loose "starts with
# 'From '" rule of the mailbox module splits messages at unescaped body lines.
_MBOX_SEPARATOR = re.compile(
    rb"^From [^\n]*? \w{3} +\w{3} +\d{1,2} +\d{1,2}:\d{2}(?::\d{2})?"
    rb"(?: +[A-Z]{3,4}| +[+-]\d{4})? +\d{4}\s*$"
)

SkipHandler = Callable[[Path, str], None]


class MailSourceError(GatewayError):
    """A path given as a message source cannot be read at all."""


@dataclass(frozen=True, slots=True)
class RawMessage:
    raw: bytes
    origin: str  # file path, plus "#n" for the n-th message of an mbox


def strip_envelope_line(raw: bytes) -> bytes:
    """Drop a leading mbox `From ` line: an MX never sees it, and corpora carry it unevenly."""
    if raw.startswith(b"From "):
        _, _, rest = raw.partition(b"\n")
        return rest
    return raw


def iter_messages(path: Path, on_skip: SkipHandler | None = None) -> Iterator[RawMessage]:
    """Every message below `path` (file, mbox, Maildir or directory tree), in a stable order."""
    skip = on_skip or _ignore
    if path.is_dir():
        yield from _iter_directory(path, skip)
    elif path.is_file():
        yield from _iter_file(path, skip)
    else:
        raise MailSourceError(f"{path}: no such file or directory")


def _ignore(path: Path, reason: str) -> None:
    pass


def is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def _iter_directory(path: Path, skip: SkipHandler) -> Iterator[RawMessage]:
    # In a Maildir, tmp/ holds deliveries in progress: not messages yet.
    roots = [path / "cur", path / "new"] if is_maildir(path) else [path]
    for root in roots:
        for file in sorted(_entries_below(root, skip)):
            if file.is_file():
                yield from _iter_file(file, skip)
            else:
                skip(file, "not a regular file")


def _entries_below(root: Path, skip: SkipHandler) -> Iterator[Path]:
    """Every non-directory entry below `root`, hidden ones (dot names) left out; a directory
    that cannot be listed is reported through `skip` (Path.rglob would pass it over)."""

    def unreadable(error: OSError) -> None:
        skip(Path(error.filename or root), f"cannot read: {error.strerror}")

    for directory, subdirectories, files in os.walk(root, onerror=unreadable):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
        yield from (Path(directory, f) for f in files if not f.startswith("."))


def _iter_file(path: Path, skip: SkipHandler) -> Iterator[RawMessage]:
    try:
        size = path.stat().st_size
        if size > MAX_MESSAGE_BYTES:
            skip(path, f"larger than {MAX_MESSAGE_BYTES} bytes")
            return
        raw = path.read_bytes()
    except OSError as exc:
        skip(path, f"cannot read: {exc.strerror}")
        return
    if not raw.strip():
        skip(path, "empty")
        return
    messages = split_mbox(raw) if _MBOX_SEPARATOR.match(raw.split(b"\n", 1)[0]) else [raw]
    for index, message in enumerate(messages):
        origin = f"{path}#{index + 1}" if len(messages) > 1 else str(path)
        if not _looks_like_message(message):
            skip(Path(origin), "no header block")
            continue
        yield RawMessage(message, origin)


def split_mbox(raw: bytes) -> list[bytes]:
    """Split mbox text at strict separator lines and undo `>From ` quoting (mboxrd)."""
    messages: list[list[bytes]] = []
    for line in raw.splitlines(keepends=True):
        if _MBOX_SEPARATOR.match(line):
            messages.append([])
        elif messages:
            messages[-1].append(line[1:] if re.match(rb"^>+From ", line) else line)
    return [b"".join(lines) for lines in messages if any(line.strip() for line in lines)]


def _looks_like_message(raw: bytes) -> bool:
    """At least one `Name: value` header line before the first blank line."""
    head = raw.lstrip(b"\r\n").split(b"\n", 1)[0]
    return re.match(rb"^[!-9;-~]+:", head) is not None
