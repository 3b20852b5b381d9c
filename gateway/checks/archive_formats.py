"""Archives other than zip (tar, gz, bz2, xz, zst, 7z, rar) listed through libarchive, in memory.

Nothing is extracted to disk. A compressed stream (tar.gz, a lone .gz) must be decompressed to
reach the next header: those bytes are charged to the message's decode budget as they are
produced, and an entry is never skipped when its declared size would overrun that budget, so a
bomb costs at most the budget in time and memory. Only a compression filter and archive format
that libarchive implements itself are enabled: "all" would also run external programs (lrzip,
lzop, grzip) on hostile input.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

import libarchive
import libarchive.ffi as archive_ffi
from libarchive.exception import ArchiveError

from gateway.checks.archive_model import (
    ArchiveLimits,
    Budget,
    Finding,
    Listing,
    Problem,
)


class Kind(StrEnum):
    ZIP = "zip"
    TAR = "tar"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    ZSTD = "zstd"  # Windows 11 opens .tar.zst too
    SEVEN_ZIP = "7z"
    RAR = "rar"


_COMPRESSED = frozenset(
    {Kind.GZIP, Kind.BZIP2, Kind.XZ, Kind.ZSTD}
)  # one stream: tar inside, or one file
_FILTERS = ("gzip", "bzip2", "xz", "lzma", "lzip", "zstd", "compress")
_FORMATS = ("tar", "7zip", "rar", "rar5")
_MAGICS = (
    (b"PK\x03\x04", Kind.ZIP),
    (b"PK\x05\x06", Kind.ZIP),  # an empty zip
    (b"7z\xbc\xaf\x27\x1c", Kind.SEVEN_ZIP),
    (b"Rar!\x1a\x07", Kind.RAR),
    (b"\x1f\x8b", Kind.GZIP),
    (b"BZh", Kind.BZIP2),
    (b"\xfd7zXZ\x00", Kind.XZ),
    (b"\x28\xb5\x2f\xfd", Kind.ZSTD),
)
# Longest first: "x.tar.gz" is a tar in gzip, "x.gz" one gzipped file.
_SUFFIXES = (
    (".tar.gz", Kind.GZIP),
    (".tar.bz2", Kind.BZIP2),
    (".tar.xz", Kind.XZ),
    (".tar.zst", Kind.ZSTD),
    (".tzst", Kind.ZSTD),
    (".tgz", Kind.GZIP),
    (".tbz2", Kind.BZIP2),
    (".tbz", Kind.BZIP2),
    (".txz", Kind.XZ),
    (".zip", Kind.ZIP),
    (".tar", Kind.TAR),
    (".gz", Kind.GZIP),
    (".bz2", Kind.BZIP2),
    (".xz", Kind.XZ),
    (".zst", Kind.ZSTD),
    (".7z", Kind.SEVEN_ZIP),
    (".rar", Kind.RAR),
)
_STRIP_ON_RAW = (".gz", ".bz2", ".xz", ".zst", ".tgz", ".tbz2", ".tbz", ".txz", ".tzst")
HEAD_BYTES = 64 * 1024  # an entry's first bytes, for the content sniffers (PE in a .gz)
_BOMB_MIN_BYTES = 1024 * 1024
_BLOCK_BYTES = 64 * 1024

# libarchive-c logs each ARCHIVE_WARN (e.g. "Pathname can't be converted") at WARNING: one line
# per entry of a hostile archive. The listing reports what matters itself.
logging.getLogger("libarchive").setLevel(logging.ERROR)

# archive_entry_is_encrypted (libarchive >= 3.2): libarchive-c does not wrap it.
_is_encrypted = archive_ffi.libarchive.archive_entry_is_encrypted
_is_encrypted.argtypes = [ctypes.c_void_p]
_is_encrypted.restype = ctypes.c_int

# Lists the archive `data` called `path` at `depth` into the listing (archive.list_archive).
Recurse = Callable[[bytes, str, int, ArchiveLimits, Budget, Listing], None]


def archive_kind(data: bytes, name: str) -> Kind | None:
    """What archive `data` is, by its first bytes, else by its name; None: not an archive."""
    for magic, kind in _MAGICS:
        if data.startswith(magic):
            return kind
    if data[257:262] == b"ustar":
        return Kind.TAR
    lower = name.lower()
    for suffix, kind in _SUFFIXES:
        if lower.endswith(suffix):
            return kind
    return None


@contextmanager
def _reader(data: bytes, raw: bool) -> Iterator[Any]:
    """A libarchive reader over `data` with only the built-in filters and formats enabled."""
    archive_p = archive_ffi.read_new()
    try:
        for name in _FILTERS:
            archive_ffi.get_read_filter_function(name)(archive_p)
        for name in ("raw",) if raw else _FORMATS:
            archive_ffi.get_read_format_function(name)(archive_p)
        buffer = ctypes.create_string_buffer(data, len(data))
        archive_ffi.read_open_memory(archive_p, ctypes.cast(buffer, ctypes.c_void_p), len(data))
        yield libarchive.read.ArchiveRead(archive_p, header_codec="utf-8")
    finally:
        archive_ffi.read_free(archive_p)


def list_other(
    data: bytes,
    path: str,
    kind: Kind,
    depth: int,
    limits: ArchiveLimits,
    budget: Budget,
    out: Listing,
    recurse: Recurse,
) -> None:
    """Every entry of a non-zip archive into `out`, archives inside it through `recurse`."""
    if kind in _COMPRESSED:
        # A tar inside, or one compressed file (libarchive's "raw" format): tar first. Zeros
        # read as an empty tar (its end marker): an empty tar.gz is read as one file too.
        if _list(data, path, depth, limits, budget, out, recurse, kind, raw=False) > 0:
            return
        if _list(data, path, depth, limits, budget, out, recurse, kind, raw=True) >= 0:
            return
    elif _list(data, path, depth, limits, budget, out, recurse, kind, raw=False) >= 0:
        return
    out.findings.append(Finding(Problem.BROKEN, path, f"not a readable {kind} archive"))


def _list(
    data: bytes,
    path: str,
    depth: int,
    limits: ArchiveLimits,
    budget: Budget,
    out: Listing,
    recurse: Recurse,
    kind: Kind,
    raw: bool,
) -> int:
    """-1 when no format recognised `data` (the caller may try it as one compressed file);
    else the entries seen, also when listing stopped early, with its problems in `out`."""
    sniff = kind not in (Kind.SEVEN_ZIP, Kind.RAR)
    walk = _Walk(data, path, depth, limits, budget, out, recurse, sniff)
    try:
        with _reader(data, raw) as archive:
            walk.archive_p = archive._pointer
            try:
                for entry in archive:
                    walk.entries += 1
                    if not walk.entry(entry, _raw_name(path) if raw else None):
                        return walk.entries
                    if raw:  # one file; skipping the rest of it would decompress it unbounded
                        break
                else:
                    walk.charge()
            finally:
                walk.archive_p = None  # freed when the reader closes
    except ArchiveError as exc:
        if walk.entries == 0 and _unrecognised(exc):
            return -1
        # Encrypted headers (rar -hp, 7z -mhe): not even the names can be read.
        problem = Problem.ENCRYPTED if "encrypt" in _why(exc).lower() else Problem.BROKEN
        out.findings.append(Finding(problem, path, _why(exc)))
    except UnicodeDecodeError:
        out.findings.append(Finding(Problem.BROKEN, path, "entry name not UTF-8"))
    return walk.entries


class _Walk:
    """The running state of one archive's listing: what it declared and what it cost."""

    def __init__(
        self,
        data: bytes,
        path: str,
        depth: int,
        limits: ArchiveLimits,
        budget: Budget,
        out: Listing,
        recurse: Recurse,
        sniff: bool,
    ) -> None:
        self.data, self.path, self.depth = data, path, depth
        self.limits, self.budget, self.out, self.recurse = limits, budget, out, recurse
        self.archive_p: Any = None
        self.entries = 0
        self.declared = 0  # bytes all entries declare together
        self.charged = 0  # decompressed stream bytes already taken from the budget
        self.solid_charged = 0  # declared bytes taken from the budget before a 7z/rar read
        self.sniff = sniff  # entries' first bytes are read (not in 7z or rar)

    def _is_stream(self) -> bool:
        """Whether a compression filter (gz, bz2, xz) runs; plain tar, 7z and rar have none
        (their own compression is paid for only for the entries read)."""
        return bool(archive_ffi.filter_count(self.archive_p) > 1)

    def _stream_bytes(self) -> int:
        """Bytes out of the compression filter so far; 0 when there is none."""
        if not self._is_stream():
            return 0
        return int(archive_ffi.filter_bytes(self.archive_p, 0))

    def charge(self) -> bool:
        """Take what the compression filter produced since the last call from the budget;
        False (recorded) past the budget or when the stream inflates like a bomb."""
        produced = self._stream_bytes()
        if not self.budget.take_bytes(produced - self.charged):
            self._limit(self.path, f"decode budget exhausted after {produced} bytes")
            return False
        self.charged = produced
        # Zeros compressed: a bomb, whatever the tar inside (if any) declares.
        ratio = produced / max(len(self.data), 1)
        if produced > _BOMB_MIN_BYTES and ratio > self.limits.max_ratio:
            detail = f"ratio {ratio:.0f} ({len(self.data)} -> {produced} bytes and more)"
            self.out.findings.append(Finding(Problem.BOMB, self.path, detail))
            return False
        return True

    def _limit(self, path: str, detail: str) -> None:
        self.out.findings.append(Finding(Problem.LIMIT, path, detail))

    def entry(self, entry: Any, raw_name: str | None) -> bool:
        """Record one entry; False stops the listing (a limit or a bomb)."""
        if not self.charge():
            return False
        name = raw_name or _entry_name(entry)
        where = f"{self.path}/{name}"
        if self.budget.entries_left <= 0:
            detail = f"more than the {self.budget.entries_limit} entries listed per message"
            self._limit(self.path, detail)
            return False
        self.budget.entries_left -= 1
        self.out.names.append(where)
        if raw_name is not None and (stored := _gzip_stored_name(self.data)):
            self.out.names.append(f"{self.path}/{stored}")  # the name gunzip -N and 7-Zip use
        if _is_encrypted(entry._entry_p):
            self.out.findings.append(Finding(Problem.ENCRYPTED, where, "encrypted entry"))
            return True
        if not entry.isfile:
            return True
        # A lone compressed file declares no size (gzip's ISIZE trailer is the sender's word):
        # _read measures it.
        size = None if raw_name is not None else entry.size
        if size is not None and not self._declared(where, int(size)):
            return False
        if raw_name is not None and not self._trailer_ratio(where):
            return False
        return self._read(entry, where, name, size)

    def _trailer_ratio(self, where: str) -> bool:
        """A gzip bomb by its ISIZE trailer, before inflating it: trusted only to find a bomb
        (a sender who overstates it only gets their own mail refused)."""
        size = _gzip_size(self.data) or 0
        ratio = size / max(len(self.data), 1)
        if size > _BOMB_MIN_BYTES and ratio > self.limits.max_ratio:
            detail = f"ratio {ratio:.0f} ({len(self.data)} -> {size} bytes, gzip trailer)"
            self.out.findings.append(Finding(Problem.BOMB, where, detail))
            return False
        return True

    def _declared(self, where: str, size: int) -> bool:
        self.declared += size
        if self.declared > self.limits.max_inflated_bytes:
            detail = f"{self.entries} entries declare {self.declared} bytes from {len(self.data)}"
            self.out.findings.append(Finding(Problem.BOMB, self.path, detail))
            return False
        ratio = size / max(len(self.data), 1)
        if size > _BOMB_MIN_BYTES and ratio > self.limits.max_ratio:
            detail = f"ratio {ratio:.0f} ({len(self.data)} -> {size} bytes)"
            self.out.findings.append(Finding(Problem.BOMB, where, detail))
            return False
        scan_max = self.limits.max_scan_file_bytes
        if scan_max is not None and size > scan_max:
            detail = f"{size} bytes, more than the virus scanner's max_file_bytes {scan_max}"
            self.out.findings.append(Finding(Problem.UNSCANNABLE, where, detail))
        # Skipping it decompresses it: never past the budget.
        if self._is_stream() and size > self.budget.bytes_left:
            self._limit(where, f"{size} bytes to decompress, past the decode budget")
            return False
        return True

    def _read(self, entry: Any, where: str, name: str, size: int | None) -> bool:
        """The entry's first bytes for the sniffers, or all of it when it is an archive.
        A tar entry or a compressed stream costs no more to read than to skip; in a 7z or
        rar (solid: reading one entry decompresses the ones before it) only an entry named
        as an archive is read, charged with everything declared before it."""
        named_archive = archive_kind(b"", name) is not None
        if not self.sniff and not named_archive:
            return True
        if not self.sniff and not self.budget.take_bytes(self.declared - self.solid_charged):
            self._limit(where, "decode budget exhausted")
            return False
        self.solid_charged = self.declared
        stream = self._is_stream()
        nested_max = self.limits.max_nested_bytes
        head = bytearray()
        total = 0
        for block in entry.get_blocks(_BLOCK_BYTES):
            total += len(block)
            if len(head) <= nested_max:
                head += block
            if stream and not self.charge():
                return False
            if not stream and not self.budget.take_bytes(len(block)):
                self._limit(where, "decode budget exhausted")
                return False
            scan_max = self.limits.max_scan_file_bytes
            if size is None and scan_max is not None and total <= scan_max:
                continue  # a lone compressed file: measured up to what the scanner scans
            if total >= HEAD_BYTES and archive_kind(bytes(head[:HEAD_BYTES]), name) is None:
                break
            if total > nested_max:
                break
        data = bytes(head)
        self.out.heads.append((where, data[:HEAD_BYTES]))
        if size is None and not self._declared(where, total):
            return False
        if archive_kind(data, name) is None:
            return True
        if self.depth >= self.limits.max_depth:
            self._limit(where, f"nested deeper than {self.depth}")
            return True
        if total > nested_max:
            self._limit(where, f"more than {nested_max} bytes to list")
            return True
        self.recurse(data, where, self.depth + 1, self.limits, self.budget, self.out)
        return True


def _entry_name(entry: Any) -> str:
    """libarchive-c gives bytes for a name it cannot decode (Latin-1 in an old tar): decoded
    here with replacement, so "\xe9t\xe9.exe" still ends in ".exe"."""
    name = entry.pathname
    if isinstance(name, bytes):
        return name.decode("utf-8", errors="replace")
    return str(name) if name is not None else ""


def _raw_name(path: str) -> str:
    """The name of the one file in "invoice.exe.gz": "invoice.exe"."""
    base = path.rsplit("/", 1)[-1]
    lower = base.lower()
    for suffix in _STRIP_ON_RAW:
        if lower.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return "data"


def _gzip_stored_name(data: bytes) -> str:
    """The original file name a gzip header may carry (FNAME), "" without one."""
    if data[:3] != b"\x1f\x8b\x08" or not data[3] & 0x08 or len(data) < 10:
        return ""
    start = 10
    if data[3] & 0x04:  # FEXTRA: a 2-byte length, then that many bytes
        start += 2 + int.from_bytes(data[10:12], "little")
    end = data.find(b"\0", start, start + 1024)
    if end < 0:
        return ""
    stored = data[start:end].decode("latin-1")  # RFC 1952: ISO 8859-1
    return stored.replace("\\", "/").rsplit("/", 1)[-1]


def _gzip_size(data: bytes) -> int | None:
    """A lone gzip member's ISIZE trailer: its size mod 2**32, as gzip -l reads it."""
    if data[:2] != b"\x1f\x8b" or len(data) < 18:
        return None
    return int.from_bytes(data[-4:], "little")


def _unrecognised(exc: ArchiveError) -> bool:
    return "Unrecognized archive format" in str(exc.msg)


def _why(exc: ArchiveError) -> str:
    msg = exc.msg if isinstance(exc.msg, str) else repr(exc.msg)
    return str(msg)[:100]
