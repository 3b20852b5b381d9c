"""The durable spool: accepted messages on disk, each with its envelope and delivery state.

Layout below `root` (storage_dir/"queue"):

    tmp/              files being written; never read by the delivery side
    active/ID.msg     one line of JSON (envelope and initial state), then the message bytes
                      exactly as relayed (CRLF line ends); never changed once in place
    active/ID.json    the newer state, once delivery has changed it (absent until then)
    failed/ID.*       messages that failed permanently, kept for the admin
    recycled/NAME     emptied message files waiting to be written again

Enqueue writes ID.msg in tmp/, fsyncs it and renames it into active/, then fsyncs the
directory: one file, so one create and one fsync per message (creating files is the dearest
thing the spool does on ext4), and the message is visible exactly when it is complete.
`commit_many` does that for several messages at once (each file fsynced before its rename,
one fsync of active/ after them): the SMTP front end's group commit (queue/committer.py).
Several processes may share one spool: a message is claimed by an exclusive, non-blocking
flock on its ID.msg (its inode never changes; the state file is replaced on every update, so it
cannot carry the lock). A spool written by the earlier two-file layout (ID.eml + ID.json) is
converted by `sweep()`, which the delivery service runs at start.

Delivered messages' files are emptied and kept in recycled/ to be reused by the next enqueue
instead of unlinked: on ext4 without a journal, creating a file scans the inode bitmap past
every inode freed in the last seconds (`recently_deleted`), a cost that grows with the mail
rate (a fifth of the gateway's CPU at 400 msg/s on the benchmark machine).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.errors import AlreadyQueued, SpoolError, SpoolFull
from gateway.files import PRIVATE_FILE_MODE, fsync_dir, private_dir

log = logging.getLogger(__name__)

RecipientStatus = Literal["pending", "delivered", "failed"]

_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# Files in tmp/ older than this are leftovers of a crash, as are state files without their
# message (a crash while removing one).
ORPHAN_GRACE_S = 3600.0
STATE_VERSION = 1
# The JSON line heading a message file: 1000 recipients take ~100 KB.
MAX_HEADER_BYTES = 16 * 1024 * 1024
_HEADER_CHUNK = 8192  # most envelope lines are well under 1 KB
FREE_SPACE_TTL_S = 1.0
RECYCLE_POOL_MAX = 256  # emptied files kept for reuse (inodes only: they hold no data)


@dataclass(frozen=True, slots=True)
class RecipientState:
    address: str
    status: RecipientStatus = "pending"
    reply: str = ""  # the downstream's last answer for this recipient
    notify: tuple[str, ...] = ()  # DSN NOTIFY (RFC 3461); empty = the default (FAILURE)
    orcpt: str = ""  # DSN ORCPT, as given by the client


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """Envelope and delivery state of one queued message (its envelope line, or ID.json)."""

    id: str
    mail_from: str
    recipients: tuple[RecipientState, ...]
    received_at: float
    next_attempt_at: float
    size: int = 0
    attempts: int = 0
    last_error: str = ""
    held: bool = False
    dsn_ret: str = ""  # DSN RET=FULL|HDRS
    dsn_envid: str = ""  # DSN ENVID
    delay_warned: bool = False
    # SPF pass for the envelope sender, or a DKIM pass aligned with its domain, when it came
    # in: only then may it get "relayed" or delay notices (else: backscatter to forged senders).
    sender_authenticated: bool = False

    @property
    def pending(self) -> tuple[RecipientState, ...]:
        return tuple(r for r in self.recipients if r.status == "pending")

    @property
    def needs_smtputf8(self) -> bool:
        addresses = (self.mail_from, *(r.address for r in self.recipients))
        return any(not a.isascii() for a in addresses)

    def to_json(self) -> dict[str, Any]:
        # Field by field, not dataclasses.asdict (a deep copy): this runs for every message.
        data: dict[str, Any] = {f: getattr(self, f) for f in _ENTRY_FIELDS}
        data["recipients"] = [
            {f: getattr(r, f) for f in _RECIPIENT_FIELDS} for r in self.recipients
        ]
        data["version"] = STATE_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QueueEntry:
        data = dict(data)
        data.pop("version", None)
        recipients = tuple(
            RecipientState(
                address=_typed(r["address"], str),
                status=_typed(r.get("status", "pending"), str),
                reply=_typed(r.get("reply", ""), str),
                notify=tuple(_typed(n, str) for n in _typed(r.get("notify", []), list)),
                orcpt=_typed(r.get("orcpt", ""), str),
            )
            for r in _typed(data.pop("recipients"), list)
        )
        entry = cls(recipients=recipients, **data)
        # A state file edited or damaged by hand must not reach the arithmetic of the scanner
        # (one TypeError there stopped every retry) nor name another file (`id`).
        for item in dataclasses.fields(cls):
            if item.name != "recipients":
                _typed(getattr(entry, item.name), _FIELD_TYPES[str(item.type)], item.name)
        if any(r.status not in ("pending", "delivered", "failed") for r in recipients):
            raise ValueError("unknown recipient status")
        validate_id(entry.id)
        return entry


_ENTRY_FIELDS = tuple(f.name for f in dataclasses.fields(QueueEntry) if f.name != "recipients")
_RECIPIENT_FIELDS = tuple(f.name for f in dataclasses.fields(RecipientState))
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "float": (int, float),
    "int": int,
    "bool": bool,
}


def _typed(value: Any, kind: type | tuple[type, ...], name: str = "value") -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise TypeError(f"{name}: unexpected {type(value).__name__}")
    return value


def validate_id(msg_id: str) -> None:
    if not _ID_PATTERN.fullmatch(msg_id):
        raise SpoolError(f"invalid queue id {msg_id!r}")


def _write_synced(path: str | Path, *parts: bytes) -> None:
    """Write `parts` to a new file `path` and fsync it."""
    fd = _write_new(str(path), parts, None)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new(path: str, parts: Sequence[bytes], reuse: str | None) -> int:
    """Write `parts` to a new file `path`, not yet synced; returns its open descriptor.
    `reuse` names an emptied file to move there and write into instead of creating one (see
    the module docstring)."""
    fd = -1
    if reuse is not None:
        with suppress(FileNotFoundError):  # another process may have taken it
            os.rename(reuse, path)
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    if fd < 0:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        # One writev for the usual case: each system call here is also a GIL hand-back
        # (this runs in a worker thread), which costs more than the call itself.
        written = os.writev(fd, parts)
        for part in parts:
            view = memoryview(part)[written:]
            written = max(0, written - len(part))
            while view:
                view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_locked(path: str) -> int | None:
    """`path` opened under an exclusive, non-blocking flock (the claim on a queued message), or
    None if another holder has it or it is gone or was replaced since it was opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The holder before us may have removed or moved it after we opened it.
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            return fd
    except OSError:  # BlockingIOError: held; FileNotFoundError: gone meanwhile
        pass
    os.close(fd)
    return None


def _read_header(fd: int) -> tuple[dict[str, Any], int]:
    """The JSON line heading a message file, and where the message bytes start."""
    head = b""
    while b"\n" not in head:
        if len(head) >= MAX_HEADER_BYTES:
            raise ValueError("no envelope line")
        chunk = os.pread(fd, _HEADER_CHUNK, len(head))
        if not chunk:
            raise ValueError("truncated envelope line")
        head += chunk
    line = head[: head.index(b"\n")]
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("envelope line is not an object")
    return data, len(line) + 1


def _read_from(fd: int, offset: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks: list[bytes] = []
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _spool_error(exc: OSError, what: str) -> SpoolError:
    if exc.errno in _DISK_FULL_ERRNOS:
        return SpoolFull(f"{what}: disk full ({exc.strerror})")
    return SpoolError(f"{what}: {exc.strerror or exc}")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A message checked and encoded by `Spool.prepare`, for `Spool.commit` to write."""

    entry: QueueEntry
    header: bytes  # the envelope line
    data: bytes
    reuse: str | None = None  # an emptied file in recycled/ to write into


class Claim:
    """Exclusive ownership of one queued message by this process, until `release()`."""

    def __init__(self, spool: Spool, entry: QueueEntry, fd: int, data_offset: int) -> None:
        self.spool = spool
        self.entry = entry
        self._fd = fd
        self._data_offset = data_offset

    def read_data(self) -> bytes:
        return _read_from(self._fd, self._data_offset)

    def update(self, entry: QueueEntry) -> None:
        """Persist new state for this message (atomic replace of its state file)."""
        self.spool.write_state(entry)
        self.entry = entry

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


class Spool:
    def __init__(self, root: Path, min_free_bytes: int) -> None:
        self.root = Path(root)
        self.min_free_bytes = min_free_bytes
        self.tmp_dir = self.root / "tmp"
        self.active_dir = self.root / "active"
        self.failed_dir = self.root / "failed"
        self.recycled_dir = self.root / "recycled"
        self._reported: set[str] = set()  # unreadable entries already logged
        self._free, self._free_read_at = 0, float("-inf")
        # The per-message paths as plain strings: pathlib costs more than the system calls.
        self._tmp, self._active = str(self.tmp_dir), str(self.active_dir)
        self._spares = str(self.recycled_dir)
        self._emptier_pool: ThreadPoolExecutor | None = None
        self._emptying = 0  # files handed to the emptier, not yet back in the pool
        self._emptying_lock = threading.Lock()
        dirs = (self.tmp_dir, self.active_dir, self.failed_dir, self.recycled_dir)
        try:
            for directory in (self.root, *dirs):
                private_dir(directory)
            # Names in recycled/ this process may reuse (list.pop/append: safe across threads).
            self._recycled = [p.name for p in self.recycled_dir.iterdir()][:RECYCLE_POOL_MAX]
            # Kept open to fsync active/ after each enqueue: two system calls fewer, each a
            # GIL hand-back in the writing thread.
            self._active_fd = os.open(self.active_dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise _spool_error(exc, f"cannot create spool {self.root}") from exc
        self._close_active = weakref.finalize(self, os.close, self._active_fd)

    # -- accepting -------------------------------------------------------------------------

    def free_bytes(self) -> int:
        """Free space for the spool, read at most every FREE_SPACE_TTL_S (asked at every MAIL
        and enqueue); a disk filling faster than that still ends in ENOSPC -> SpoolFull."""
        now = time.monotonic()
        if now - self._free_read_at >= FREE_SPACE_TTL_S:
            stats = os.statvfs(self.root)
            self._free, self._free_read_at = stats.f_bavail * stats.f_frsize, now
        return self._free

    def has_room(self, size: int) -> bool:
        return self.free_bytes() - size >= self.min_free_bytes

    def enqueue(
        self,
        msg_id: str,
        mail_from: str,
        rcpt_tos: Sequence[str],
        data: bytes,
        *,
        dsn_ret: str = "",
        dsn_envid: str = "",
        rcpt_notify: Sequence[Sequence[str]] = (),
        rcpt_orcpt: Sequence[str] = (),
        sender_authenticated: bool = False,
        now: float | None = None,
    ) -> None:
        """Blocking: `prepare` and `commit` in one go."""
        self.commit(
            self.prepare(
                msg_id, mail_from, rcpt_tos, data, dsn_ret=dsn_ret, dsn_envid=dsn_envid,
                rcpt_notify=rcpt_notify, rcpt_orcpt=rcpt_orcpt,
                sender_authenticated=sender_authenticated, now=now,
            )
        )  # fmt: skip

    def prepare(
        self,
        msg_id: str,
        mail_from: str,
        rcpt_tos: Sequence[str],
        data: bytes,
        *,
        dsn_ret: str = "",
        dsn_envid: str = "",
        rcpt_notify: Sequence[Sequence[str]] = (),
        rcpt_orcpt: Sequence[str] = (),
        sender_authenticated: bool = False,
        now: float | None = None,
    ) -> Prepared:
        """The checks before writing, quick enough for the event loop (a statvfs, a stat).

        Raises AlreadyQueued, SpoolFull (no room) or SpoolError. The optional DSN arguments
        are per recipient, in rcpt_tos order.
        """
        validate_id(msg_id)
        if not rcpt_tos:
            raise SpoolError(f"{msg_id}: no recipients")
        if not self.has_room(len(data)):
            raise SpoolFull(f"{msg_id}: less than {self.min_free_bytes} bytes would stay free")
        received_at = time.time() if now is None else now
        recipients = tuple(
            RecipientState(
                address=address,
                notify=tuple(rcpt_notify[i]) if i < len(rcpt_notify) else (),
                orcpt=rcpt_orcpt[i] if i < len(rcpt_orcpt) else "",
            )
            for i, address in enumerate(rcpt_tos)
        )
        entry = QueueEntry(
            id=msg_id,
            mail_from=mail_from,
            recipients=recipients,
            received_at=received_at,
            next_attempt_at=received_at,
            size=len(data),
            dsn_ret=dsn_ret,
            dsn_envid=dsn_envid,
            sender_authenticated=sender_authenticated,
        )
        if os.path.exists(f"{self._active}/{msg_id}.msg"):
            raise AlreadyQueued(f"{msg_id}: already queued")
        try:  # not `if self._recycled`: the bouncer enqueues from a thread meanwhile
            reuse: str | None = self._recycled.pop()
        except IndexError:
            reuse = None
        return Prepared(entry, _encode(entry) + b"\n", data, reuse)

    def commit(self, prepared: Prepared) -> None:
        """Blocking: write tmp, fsync, atomic rename into the queue, fsync the directory.

        Raises SpoolFull (ENOSPC) or SpoolError, and never leaves a partial file visible to
        the delivery side.
        """
        [error] = self.commit_many([prepared])
        if error is not None:
            raise error

    def commit_many(self, batch: Sequence[Prepared]) -> list[SpoolError | None]:
        """Blocking: `commit` for several messages at once, each one's error (or None) in
        order. Every file is written, then each fsynced, then all renamed into active/, then
        active/ fsynced once: the same guarantees per message as one commit, but the
        messages share the journal commits (ext4) and the directory's fsync. A message whose
        directory fsync failed is taken out again (see `_withdraw`)."""
        errors: list[SpoolError | None] = [None] * len(batch)
        written: list[tuple[int, str, int]] = []  # (index, tmp path, open descriptor)
        for index, prepared in enumerate(batch):
            tmp = f"{self._tmp}/{prepared.entry.id}.msg"
            reuse = f"{self._spares}/{prepared.reuse}" if prepared.reuse else None
            try:
                written.append(
                    (index, tmp, _write_new(tmp, (prepared.header, prepared.data), reuse))
                )
            except OSError as exc:
                errors[index] = self._abandon(batch[index], tmp, exc)
        synced: list[tuple[int, str]] = []
        for index, tmp, fd in written:
            try:
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                synced.append((index, tmp))
            except OSError as exc:
                errors[index] = self._abandon(batch[index], tmp, exc)
        # All renames in one tight run, after every fsync: a message is visible to the
        # delivery side (of any worker) only for the one directory fsync before its 250.
        renamed: list[int] = []
        for index, tmp in synced:
            msg_id = batch[index].entry.id
            try:
                # A state file left by a crash while this id was last removed must not
                # stand for the new message (a released quarantine copy keeps its id).
                with suppress(FileNotFoundError):
                    os.unlink(f"{self._active}/{msg_id}.json")
                os.rename(tmp, f"{self._active}/{msg_id}.msg")
                renamed.append(index)
            except OSError as exc:
                errors[index] = self._abandon(batch[index], tmp, exc)
        if renamed:
            try:
                self._sync_active()
            except OSError as exc:
                for index in renamed:
                    errors[index] = self._withdraw(batch[index].entry.id, exc)
        return errors

    def _withdraw(self, msg_id: str, exc: OSError) -> SpoolError:
        """A message renamed into active/ whose directory fsync failed: its client gets a
        4xx and will send it again, so our copy goes, unless a worker is delivering it."""
        claim = self.try_claim(msg_id)
        if claim is not None:
            try:
                with suppress(OSError):
                    os.unlink(f"{self._active}/{msg_id}.msg")
            finally:
                claim.release()
        return _spool_error(exc, f"{msg_id}: cannot spool")

    def _abandon(self, prepared: Prepared, tmp: str, exc: OSError) -> SpoolError:
        with suppress(OSError):
            os.unlink(tmp)
        return _spool_error(exc, f"{prepared.entry.id}: cannot spool")

    # -- reading ---------------------------------------------------------------------------

    def data_path(self, msg_id: str, directory: Path | None = None) -> Path:
        """The message file: envelope line and message bytes; its presence queues it."""
        return (directory or self.active_dir) / f"{msg_id}.msg"

    def state_path(self, msg_id: str, directory: Path | None = None) -> Path:
        return (directory or self.active_dir) / f"{msg_id}.json"

    def ids(self, failed: bool = False) -> list[str]:
        """Queued (or failed) message ids, oldest first (ids are time-sortable)."""
        directory = self.failed_dir if failed else self.active_dir
        return sorted(p.stem for p in directory.glob("*.msg"))

    def load(self, msg_id: str, failed: bool = False) -> QueueEntry:
        """The state of one message; SpoolError if it does not exist or cannot be read."""
        validate_id(msg_id)
        directory = self.failed_dir if failed else None
        try:
            fd = os.open(self.data_path(msg_id, directory), os.O_RDONLY)
        except FileNotFoundError:
            raise SpoolError(f"{msg_id}: not in the queue") from None
        except OSError as exc:
            raise _spool_error(exc, f"{msg_id}: cannot read state") from exc
        try:
            return self._load(msg_id, fd, directory)[0]
        finally:
            os.close(fd)

    def _load(self, msg_id: str, fd: int, directory: Path | None) -> tuple[QueueEntry, int]:
        """State (the state file if any, else the envelope line) and the data offset."""
        try:
            header, offset = _read_header(fd)
            try:
                state = f"{directory or self._active}/{msg_id}.json"
                with open(state, "rb") as handle:
                    data = json.loads(handle.read())
            except FileNotFoundError:
                data = header
            entry = QueueEntry.from_json(data)
        except OSError as exc:
            raise _spool_error(exc, f"{msg_id}: cannot read state") from exc
        except (ValueError, KeyError, TypeError, AttributeError, SpoolError) as exc:
            raise SpoolError(f"{msg_id}: corrupt state file: {exc}") from exc
        if entry.id != msg_id:
            raise SpoolError(f"{msg_id}: corrupt state file: it names {entry.id!r}")
        return entry, offset

    def read_data(self, msg_id: str, failed: bool = False) -> bytes:
        validate_id(msg_id)
        try:
            fd = os.open(self.data_path(msg_id, self.failed_dir if failed else None), os.O_RDONLY)
            try:
                header, offset = _read_header(fd)
                if header.get("id") != msg_id:
                    # Delivered and its file reused for another message since we opened it.
                    raise SpoolError(f"{msg_id}: not in the queue")
                return _read_from(fd, offset)
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise SpoolError(f"{msg_id}: not in the queue") from None
        except OSError as exc:
            raise _spool_error(exc, f"{msg_id}: cannot read message") from exc
        except ValueError as exc:
            raise SpoolError(f"{msg_id}: corrupt message file: {exc}") from exc

    def entries(self, failed: bool = False) -> Iterator[QueueEntry]:
        """Every readable entry; one vanishing meanwhile is skipped, a corrupt one logged."""
        for msg_id in self.ids(failed):
            try:
                yield self.load(msg_id, failed)
            except SpoolError as exc:
                directory = self.failed_dir if failed else None
                if self.data_path(msg_id, directory).exists() and msg_id not in self._reported:
                    # Once per entry and process: the queue scanner meets it every few seconds.
                    self._reported.add(msg_id)
                    log.warning("queue: skipping unreadable entry: %s", exc)

    # -- claiming and changing -------------------------------------------------------------

    def try_claim(self, msg_id: str, written: Prepared | None = None) -> Claim | None:
        """Claim a queued message, or None if another worker holds it or it is gone.
        `written`: this process committed it, so its envelope line need not be read back
        unless a state file (another worker's attempt meanwhile) has replaced it."""
        validate_id(msg_id)
        fd = _open_locked(f"{self._active}/{msg_id}.msg")
        if fd is None:
            return None
        try:
            if (
                written is not None
                and written.entry.id == msg_id
                and not os.path.exists(f"{self._active}/{msg_id}.json")
            ):
                return Claim(self, written.entry, fd, len(written.header))
            entry, offset = self._load(msg_id, fd, None)
        except (OSError, SpoolError):
            os.close(fd)
            return None
        return Claim(self, entry, fd, offset)

    @contextmanager
    def claimed(self, msg_id: str) -> Iterator[Claim | None]:
        claim = self.try_claim(msg_id)
        try:
            yield claim
        finally:
            if claim is not None:
                claim.release()

    def write_state(self, entry: QueueEntry) -> None:
        """Atomically replace a message's state file. Call only while holding its claim."""
        tmp = self.tmp_dir / f"{entry.id}.{os.getpid()}.state"
        try:
            with suppress(FileNotFoundError):
                tmp.unlink()
            _write_synced(tmp, _encode(entry))
            os.rename(tmp, self.state_path(entry.id))
            self._sync_active()
        except OSError as exc:
            with suppress(OSError):
                tmp.unlink()
            raise _spool_error(exc, f"{entry.id}: cannot update state") from exc

    def remove(self, claim: Claim) -> None:
        """Delete a claimed message (delivered or deleted by the admin).

        A rename and an unlink, without fsync: cheap enough for the event loop. A power loss
        right after can bring the message back, to be delivered twice, never lost (as
        Postfix does). Emptying the file for reuse waits on the ext4 journal (0.1 ms idle,
        far more behind the writer's fsyncs), so the spool's emptier thread does it.
        """
        msg_id = claim.entry.id
        path = f"{self._active}/{msg_id}.msg"
        try:
            # The message file first: once it is gone no scanner can pick the message up
            # again, whereas without its state file it would be sent with its first state.
            if self._reserve_spare():
                spare = f"{self._spares}/{msg_id}"
                try:
                    os.rename(path, spare)
                except OSError:
                    self._release_spare()
                    raise
                try:
                    self._emptier().submit(self._empty_for_reuse, spare, msg_id)
                except RuntimeError:  # the spool is being closed: no reuse, just delete it
                    self._release_spare()
                    with suppress(OSError):
                        os.unlink(spare)
            else:
                os.unlink(path)
            with suppress(FileNotFoundError):
                os.unlink(f"{self._active}/{msg_id}.json")
        except OSError as exc:
            raise _spool_error(exc, f"{msg_id}: cannot remove") from exc
        finally:
            claim.release()

    def _emptier(self) -> ThreadPoolExecutor:
        if self._emptier_pool is None:  # only processes that deliver need the thread
            self._emptier_pool = ThreadPoolExecutor(1, thread_name_prefix="spool-emptier")
        return self._emptier_pool

    def wait_emptied(self) -> None:
        """Until every message removed so far has its file emptied and back in the
        recycling pool, for the next enqueue to reuse."""
        if self._emptier_pool is not None:
            self._emptier_pool.submit(lambda: None).result()

    def _sync_active(self) -> None:
        if self._active_fd < 0:
            raise OSError(errno.EBADF, "the spool is closed")
        os.fsync(self._active_fd)

    def close(self) -> None:
        """Blocking: finish emptying removed files, then let go of the kept-open active/ (a
        spool on a file system being unmounted must be closed first)."""
        if self._emptier_pool is not None:
            self._emptier_pool.shutdown(wait=True)
            self._emptier_pool = None
        self._close_active()
        self._active_fd = -1  # a late commit fails (EBADF) instead of syncing a reused number

    def _reserve_spare(self) -> bool:
        """A place in the recycling pool (RECYCLE_POOL_MAX, files being emptied included)."""
        with self._emptying_lock:
            if len(self._recycled) + self._emptying >= RECYCLE_POOL_MAX:
                return False
            self._emptying += 1
            return True

    def _empty_for_reuse(self, spare: str, name: str) -> None:
        """Truncate a removed message's file and offer it to the next enqueue."""
        try:
            os.truncate(spare, 0)
        except FileNotFoundError:
            pass  # unlinked by another worker's sweep(): no longer ours to reuse
        except OSError as exc:
            log.warning("queue: cannot empty %s for reuse (%s); unlinking it", spare, exc)
            with suppress(OSError):
                os.unlink(spare)
        else:
            self._recycled.append(name)
        finally:
            self._release_spare()

    def _release_spare(self) -> None:
        with self._emptying_lock:
            self._emptying -= 1

    def move_to_failed(self, claim: Claim, entry: QueueEntry) -> None:
        """Keep a permanently failed message, with its final state, in failed/."""
        msg_id = entry.id
        try:
            claim.update(entry)
            # The message file first, as in remove(); sweep() moves the state file after it
            # when a crash comes in between.
            os.rename(self.data_path(msg_id), self.data_path(msg_id, self.failed_dir))
            os.rename(self.state_path(msg_id), self.state_path(msg_id, self.failed_dir))
            self._sync_active()
            fsync_dir(self.failed_dir)
        except OSError as exc:
            raise _spool_error(exc, f"{msg_id}: cannot move to failed/") from exc
        finally:
            claim.release()

    def delete_failed(self, msg_id: str) -> None:
        """Remove a message from failed/ (the admin is done with it)."""
        validate_id(msg_id)
        try:
            self.data_path(msg_id, self.failed_dir).unlink()
            with suppress(FileNotFoundError):
                self.state_path(msg_id, self.failed_dir).unlink()
        except FileNotFoundError:
            raise SpoolError(f"{msg_id}: not among the failed messages") from None
        except OSError as exc:
            raise _spool_error(exc, f"{msg_id}: cannot delete") from exc

    def sweep(self, now: float | None = None) -> int:
        """Clear up after crashes and convert the old layout. Returns how many files it
        removed, moved or converted: stale tmp files; state files whose message is gone (moved
        on to failed/ when the message is there); old-layout ID.eml + ID.json pairs; spare
        files beyond the recycling pool, and spares a crash left before they were emptied."""
        cutoff = (time.time() if now is None else now) - ORPHAN_GRACE_S
        swept = 0
        for path in self.tmp_dir.iterdir():
            with suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    swept += 1
        for directory in (self.active_dir, self.failed_dir):
            swept += self._convert_old_layout(directory, cutoff)
        pool = set(self._recycled)
        for spare in self.recycled_dir.iterdir():
            with suppress(OSError):
                if spare.name not in pool:  # beyond RECYCLE_POOL_MAX (e.g. admin deletes)
                    spare.unlink()
                    swept += 1
                elif spare.stat().st_size:  # a crash before it was emptied: delivered bytes
                    os.truncate(spare, 0)
                    swept += 1
        for state in self.active_dir.glob("*.json"):
            msg_id = state.stem
            with suppress(OSError):
                if self.data_path(msg_id).exists():
                    continue
                failed_state = self.state_path(msg_id, self.failed_dir)
                if self.data_path(msg_id, self.failed_dir).exists():
                    if not failed_state.exists():
                        os.rename(state, failed_state)
                        swept += 1
                elif state.stat().st_mtime < cutoff:
                    state.unlink()
                    swept += 1
        return swept

    def _convert_old_layout(self, directory: Path, cutoff: float) -> int:
        converted = 0
        for old_data in directory.glob("*.eml"):
            msg_id = old_data.stem
            try:
                validate_id(msg_id)
                # Under the old data file's flock (the old layout's claim): another worker
                # converting it at the same moment, or an older gateway delivering it, has it.
                fd = _open_locked(str(old_data))
            except (OSError, SpoolError):
                continue
            if fd is None:
                continue
            try:
                converted += self._convert_one(directory, old_data, msg_id, cutoff)
            except OSError:
                pass
            except (ValueError, KeyError, TypeError, AttributeError, SpoolError) as exc:
                log.warning("queue: cannot convert %s: corrupt state file: %s", old_data, exc)
            finally:
                os.close(fd)
        return converted

    def _convert_one(self, directory: Path, old_data: Path, msg_id: str, cutoff: float) -> int:
        state = self.state_path(msg_id, directory)
        if not state.exists():
            # Old layout: a data file without state was an interrupted move to failed/
            # (converted there next), enqueue or removal.
            if self.state_path(msg_id, self.failed_dir).exists():
                os.rename(old_data, self.failed_dir / old_data.name)
                return 1
            if old_data.stat().st_mtime < cutoff:
                old_data.unlink()
                return 1
            return 0
        if self.data_path(msg_id, directory).exists():
            # Converted before a crash came between the rename and the unlink: the new file
            # may be claimed by a worker delivering it, so it must not be replaced.
            old_data.unlink()
            return 1
        entry = QueueEntry.from_json(json.loads(state.read_bytes()))
        tmp = self.tmp_dir / f"{msg_id}.convert.msg"
        with suppress(FileNotFoundError):
            tmp.unlink()
        _write_synced(tmp, _encode(entry) + b"\n", old_data.read_bytes())
        os.rename(tmp, self.data_path(msg_id, directory))  # the state file stays on
        fsync_dir(directory)
        old_data.unlink()
        return 1


def _encode(entry: QueueEntry) -> bytes:
    # ASCII escapes: downstream replies can carry undecodable bytes (surrogates), which would
    # make the state unwritable and the message be resent at every scan. One line, no indent:
    # it heads the message file.
    return json.dumps(entry.to_json(), ensure_ascii=True, sort_keys=True).encode("ascii")
