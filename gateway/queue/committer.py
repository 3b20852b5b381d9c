"""Group commit: the messages of concurrent sessions written to the spool together.

Every accepted message costs the spool two fsyncs (its file, then active/ after the rename).
Committed one by one from a pool of threads, 20 concurrent sessions mean 20 threads fighting
over the GIL between their system calls and one journal commit after another. Here one thread
takes whatever is waiting, up to MAX_BATCH messages, and commits them in one `commit_many`:
each file still fsynced before its rename and the directory after it, so each 250 still
means "on disk", but the messages share the directory's fsync and the journal commits, and
the event loop is woken once per batch, not once per message.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from contextlib import suppress

from gateway.errors import SpoolError
from gateway.queue.spool import Prepared, Spool

log = logging.getLogger(__name__)

MAX_BATCH = 64  # bounds how long the first message of a batch waits for the last one's write
CLOSE_TIMEOUT_S = 30.0
_Waiting = tuple[Prepared, "asyncio.Future[None]", asyncio.AbstractEventLoop]
_Outcome = tuple["asyncio.Future[None]", SpoolError | None]
_Queue = queue.SimpleQueue[_Waiting | None]  # None: stop after what came before


class GroupCommitter:
    """`await commit(prepared)` returns once the message is durably in the spool."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._waiting: _Queue = queue.SimpleQueue()  # the current thread's

    async def commit(self, prepared: Prepared) -> None:
        """Raises what `Spool.commit` raises (SpoolFull, SpoolError)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        with self._lock:  # with close(): never queued for a thread that is stopping
            if self._thread is None:
                self._waiting = queue.SimpleQueue()
                # A daemon, so that a process which never calls close() can still exit;
                # the front end closes it after draining its sessions.
                self._thread = threading.Thread(
                    target=self._run, args=(self._waiting,), name="spool-committer", daemon=True
                )
                self._thread.start()
            self._waiting.put((prepared, done, loop))
        # A session cancelled meanwhile cancels `done` only: the write under way goes on,
        # as a commit in a worker thread would, and its outcome is dropped.
        await done

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Blocking: commit what is waiting, then end the thread (a later commit starts a
        new one, with a queue of its own)."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._waiting.put(None)
        if thread is not None:
            thread.join(timeout_s)

    def _run(self, waiting: _Queue) -> None:
        stopping = False
        while not stopping:
            first = waiting.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    more = waiting.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True  # after this batch
                    break
                batch.append(more)
            _answer(batch, self._commit(batch))

    def _commit(self, batch: list[_Waiting]) -> list[SpoolError | None]:
        try:
            errors = self.spool.commit_many([prepared for prepared, _, _ in batch])
            if len(errors) == len(batch):
                return errors
            raise RuntimeError(f"{len(errors)} outcomes for {len(batch)} messages")
        except Exception as exc:  # a bug, not an OSError: fail these, keep the thread
            log.exception("queue: group commit failed")
            return [SpoolError(f"{p.entry.id}: cannot spool ({exc!r})") for p, _, _ in batch]


def _answer(batch: list[_Waiting], errors: list[SpoolError | None]) -> None:
    """Each waiting session its outcome, on its own event loop: one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for (_, done, loop), error in zip(batch, errors, strict=True):
        by_loop.setdefault(loop, []).append((done, error))
    for loop, outcomes in by_loop.items():
        with suppress(RuntimeError):  # that loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, outcomes)


def _settle(outcomes: list[_Outcome]) -> None:
    for done, error in outcomes:
        if done.cancelled():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
