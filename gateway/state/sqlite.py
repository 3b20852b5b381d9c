"""The embedded state's SQLite file, shared by the worker processes of one host: opened one way
and written one way (an immediate transaction, so two workers never decide on the same row at
once), by the greylist and the rate-limit stores alike."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.state.keys import BUSY_TIMEOUT_MS


def open_shared(path: Path, schema: str) -> sqlite3.Connection:
    """`path` opened in WAL mode with `schema` applied; raises sqlite3.Error or OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    db.execute("PRAGMA journal_mode=WAL")
    # A power cut forgets the last seconds of state (one more deferral, some counts), never
    # mail: no fsync per decision.
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db


@contextmanager
def immediate(db: sqlite3.Connection, lock: threading.Lock) -> Iterator[None]:
    """One decision: this process's threads in turn (`lock`: one connection per process), the
    other processes held off by BEGIN IMMEDIATE; committed, or rolled back on any error."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
