"""The embedded quarantine store: raw messages as files, their metadata in an SQLite index.

Layout under `root`: `index.sqlite3` (WAL, shared by the gateway and CLI processes) and
`messages/<last two id chars>/<id>.eml`. A message file is fsynced before its index row is
committed, so every row points at a complete file; a crash in between leaves only an orphan
file, which `expire()` removes once it is older than the retention.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from gateway.content import decode_header_value, parse_headers
from gateway.errors import (
    QuarantineCorrupt,
    QuarantineError,
    QuarantineFull,
    QuarantineMissing,
    QuarantineNotFound,
)
from gateway.files import PRIVATE_FILE_MODE, private_dir, private_file, write_durably
from gateway.model import ScoredSymbol, Transaction, Verdict, new_id

INDEX_FILE = "index.sqlite3"
MESSAGES_DIR = "messages"
SCHEMA_VERSION = 1
# A release claim older than this belongs to a process that died mid-release; it may be retaken.
STALE_CLAIM_S = 600.0


def _claim_is_fresh(state: object, claimed_at: object, now: float) -> bool:
    """A release is under way and its claim is not old enough to be retaken (one test for
    release and delete; expire runs the same one in SQL)."""
    if state != State.RELEASING or isinstance(claimed_at, bool):
        return False
    return isinstance(claimed_at, int | float) and claimed_at > now - STALE_CLAIM_S


_ID_PATTERN = re.compile(r"[0-9a-z]{8,64}")
_MAX_HEADER_CHARS = 998  # RFC 5322 line limit: enough for any honest From or Subject
_SQL_CHUNK = 500  # ids per IN (...) query, well below SQLite's variable limit

_SCHEMA = """
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    received_at REAL NOT NULL,
    client_ip TEXT NOT NULL,
    helo TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt_tos TEXT NOT NULL,            -- JSON array of addresses
    header_from TEXT NOT NULL,
    subject TEXT NOT NULL,
    size INTEGER NOT NULL,
    score REAL NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'held',
    claimed_at REAL,
    release_id TEXT NOT NULL DEFAULT '',
    released_at REAL
);
CREATE INDEX messages_received_at ON messages(received_at);
CREATE TABLE symbols (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    score REAL NOT NULL,
    reason TEXT NOT NULL,
    check_name TEXT NOT NULL,
    PRIMARY KEY (message_id, position)
) WITHOUT ROWID;
CREATE INDEX symbols_name ON symbols(name, message_id);
"""

_MESSAGE_COLUMNS = (
    "id, received_at, client_ip, helo, mail_from, rcpt_tos, header_from, subject, size, score, "
    "action, reason, state, claimed_at, release_id, released_at"
)


class State(StrEnum):
    HELD = "held"
    RELEASING = "releasing"  # claimed by one release; nobody else may release or delete it
    RELEASED = "released"  # (being) handed to the queue; kept for review until it expires


@dataclass(frozen=True)
class Entry:
    """One quarantined message's metadata. `problem` is set when its message file is missing."""

    id: str
    received_at: float
    client_ip: str
    helo: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    header_from: str
    subject: str
    size: int
    score: float
    action: str
    reason: str
    state: State
    symbols: tuple[ScoredSymbol, ...]
    claimed_at: float | None = None
    release_id: str = ""
    released_at: float | None = None
    problem: str = ""


@dataclass(frozen=True)
class CorruptEntry:
    """An index row that could not be read; listed with its problem instead of crashing."""

    id: str
    problem: str


@dataclass(frozen=True)
class Filter:
    """Which entries `list` returns, newest first. Text filters are case-insensitive substrings."""

    since: float | None = None
    rcpt: str | None = None
    sender: str | None = None  # envelope sender or header From
    min_score: float | None = None
    symbol: str | None = None
    states: tuple[State, ...] = (State.HELD,)  # (): any state, even a corrupt one
    limit: int | None = 50  # None: all matches


@dataclass(frozen=True)
class ExpireResult:
    entries: int
    orphan_files: int


def valid_id(qid: str) -> bool:
    """Quarantine ids are transaction ids; anything else (paths, globs) is refused."""
    return _ID_PATTERN.fullmatch(qid) is not None


INIT_LOCK_FILE = "init.lock"


class QuarantineStore:
    """Held messages and why they were held. Safe for several threads and processes at once."""

    def __init__(
        self,
        root: Path,
        *,
        create: bool = True,
        busy_timeout_s: float = 10.0,
        max_bytes: int = 0,
        max_messages: int = 0,
    ) -> None:
        self.root = root
        self.max_bytes, self.max_messages = max_bytes, max_messages  # 0 = no limit
        self.index_path = root / INDEX_FILE
        self.busy_timeout_s = busy_timeout_s
        self._messages_dir = str(root / MESSAGES_DIR)
        self._lock = threading.Lock()
        if create:
            private_dir(root)
            private_dir(root / MESSAGES_DIR)
        elif not self.index_path.is_file():
            raise QuarantineMissing(
                f"no quarantine store at {root} "
                "(nothing quarantined yet, or [storage] dir is wrong)"
            )
        mode = "rwc" if create else "rw"
        # Setting WAL mode and creating the schema take locks for which SQLite does not wait:
        # worker processes starting together take turns here instead of failing "locked".
        with self._sql_errors(), _init_lock(root, create, busy_timeout_s):
            if create:
                _make_index_private(self.index_path)
            self._conn = sqlite3.connect(
                f"file:{self.index_path}?mode={mode}",
                uri=True,
                timeout=busy_timeout_s,
                isolation_level=None,  # explicit BEGIN IMMEDIATE below
                check_same_thread=False,  # guarded by self._lock
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")  # a committed row survives power loss
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._ensure_schema(create)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- writing ---------------------------------------------------------------------------

    def add(self, tx: Transaction, verdict: Verdict, data: bytes) -> str:
        """Blocking and durable (message file fsynced + index row committed) before it returns;
        returns the quarantine id (the transaction id)."""
        qid = tx.id
        if not valid_id(qid):
            raise QuarantineError(f"invalid quarantine id {qid!r}")
        header_from, subject = _summary_headers(data)
        path = self.message_path(qid)
        self._write_new_file(path, data)
        row = (
            qid,
            time.time(),
            tx.connection.client_ip,
            tx.connection.helo,
            tx.envelope.mail_from,
            json.dumps(list(tx.envelope.rcpt_tos)),
            header_from,
            subject,
            len(data),
            verdict.score,
            verdict.action.value,
            verdict.reason,
        )
        symbols = [
            (qid, position, s.name, s.score, s.reason, s.check)
            for position, s in enumerate(verdict.symbols)
        ]
        try:
            with self._transaction() as conn:
                self._check_room(conn, len(data))
                conn.execute(
                    "INSERT INTO messages (id, received_at, client_ip, helo, mail_from, rcpt_tos,"
                    " header_from, subject, size, score, action, reason)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                conn.executemany("INSERT INTO symbols VALUES (?, ?, ?, ?, ?, ?)", symbols)
        except QuarantineError:
            path.unlink(missing_ok=True)  # no row points at it: do not leave an orphan behind
            raise
        return qid

    def _check_room(self, conn: sqlite3.Connection, size: int) -> None:
        """QuarantineFull if holding `size` more bytes passes a limit. Inside the insert's
        write transaction, so processes adding at once cannot pass it together."""
        if not self.max_bytes and not self.max_messages:
            return
        count, total = conn.execute(
            "SELECT COUNT(*), TOTAL(size) FROM messages WHERE state != ?",
            (State.RELEASED.value,),
        ).fetchone()
        if self.max_messages and count + 1 > self.max_messages:
            raise QuarantineFull(f"quarantine full: {count} messages (max_messages)")
        if self.max_bytes and total + size > self.max_bytes:
            raise QuarantineFull(
                f"quarantine full: {int(total)} + {size} bytes over max_bytes {self.max_bytes}"
            )

    def held_count(self) -> int:
        """Messages held now (not released): the metrics' quarantine gauge."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM messages WHERE state != ?", (State.RELEASED.value,)
            ).fetchone()
        return int(row[0])

    def claim_release(self, qid: str, now: float | None = None) -> Entry:
        """Mark a held entry as being released, exactly once across processes.

        Returns the entry with its `release_id` (the queue id to use). Raises if another
        release holds a fresh claim or the entry was already released.
        """
        now = time.time() if now is None else now
        with self._transaction() as conn:
            entry = self._get_in(conn, qid)
            if entry.state == State.RELEASED:
                raise QuarantineError(
                    f"{qid} was already released at {_utc(entry.released_at)} "
                    f"(queue id {entry.release_id})"
                )
            if _claim_is_fresh(entry.state, entry.claimed_at, now):
                raise QuarantineError(
                    f"{qid} is being released by another process since {_utc(entry.claimed_at)}"
                )
            # A stale claim keeps its queue id, so a retry re-uses it rather than inventing one.
            release_id = entry.release_id or new_id()
            conn.execute(
                "UPDATE messages SET state = ?, claimed_at = ?, release_id = ? WHERE id = ?",
                (State.RELEASING.value, now, release_id, qid),
            )
        return replace(entry, state=State.RELEASING, claimed_at=now, release_id=release_id)

    def mark_released(self, entry: Entry, now: float | None = None) -> None:
        """Record, before the message is queued, that this claim hands it to the queue.

        Only the current claim can do it (a claim retaken as stale has a new `claimed_at`), and
        only once: from then on no release queues the message again, even after it has been
        delivered and is no longer in the queue to be found."""
        now = time.time() if now is None else now
        with self._transaction() as conn:
            updated = conn.execute(
                "UPDATE messages SET state = ?, released_at = ? WHERE id = ? AND state = ?"
                " AND release_id = ? AND claimed_at = ?",
                (
                    State.RELEASED.value,
                    now,
                    entry.id,
                    State.RELEASING.value,
                    entry.release_id,
                    entry.claimed_at,
                ),
            ).rowcount
        if updated != 1:
            raise QuarantineError(
                f"{entry.id}: the release claim was taken over by another process "
                "(or the message deleted); not queued here"
            )

    def abandon_release(self, entry: Entry) -> None:
        """Give a claim back (before queueing, or the queue refused the message): the entry is
        held again. Only this claim's own marks are undone."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE messages SET state = ?, claimed_at = NULL, released_at = NULL"
                " WHERE id = ? AND state IN (?, ?) AND release_id = ? AND claimed_at = ?",
                (
                    State.HELD.value,
                    entry.id,
                    State.RELEASING.value,
                    State.RELEASED.value,
                    entry.release_id,
                    entry.claimed_at,
                ),
            )

    def delete(self, qid: str, now: float | None = None) -> None:
        """Remove an entry and its message file. Refused while a release holds a fresh claim."""
        now = time.time() if now is None else now
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT state, claimed_at FROM messages WHERE id = ?", (qid,)
            ).fetchone()
            if row is None:
                raise QuarantineNotFound(f"{qid}: no such quarantined message")
            state, claimed_at = row
            if _claim_is_fresh(state, claimed_at, now):
                raise QuarantineError(f"{qid} is being released right now; not deleted")
            conn.execute("DELETE FROM messages WHERE id = ?", (qid,))
        self._unlink(qid)

    def expire(self, retention_days: float, now: float | None = None) -> ExpireResult:
        """Remove entries older than the retention, and message files no row points at."""
        now = time.time() if now is None else now
        cutoff = now - retention_days * 86400.0
        removed = 0
        while True:  # bounded: each round removes up to _SQL_CHUNK rows for good
            with self._transaction() as conn:
                ids = [
                    r[0]
                    for r in conn.execute(
                        # A release in progress finishes first; the next run expires it.
                        "SELECT id FROM messages WHERE received_at < ?"
                        " AND NOT (state = ? AND claimed_at > ?) LIMIT ?",
                        (cutoff, State.RELEASING.value, now - STALE_CLAIM_S, _SQL_CHUNK),
                    )
                ]
                conn.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in ids])
            for qid in ids:
                self._unlink(qid)
            removed += len(ids)
            if len(ids) < _SQL_CHUNK:
                break
        return ExpireResult(removed, self._remove_orphans(cutoff))

    # -- reading ---------------------------------------------------------------------------

    def get(self, qid: str) -> Entry:
        with self._read() as conn:
            return self._get_in(conn, qid)

    def find(self, flt: Filter) -> list[Entry | CorruptEntry]:
        """Matching entries, newest first. Unreadable rows come back as CorruptEntry."""
        where, params = _where(flt)
        sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages{where} ORDER BY received_at DESC, id DESC"
        if flt.limit is not None:
            sql += " LIMIT ?"
            params.append(flt.limit)
        with self._read() as conn:
            rows = conn.execute(sql, params).fetchall()
            symbols = self._symbols_for(conn, [r[0] for r in rows])
        return [self._entry(row, symbols.get(row[0], [])) for row in rows]

    def read_message(self, qid: str) -> bytes:
        """The raw message exactly as it was received."""
        if not valid_id(qid):
            raise QuarantineNotFound(f"{qid!r} is not a quarantine id")
        try:
            return self.message_path(qid).read_bytes()
        except FileNotFoundError:
            self.get(qid)  # raises NotFound when there is no entry at all
            raise QuarantineCorrupt(
                f"{qid}: message file {self.message_path(qid)} is missing"
            ) from None
        except OSError as exc:
            raise QuarantineCorrupt(f"{qid}: cannot read message file: {exc.strerror}") from None

    def message_path(self, qid: str) -> Path:
        # The id ends in random hex, so its last two characters spread files over 256 folders.
        return self.root / MESSAGES_DIR / qid[-2:] / f"{qid}.eml"

    # -- internals -------------------------------------------------------------------------

    def _ensure_schema(self, create: bool) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version != 0:
            raise QuarantineError(
                f"quarantine store {self.index_path} has schema version {version}; "
                f"this gateway reads version {SCHEMA_VERSION}"
            )
        if not create:
            raise QuarantineMissing(f"{self.index_path} is not an initialised quarantine store")
        with self._transaction() as conn:
            # Re-check under the write lock: another process may have just created it.
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _sql_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise QuarantineError(
                    f"quarantine store {self.index_path} is locked by another process "
                    f"(waited {self.busy_timeout_s:g} s); try again"
                ) from None
            raise QuarantineError(f"quarantine store {self.index_path}: {text}") from None
        except sqlite3.Error as exc:
            raise QuarantineError(f"quarantine store {self.index_path}: {exc}") from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes SQLite's write lock up front (no upgrade deadlocks)."""
        with self._lock, self._sql_errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot even while the gateway writes."""
        with self._lock, self._sql_errors():
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def _get_in(self, conn: sqlite3.Connection, qid: str) -> Entry:
        if not valid_id(qid):
            raise QuarantineNotFound(f"{qid!r} is not a quarantine id")
        row = conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (qid,)
        ).fetchone()
        if row is None:
            raise QuarantineNotFound(f"{qid}: no such quarantined message")
        entry = self._entry(row, self._symbols_for(conn, [qid]).get(qid, []))
        if isinstance(entry, CorruptEntry):
            raise QuarantineCorrupt(f"{qid}: {entry.problem}")
        return entry

    def _symbols_for(
        self, conn: sqlite3.Connection, ids: Sequence[object]
    ) -> dict[object, list[tuple[Any, ...]]]:
        found: dict[object, list[tuple[Any, ...]]] = {}
        for start in range(0, len(ids), _SQL_CHUNK):
            chunk = ids[start : start + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(
                "SELECT message_id, name, score, reason, check_name FROM symbols"
                f" WHERE message_id IN ({marks}) ORDER BY message_id, position",
                list(chunk),
            ):
                found.setdefault(row[0], []).append(row[1:])
        return found

    def _entry(
        self, row: Sequence[Any], symbol_rows: list[tuple[Any, ...]]
    ) -> Entry | CorruptEntry:
        qid = row[0]
        try:
            entry = _entry_from_row(row, symbol_rows)
        except (TypeError, ValueError) as exc:
            return CorruptEntry(str(qid), f"unreadable index row: {exc}")
        # A plain string path: this runs once per listed row, pathlib would dominate the time.
        if not os.path.isfile(os.path.join(self._messages_dir, entry.id[-2:], f"{entry.id}.eml")):
            return replace(entry, problem="message file missing")
        return entry

    def _write_new_file(self, path: Path, data: bytes) -> None:
        try:
            private_dir(path.parent)
            write_durably(path, data, replace=False)  # never replaces an existing message
        except FileExistsError:
            raise QuarantineError(f"{path.stem} is already in the quarantine") from None
        except OSError as exc:
            raise QuarantineError(f"cannot write quarantine file {path}: {exc.strerror}") from None

    def _unlink(self, qid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.message_path(qid).unlink()

    def _remove_orphans(self, cutoff: float) -> int:
        """Message and temp files older than the cutoff that no index row points at."""
        removed = 0
        messages = self.root / MESSAGES_DIR
        for folder in messages.iterdir() if messages.is_dir() else ():
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                try:
                    if path.stat().st_mtime >= cutoff:
                        continue
                except FileNotFoundError:
                    continue
                qid = path.name.split(".")[0] if not path.name.startswith(".") else ""
                if qid and self._has_row(qid):
                    continue
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def _has_row(self, qid: str) -> bool:
        with self._read() as conn:
            return (
                conn.execute("SELECT 1 FROM messages WHERE id = ?", (qid,)).fetchone() is not None
            )


def _where(flt: Filter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if flt.states:
        clauses.append(f"state IN ({','.join('?' * len(flt.states))})")
        params += [s.value for s in flt.states]
    if flt.since is not None:
        clauses.append("received_at >= ?")
        params.append(flt.since)
    if flt.min_score is not None:
        clauses.append("score >= ?")
        params.append(flt.min_score)
    if flt.rcpt:
        clauses.append("instr(lower(rcpt_tos), ?) > 0")
        params.append(flt.rcpt.lower())
    if flt.sender:
        clauses.append("(instr(lower(mail_from), ?) > 0 OR instr(lower(header_from), ?) > 0)")
        params += [flt.sender.lower()] * 2
    if flt.symbol:
        clauses.append("id IN (SELECT message_id FROM symbols WHERE name = ?)")
        params.append(flt.symbol.upper())
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _entry_from_row(row: Sequence[Any], symbol_rows: list[tuple[Any, ...]]) -> Entry:
    """Build an Entry, checking every type: a hand-edited or damaged row must not pass as valid."""
    (qid, received_at, client_ip, helo, mail_from, rcpt_json, header_from, subject, size,
     score, action, reason, state, claimed_at, release_id, released_at) = row  # fmt: skip
    try:
        rcpt_tos = json.loads(rcpt_json) if isinstance(rcpt_json, str) else None
    except json.JSONDecodeError:
        rcpt_tos = None
    if not isinstance(rcpt_tos, list) or not all(isinstance(r, str) for r in rcpt_tos):
        raise ValueError(f"recipients {rcpt_json!r} are not a JSON list of addresses")
    symbols = tuple(
        ScoredSymbol(
            _text(name, "symbol name"),
            _number(s_score, "symbol score"),
            _text(s_reason, "symbol reason"),
            _text(check, "symbol check"),
        )
        for name, s_score, s_reason, check in symbol_rows
    )
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"size {size!r} is not a byte count")
    return Entry(
        id=_text(qid, "id"),
        received_at=_number(received_at, "time"),
        client_ip=_text(client_ip, "client ip"),
        helo=_text(helo, "helo"),
        mail_from=_text(mail_from, "sender"),
        rcpt_tos=tuple(rcpt_tos),
        header_from=_text(header_from, "From"),
        subject=_text(subject, "Subject"),
        size=size,
        score=_number(score, "score"),
        action=_text(action, "action"),
        reason=_text(reason, "reason"),
        state=State(state),
        symbols=symbols,
        claimed_at=None if claimed_at is None else _number(claimed_at, "claim time"),
        release_id=_text(release_id, "release id"),
        released_at=None if released_at is None else _number(released_at, "release time"),
    )


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} {value!r} is not text")
    return value


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} {value!r} is not a number")
    return float(value)


def _summary_headers(data: bytes) -> tuple[str, str]:
    """Decoded From and Subject for the index; never raises on broken headers."""
    headers = parse_headers(data)
    return _decoded(headers.get("From")), _decoded(headers.get("Subject"))


def _decoded(value: object) -> str:
    if value is None:
        return ""
    return " ".join(decode_header_value(value).split())[:_MAX_HEADER_CHARS]


def _make_index_private(index_path: Path) -> None:
    """The index 0600 before SQLite opens it: SQLite gives its -wal and -shm files the mode of
    the database file (those left by an older version are tightened here too)."""
    private_file(index_path)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{index_path}{suffix}", PRIVATE_FILE_MODE)


@contextlib.contextmanager
def _init_lock(root: Path, create: bool, timeout_s: float) -> Iterator[None]:
    if not create:  # opening an existing store: nothing to set up
        yield
        return
    fd = os.open(root / INIT_LOCK_FILE, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise QuarantineError(
                        f"quarantine store {root} is being set up by another process "
                        f"(waited {timeout_s:g} s); try again"
                    ) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # releases the lock


def _utc(timestamp: float | None) -> str:
    if timestamp is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(timestamp))
