"""Archives listed, never extracted: zip here, names from the central directory, within hard
bounds; tar, gz, bz2, xz, 7z and rar through libarchive (gateway.checks.archive_formats).

Only an archive inside an archive is inflated (to list it), and only within the shared byte
budget, so no zip bomb (huge ratio, many entries, deep nesting) can stall the gateway. Zip
keeps its own reader: its central directory gives every entry's sizes, ratio and encryption
flag without inflating anything (libarchive's zip reader walks the local headers instead).
"""

from __future__ import annotations

import io
import lzma
import struct
import zipfile
import zlib

from gateway.checks.archive_formats import Kind, archive_kind, list_other
from gateway.checks.archive_model import (
    ArchiveLimits,
    Budget,
    Finding,
    Listing,
    Problem,
)

__all__ = [
    "ArchiveLimits",
    "Budget",
    "Finding",
    "Kind",
    "Listing",
    "Problem",
    "archive_kind",
    "is_zip",
    "list_archive",
    "list_zip",
]

ZIP_MAGIC = b"PK\x03\x04"
_EOCD_MAGIC = b"PK\x05\x06"
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_EOCD_SEARCH_BYTES = _EOCD.size + 0xFFFF  # the record plus the longest archive comment
_CENTRAL_MAGIC = b"PK\x01\x02"
_BOMB_MIN_BYTES = 1024 * 1024  # small files compress well legitimately (text, zeros)


def is_zip(data: bytes, name: str) -> bool:
    return data[:4] == ZIP_MAGIC or name.lower().endswith(".zip")


def list_zip(data: bytes, path: str, limits: ArchiveLimits, budget: Budget) -> Listing:
    """Every entry name in `data` (a zip called `path`) and in archives nested within it."""
    listing = Listing()
    _list_zip(data, path, 1, limits, budget, listing)
    return listing


def list_archive(
    data: bytes, path: str, kind: Kind, limits: ArchiveLimits, budget: Budget
) -> Listing:
    """Every entry name in `data` (an archive of `kind` called `path`) and in archives nested
    within it, with the first bytes of entries read on the way (for the content sniffers)."""
    listing = Listing()
    _list_kind(data, path, kind, 1, limits, budget, listing)
    return listing


def _list_kind(
    data: bytes,
    path: str,
    kind: Kind,
    depth: int,
    limits: ArchiveLimits,
    budget: Budget,
    out: Listing,
) -> None:
    if kind == Kind.ZIP:
        _list_zip(data, path, depth, limits, budget, out)
    else:
        list_other(data, path, kind, depth, limits, budget, out, _nested)


def _nested(
    data: bytes, path: str, depth: int, limits: ArchiveLimits, budget: Budget, out: Listing
) -> None:
    """An archive found inside another: listed by what its bytes (or name) say it is."""
    kind = archive_kind(data, path)
    if kind is not None:
        _list_kind(data, path, kind, depth, limits, budget, out)


def _list_zip(
    data: bytes, path: str, depth: int, limits: ArchiveLimits, budget: Budget, out: Listing
) -> None:
    declared = _declared_entries(data)
    if declared is None:
        out.findings.append(Finding(Problem.BROKEN, path, "no zip central directory"))
        return
    if declared > budget.entries_left:
        out.findings.append(Finding(Problem.LIMIT, path, _entries_past_budget(declared, budget)))
        return
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError, struct.error) as exc:
        out.findings.append(Finding(Problem.BROKEN, path, str(exc)[:100]))
        return
    with archive:
        entries = archive.infolist()
        if len(entries) > budget.entries_left:
            # The end record said fewer: a directory that lies about its size is listed no
            # further than the limit, and the archive is held like any over the limit.
            detail = f"{len(entries)} entries, {declared} declared"
            out.findings.append(Finding(Problem.LIMIT, path, detail))
            entries = entries[: budget.entries_left]
        budget.entries_left -= len(entries)
        # Entries that overlap one another (a "flat" bomb) each stay near deflate's ratio;
        # together they declare gigabytes.
        inflated = sum(entry.file_size for entry in entries)
        if inflated > limits.max_inflated_bytes:
            detail = f"{len(entries)} entries declare {inflated} bytes from {len(data)}"
            out.findings.append(Finding(Problem.BOMB, path, detail))
            return
        for entry in entries:
            _entry(archive, entry, f"{path}/{entry.filename}", depth, limits, budget, out)


def _entries_past_budget(declared: int, budget: Budget) -> str:
    if budget.entries_left == budget.entries_limit:
        return f"about {declared} entries, more than the {budget.entries_limit} listed per message"
    return (
        f"about {declared} entries, and only {budget.entries_left} of the "
        f"{budget.entries_limit} listed per message were left"
    )


def _entry(
    archive: zipfile.ZipFile,
    entry: zipfile.ZipInfo,
    path: str,
    depth: int,
    limits: ArchiveLimits,
    budget: Budget,
    out: Listing,
) -> None:
    out.names.append(path)
    ratio = entry.file_size / max(entry.compress_size, 1)
    if entry.file_size > _BOMB_MIN_BYTES and ratio > limits.max_ratio:
        detail = f"ratio {ratio:.0f} ({entry.compress_size} -> {entry.file_size} bytes)"
        out.findings.append(Finding(Problem.BOMB, path, detail))
        return
    scan_max = limits.max_scan_file_bytes
    if scan_max is not None and entry.file_size > scan_max:
        detail = f"{entry.file_size} bytes, more than the virus scanner's max_file_bytes {scan_max}"
        out.findings.append(Finding(Problem.UNSCANNABLE, path, detail))
    if entry.flag_bits & 0x1:
        out.findings.append(Finding(Problem.ENCRYPTED, path, "encrypted entry"))
        return
    if archive_kind(b"", entry.filename) is None:
        return
    if depth >= limits.max_depth:
        out.findings.append(Finding(Problem.LIMIT, path, f"nested deeper than {depth}"))
        return
    if entry.file_size > limits.max_nested_bytes or not budget.take_bytes(entry.file_size):
        out.findings.append(Finding(Problem.LIMIT, path, f"{entry.file_size} bytes to inflate"))
        return
    try:
        with archive.open(entry) as handle:
            inner = handle.read(entry.file_size)  # the reader stops at the declared size too
    # OSError: bz2's "Invalid data stream"; LZMAError: a corrupt lzma member. A member that
    # cannot be read is a broken archive, not a failed check (which defers the message).
    except (
        zipfile.BadZipFile,
        zlib.error,
        lzma.LZMAError,
        OSError,
        NotImplementedError,
        EOFError,
        ValueError,
    ) as exc:
        out.findings.append(Finding(Problem.BROKEN, path, str(exc)[:100]))
        return
    _nested(inner, path, depth + 1, limits, budget, out)


def _declared_entries(data: bytes) -> int | None:
    """An upper bound on the entry count, read before zipfile parses (and pays for) them all."""
    start = data.rfind(_EOCD_MAGIC, max(0, len(data) - _EOCD_SEARCH_BYTES))
    if start < 0 or len(data) - start < _EOCD.size:
        return None
    fields = _EOCD.unpack_from(data, start)
    total_entries, directory_bytes = fields[4], fields[5]
    # The count may understate (1 declared, 380,000 in the directory: zipfile read them all,
    # 2.4 s and 450 MB) or be Zip64's 0xFFFF: the entry signatures in the directory, which
    # ends where this record starts, are counted too (in C, at memory speed).
    if directory_bytes == 0xFFFFFFFF or directory_bytes > start:
        directory_start = 0
    else:
        directory_start = start - int(directory_bytes)
    in_directory = data.count(_CENTRAL_MAGIC, directory_start, start)
    if total_entries == 0xFFFF:
        return in_directory
    return max(int(total_entries), in_directory)
