"""Blocking work on a message in a thread, without losing count of the memory it uses.

A thread cannot be cancelled: when the client goes away while its message is parsed, scanned or
DKIM-verified in a thread, the awaiting task ends at once but the thread goes on reading the
message. The session's memory account (smtp/limits.py) must count the message until that thread
is done too, or 60 clients that connect, send 25 MB and vanish would each leave 100 MB in use
while the account says none is.

The session opens a `MessageHold` around its message (`holding`); `in_thread` and `shielded`
find it through a context variable (tasks and threads started for the message inherit it) and
keep it open until their work ends. The message's memory is given back when the last one leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")

_current_hold: contextvars.ContextVar[MessageHold | None] = contextvars.ContextVar(
    "message_hold", default=None
)


class MessageHold:
    """Counts who still uses one message: its session, and each thread or shielded task that
    works on it. `release` runs once, when the count reaches zero."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release = release
        self._users = 1  # the session itself

    def enter(self) -> None:
        self._users += 1

    def leave(self) -> None:
        self._users -= 1
        if self._users == 0:
            self._release()


@contextlib.contextmanager
def holding(release: Callable[[], None]) -> Iterator[MessageHold]:
    """The session's own claim on a message, for the `with` block; `release` runs when it
    and every thread still working on the message are done."""
    hold = MessageHold(release)
    token = _current_hold.set(hold)
    try:
        yield hold
    finally:
        _current_hold.reset(token)
        hold.leave()


async def in_thread(function: Callable[..., T], *args: Any, executor: Executor | None = None) -> T:
    """`function(*args)` in `executor` (None: the loop's default pool), as asyncio.to_thread
    does, keeping the current message held until the thread has finished, even when the
    awaiting task is cancelled before it has."""
    loop = asyncio.get_running_loop()
    hold = _current_hold.get()
    job = functools.partial(contextvars.copy_context().run, function, *args)
    if hold is None:
        return await loop.run_in_executor(executor, job)
    tracker = _ThreadTracker(loop, hold)
    try:
        future = loop.run_in_executor(executor, tracker.wrap(job))
    except BaseException:  # e.g. an executor already shut down: the job never runs
        hold.leave()
        raise
    future.add_done_callback(tracker.awaiting_done)
    return await future


def shielded(coroutine: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """`coroutine` shielded from the caller's cancellation (asyncio.shield), keeping the
    current message held until it has finished."""
    task = asyncio.ensure_future(coroutine)
    hold = _current_hold.get()
    if hold is not None:
        hold.enter()
        task.add_done_callback(lambda _: hold.leave())
    return asyncio.shield(task)


class _ThreadTracker:
    """Leaves the hold exactly once: when the job has run, or when it was cancelled before a
    thread took it (it then never runs). The lock settles a thread starting it just as it is
    cancelled."""

    def __init__(self, loop: asyncio.AbstractEventLoop, hold: MessageHold) -> None:
        self._loop = loop
        self._hold = hold
        self._lock = threading.Lock()
        self._started = False
        self._dropped = False
        hold.enter()

    def wrap(self, job: Callable[[], T]) -> Callable[[], T]:
        def run() -> T:
            with self._lock:
                if self._dropped:
                    raise asyncio.CancelledError
                self._started = True
            try:
                return job()
            finally:
                self._leave_from_thread()

        return run

    def awaiting_done(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled():
            return  # the job ran and left the hold
        with self._lock:
            if self._started:
                return  # still running: it leaves when done
            self._dropped = True
        self._hold.leave()

    def _leave_from_thread(self) -> None:
        # A closed loop counts nothing any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._hold.leave)
