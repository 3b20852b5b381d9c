"""Recipients the internal server confirmed, kept on disk: what RCPT falls back on while that
server cannot answer (an Exchange patch night), across restarts and shared by all workers.

Only positive answers are kept ("this mailbox existed when we last asked"); a later "no such
user" removes the address. One small SQLite file under [storage] dir (WAL; every worker opens
it). A failure of this file never fails an RCPT: it is logged and the answer is "not known".
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from pathlib import Path

from gateway.files import PRIVATE_FILE_MODE, private_file

log = logging.getLogger(__name__)

KNOWN_RECIPIENTS_FILE = "verify.sqlite"
BUSY_TIMEOUT_S = 5.0


class KnownRecipients:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        private_file(path)
        for suffix in ("-wal", "-shm"):  # SQLite gives them the database file's mode
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{path}{suffix}", PRIVATE_FILE_MODE)
        self._conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        # A lost last write costs one probe after a power cut, not a message: no fsync per row.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS known (address TEXT PRIMARY KEY, verified_at REAL NOT NULL)"
        )

    def remember(self, address: str, now: float) -> None:
        self._write(
            "INSERT INTO known (address, verified_at) VALUES (?, ?) "
            "ON CONFLICT(address) DO UPDATE SET verified_at = excluded.verified_at",
            (address, now),
        )

    def forget(self, address: str) -> None:
        self._write("DELETE FROM known WHERE address = ?", (address,))

    def verified_since(self, address: str, since: float) -> float | None:
        """When `address` was last confirmed, if at or after `since`; else None."""
        try:
            with self._lock:
                row = self._conn.execute(
                    "SELECT verified_at FROM known WHERE address = ?", (address,)
                ).fetchone()
        except sqlite3.Error as exc:
            log.warning("verify: known recipients %s unreadable: %s", self.path, exc)
            return None
        if row is None or row[0] < since:
            return None
        return float(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(self, sql: str, args: tuple[object, ...]) -> int:
        try:
            with self._lock:
                return self._conn.execute(sql, args).rowcount
        except sqlite3.Error as exc:
            log.warning("verify: known recipients %s not updated: %s", self.path, exc)
            return 0
