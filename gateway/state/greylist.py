"""Greylisting state: which (client network, sender, recipient) triplets were seen, which have
passed, and how often each client network got mail through.

`GreylistStore` is what the greylist step needs; `SqliteGreylistStore` keeps it in one SQLite
file under `[storage] dir`, safe across the worker processes of one host (WAL, one short
IMMEDIATE transaction per decision). A Redis store (issue 24) implements the same Protocol so
that a retry landing on another MX host passes.
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
class GreylistTimes:
    min_delay_s: float  # a retry earlier than this after first sight is deferred again
    window_s: float  # a retry later than this after first sight starts over
    pass_ttl_s: float  # how long a triplet that passed is remembered (renewed on each pass)
    auto_allow_after: int  # passes of a client network after which it is not delayed; 0 = never


@dataclass(frozen=True)
class GreylistDecision:
    passed: bool
    retry_in_s: float = 0.0  # when deferred: how long until a retry can pass
    new_triplets: int = 0  # triplets seen for the first time (or again after their window)
    auto_allowed: bool = False  # passed because the client network is known good


class GreylistStore(Protocol):
    def decide(
        self, network: str, sender: str, recipients: Sequence[str], now: float
    ) -> GreylistDecision:
        """Record this attempt and say whether it passes, atomically for all recipients."""

    def close(self) -> None: ...


class GreylistStateError(StateError):
    """The greylist state could not be read or written."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS triplets (
    network TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    first_seen REAL NOT NULL,
    passed_at REAL,              -- NULL until a retry came after min_delay_s
    expires_at REAL NOT NULL,
    PRIMARY KEY (network, sender, recipient)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS triplets_expiry ON triplets (expires_at);
CREATE TABLE IF NOT EXISTS networks (
    network TEXT PRIMARY KEY,
    passes INTEGER NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
"""


class SqliteGreylistStore:
    """The embedded store: one SQLite file, shared by the worker processes through WAL."""

    def __init__(self, path: Path, times: GreylistTimes) -> None:
        self.path = path
        self.times = times
        self._lock = threading.Lock()  # one connection per process, used from worker threads
        self._next_prune = 0.0
        try:
            self._db = open_shared(path, _SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise GreylistStateError(f"greylist state {path}: {exc}") from None

    def decide(
        self, network: str, sender: str, recipients: Sequence[str], now: float
    ) -> GreylistDecision:
        try:
            with immediate(self._db, self._lock):
                decision = self._decide(network, sender, recipients, now)
                if now >= self._next_prune:
                    self._prune(now)
        except sqlite3.Error as exc:
            raise GreylistStateError(f"greylist state {self.path}: {exc}") from None
        return decision

    def _decide(
        self, network: str, sender: str, recipients: Sequence[str], now: float
    ) -> GreylistDecision:
        t, db = self.times, self._db
        row = db.execute(
            "SELECT passes FROM networks WHERE network = ? AND expires_at >= ?", (network, now)
        ).fetchone()
        if t.auto_allow_after > 0 and row is not None and row[0] >= t.auto_allow_after:
            self._count_pass(network, now)
            return GreylistDecision(True, auto_allowed=True)
        retry_in_s, new = 0.0, 0
        for rcpt in recipients:
            key = (network, sender, rcpt)
            found = db.execute(
                "SELECT first_seen, passed_at FROM triplets"
                " WHERE network = ? AND sender = ? AND recipient = ? AND expires_at >= ?",
                (*key, now),
            ).fetchone()
            if found is None:  # first sight, or seen so long ago that it starts over
                db.execute(
                    "INSERT OR REPLACE INTO triplets VALUES (?, ?, ?, ?, NULL, ?)",
                    (*key, now, now + t.window_s),
                )
                retry_in_s, new = max(retry_in_s, t.min_delay_s), new + 1
            elif found[1] is not None or now - found[0] >= t.min_delay_s:
                # Passed before, or a retry after the delay: remembered pass_ttl_s from now.
                db.execute(
                    "UPDATE triplets SET passed_at = ?, expires_at = ?"
                    " WHERE network = ? AND sender = ? AND recipient = ?",
                    (found[1] if found[1] is not None else now, now + t.pass_ttl_s, *key),
                )
            else:  # retried too early: the first sight stands
                retry_in_s = max(retry_in_s, found[0] + t.min_delay_s - now)
        if retry_in_s > 0 or new:  # first sight is always deferred, even with min_delay_s = 0
            return GreylistDecision(False, round(retry_in_s, 3), new)
        self._count_pass(network, now)
        return GreylistDecision(True)

    def _count_pass(self, network: str, now: float) -> None:
        self._db.execute(
            "INSERT INTO networks VALUES (?, 1, ?) ON CONFLICT (network) DO UPDATE SET"
            " passes = CASE WHEN expires_at >= ? THEN passes + 1 ELSE 1 END,"
            " expires_at = excluded.expires_at",
            (network, now + self.times.pass_ttl_s, now),
        )

    def _prune(self, now: float) -> None:
        self._db.execute("DELETE FROM triplets WHERE expires_at < ?", (now,))
        self._db.execute("DELETE FROM networks WHERE expires_at < ?", (now,))
        self._next_prune = now + PRUNE_INTERVAL_S

    def close(self) -> None:
        with self._lock:
            self._db.close()
