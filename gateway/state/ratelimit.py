"""Rate-limit counters: token buckets, taken all or nothing in one atomic decision.

A bucket holds up to `capacity` tokens and refills at capacity / window_s per second, so a
limit "max N per window_s" lets a burst of N through and then N per window_s (a sliding
limit, without the edge doubling of fixed windows). `RateLimitStore` is what the check needs;
`SqliteRateLimitStore` keeps the buckets in one SQLite file under `[storage] dir`, shared by
the worker processes of one host (WAL, one IMMEDIATE transaction per decision). A Redis store
(issue 24) would implement the same Protocol with one Lua script per decision.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.state.keys import PRUNE_INTERVAL_S, StateError
from gateway.state.sqlite import immediate, open_shared


@dataclass(frozen=True)
class Take:
    key: str  # limit name and the value it counts, e.g. "per_sender|a@b.test"
    capacity: float
    window_s: float
    cost: float = 1.0


class RateLimitStateError(StateError):
    """The rate-limit state could not be read or written."""


class RateLimitStore(Protocol):
    def take(self, takes: Sequence[Take], now: float) -> int | None:
        """Take every cost, or none when one bucket lacks it: the index of that one."""

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    key TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    updated_at REAL NOT NULL,
    full_at REAL NOT NULL        -- when the bucket is full again: the row can go
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS buckets_full ON buckets (full_at);
"""


class SqliteRateLimitStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._next_prune = 0.0
        try:
            self._db = open_shared(path, _SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise RateLimitStateError(f"rate-limit state {path}: {exc}") from None

    def take(self, takes: Sequence[Take], now: float) -> int | None:
        if not takes:
            return None
        try:
            # A denied take writes nothing (`_take` updates only when every bucket allows).
            with immediate(self._db, self._lock):
                denied = self._take(takes, now)
                if now >= self._next_prune:
                    self._db.execute("DELETE FROM buckets WHERE full_at < ?", (now,))
                    self._next_prune = now + PRUNE_INTERVAL_S
        except sqlite3.Error as exc:
            raise RateLimitStateError(f"rate-limit state {self.path}: {exc}") from None
        return denied

    def _take(self, takes: Sequence[Take], now: float) -> int | None:
        updates = []
        for index, t in enumerate(takes):
            rate = t.capacity / t.window_s
            row = self._db.execute(
                "SELECT tokens, updated_at FROM buckets WHERE key = ?", (t.key,)
            ).fetchone()
            tokens = t.capacity if row is None else min(t.capacity, row[0] + (now - row[1]) * rate)
            if tokens < t.cost:
                return index
            left = tokens - t.cost
            updates.append((t.key, left, now, now + (t.capacity - left) / rate))
        self._db.executemany("INSERT OR REPLACE INTO buckets VALUES (?, ?, ?, ?)", updates)
        return None

    def close(self) -> None:
        with self._lock:
            self._db.close()
