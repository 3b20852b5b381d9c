"""Work on a message in threads keeps the message's memory counted until it is done."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.threads import holding, in_thread, shielded

WAIT_S = 5.0


class Released:
    def __init__(self) -> None:
        self.times = 0

    def __call__(self) -> None:
        self.times += 1


async def until(condition: threading.Event) -> None:
    """Wait on the loop, without blocking it, for a thread to set `condition`."""
    async with asyncio.timeout(WAIT_S):
        while not condition.is_set():
            await asyncio.sleep(0.005)


async def until_released(released: Released) -> None:
    """Wait for the last user to leave the hold, then check it was released once."""
    async with asyncio.timeout(WAIT_S):
        while not released.times:
            await asyncio.sleep(0.005)
    assert released.times == 1


def test_in_thread_returns_the_result_and_raises_the_exception() -> None:
    def divide(a: int, b: int) -> float:
        return a / b

    async def main() -> None:
        released = Released()
        with holding(released):
            assert await in_thread(divide, 6, 3) == 2
            with pytest.raises(ZeroDivisionError):
                await in_thread(divide, 1, 0)
            assert released.times == 0
        assert released.times == 1
        assert await in_thread(divide, 1, 2) == 0.5  # no hold open: plain to_thread

    asyncio.run(main())


def test_a_job_cancelled_before_a_thread_took_it_never_runs_and_holds_nothing() -> None:
    busy, go_on = threading.Event(), threading.Event()
    ran: list[str] = []

    def occupy() -> None:
        busy.set()
        go_on.wait(WAIT_S)

    async def main() -> None:
        released = Released()
        with ThreadPoolExecutor(1) as one_thread:
            blocker = asyncio.ensure_future(in_thread(occupy, executor=one_thread))
            await until(busy)
            with holding(released):
                queued = asyncio.ensure_future(in_thread(ran.append, "ran", executor=one_thread))
                await asyncio.sleep(0.01)
                queued.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await queued
            assert released.times == 1  # at once: nothing will use the message
            go_on.set()
            await blocker
        assert ran == []

    asyncio.run(main())


@pytest.mark.parametrize("work", ["thread", "shielded task"])
def test_a_cancelled_wait_keeps_the_message_held_until_the_work_is_done(work: str) -> None:
    started, go_on = threading.Event(), threading.Event()

    def slow_parse() -> None:
        started.set()
        go_on.wait(WAIT_S)

    async def store() -> None:
        started.set()
        while not go_on.is_set():
            await asyncio.sleep(0.005)

    async def main() -> None:
        released = Released()
        with holding(released):
            waiting = asyncio.ensure_future(
                in_thread(slow_parse) if work == "thread" else shielded(store())
            )
            await until(started)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        # The session is gone, the work still reads the message: still counted.
        assert released.times == 0
        go_on.set()
        await until_released(released)

    asyncio.run(main())


def test_a_job_the_executor_refuses_holds_nothing() -> None:
    async def main() -> None:
        released = Released()
        closed = ThreadPoolExecutor(1)
        closed.shutdown()
        with holding(released), pytest.raises(RuntimeError):
            await in_thread(print, "never", executor=closed)
        assert released.times == 1

    asyncio.run(main())
