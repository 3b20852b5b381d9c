"""What archive listing reports and what bounds it: shared by the zip and libarchive paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Problem(StrEnum):
    BOMB = "bomb"  # compression ratio beyond reason
    LIMIT = "limit"  # depth, entry or byte budget reached: listing incomplete
    ENCRYPTED = "encrypted"
    BROKEN = "broken"
    UNSCANNABLE = "unscannable"  # larger than the virus scanner looks into


@dataclass(frozen=True, slots=True)
class Finding:
    problem: Problem
    path: str
    detail: str


@dataclass(slots=True)
class Budget:
    """What one message may still cost: inflated/decoded bytes and archive entries listed."""

    bytes_left: int
    entries_left: int
    entries_limit: int = field(init=False)  # what entries_left started at, for reasons

    def __post_init__(self) -> None:
        self.entries_limit = self.entries_left

    def take_bytes(self, count: int) -> bool:
        if count > self.bytes_left:
            return False
        self.bytes_left -= count
        return True


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_depth: int
    max_nested_bytes: int
    max_ratio: float
    max_inflated_bytes: int  # all entries of one archive, as their headers declare them
    # Entries larger than the virus scanner scans ([checks.antivirus] max_file_bytes, clamd's
    # MaxFileSize): UNSCANNABLE. None when no scanner runs.
    max_scan_file_bytes: int | None = None


@dataclass(slots=True)
class Listing:
    names: list[str] = field(default_factory=list)  # full paths: "a.zip/b.zip/evil.exe"
    findings: list[Finding] = field(default_factory=list)
    heads: list[tuple[str, bytes]] = field(default_factory=list)  # (path, first bytes) to sniff
