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
import collections
import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

from gateway.errors import ThreadsBusy

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


class FairThreads:
    """A pool of `threads` shared by clients, none of which may hold more than `per_client`.

    The SPF, DKIM and ARC libraries wait in their thread on DNS: 60 sessions from 3 addresses
    naming a sender domain whose DNS never answers held all 16 threads for seconds each, and
    a legitimate sender's checks timed out waiting for one. Here a client over its share
    waits (its own sessions queue behind each other, never in front of another client's);
    waiting clients are served in turn; and the wait is bounded: past `wait_s` the caller
    gets ThreadsBusy (a temporary error), never a check that silently ran out of time.
    A slot is given back when the job ends in its thread, not when its awaiter gives up:
    a thread still waiting on DNS is still in use.
    """

    def __init__(self, threads: int, per_client: int, wait_s: float, name: str) -> None:
        self.threads = threads
        self.per_client = min(per_client, threads)
        self.wait_s = wait_s
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._busy = 0
        self._busy_by: dict[str, int] = {}
        # Clients with someone waiting, in the order they are next served (round robin).
        self._waiting: dict[str, collections.deque[_Waiter]] = {}

    def in_use(self, client: str | None = None) -> int:
        with self._lock:
            return self._busy if client is None else self._busy_by.get(client, 0)

    async def run(self, client: str, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in one of the pool's threads, once `client` may have one (see
        `in_thread` for the message hold). Raises ThreadsBusy after `wait_s` without."""
        await self._acquire(client)
        executor = _ReleasingExecutor(self._executor, lambda: self._release(client))
        return await in_thread(function, *args, executor=executor)

    async def _acquire(self, client: str) -> None:
        with self._lock:
            if client not in self._waiting and self._may_take(client):
                self._take(client)
                return
            waiter = _Waiter(asyncio.get_running_loop())
            self._waiting.setdefault(client, collections.deque()).append(waiter)
        try:
            async with asyncio.timeout(self.wait_s):
                await waiter.future
        except BaseException as exc:  # timed out or cancelled: leave the queue, or the slot
            with self._lock:
                granted = waiter.granted
                if not granted:
                    queue = self._waiting.get(client)
                    if queue is not None and waiter in queue:
                        queue.remove(waiter)
                        if not queue:
                            del self._waiting[client]
            if granted:
                self._release(client)
            if isinstance(exc, TimeoutError):
                busy, mine = self.in_use(), self.in_use(client)
                raise ThreadsBusy(
                    f"no thread free within {self.wait_s:g}s"
                    f" ({busy} of {self.threads} busy, {mine} for {client})"
                ) from None
            raise

    def _may_take(self, client: str) -> bool:
        return self._busy < self.threads and self._busy_by.get(client, 0) < self.per_client

    def _take(self, client: str) -> None:
        self._busy += 1
        self._busy_by[client] = self._busy_by.get(client, 0) + 1

    def _release(self, client: str) -> None:
        """Called from any thread when a job ends (or never started)."""
        with self._lock:
            self._busy -= 1
            left = self._busy_by[client] - 1
            if left:
                self._busy_by[client] = left
            else:
                del self._busy_by[client]
            self._grant_waiting()

    def _grant_waiting(self) -> None:
        """Hand free slots to waiting clients in turn (under the lock)."""
        for client in list(self._waiting):
            if self._busy >= self.threads:
                return
            if not self._may_take(client):
                continue
            queue = self._waiting.pop(client)
            waiter = queue.popleft()
            if queue:
                self._waiting[client] = queue  # re-inserted last: the others go first
            self._take(client)
            waiter.grant()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class _Waiter:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.granted = False

    def grant(self) -> None:
        """Under the pool's lock, from any thread. A waiter that has given up meanwhile finds
        `granted` set and gives the slot back itself."""
        self.granted = True
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class _ReleasingExecutor(Executor):
    """Submits to `inner` and calls `release` once the job is over: run, failed, or cancelled
    before a thread took it."""

    def __init__(self, inner: Executor, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release = release

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        try:
            future = self._inner.submit(fn, *args, **kwargs)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _: self._release())
        return future
