"""Work on a message in threads keeps the message's memory counted until it is done."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.errors import ThreadsBusy
from gateway.net.dns import share_key
from gateway.threads import FairThreads, holding, in_thread, shielded

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


def test_fair_threads_cap_each_client_and_bound_the_wait() -> None:
    """A client over its share waits for its own threads and, past the wait, gets
    ThreadsBusy; another client still gets a thread at once."""
    pool = FairThreads(threads=3, per_client=2, wait_s=0.2, name="fair-test")
    gate = threading.Event()

    async def main() -> None:
        hogs = [asyncio.ensure_future(pool.run("10.0.0.1", gate.wait, WAIT_S)) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert pool.in_use("10.0.0.1") == 2
        with pytest.raises(ThreadsBusy, match=r"2 for 10\.0\.0\.1"):
            await pool.run("10.0.0.1", lambda: None)
        assert await pool.run("10.0.0.2", lambda: "mine") == "mine"
        gate.set()
        assert await asyncio.gather(*hogs) == [True, True]

    try:
        asyncio.run(main())
    finally:
        gate.set()
        pool.shutdown()


def test_fair_threads_serve_waiting_clients_in_turn_and_count_a_thread_until_it_ends() -> None:
    pool = FairThreads(threads=1, per_client=1, wait_s=WAIT_S, name="fair-test")
    gate = threading.Event()
    order: list[str] = []

    async def main() -> None:
        first = asyncio.ensure_future(pool.run("a", gate.wait, WAIT_S))
        await asyncio.sleep(0.05)
        # Two more of a's, then one of b's: b is served before a's second waiter.
        waiting = [
            asyncio.ensure_future(pool.run(client, order.append, client))
            for client in ("a", "a", "b")
        ]
        await asyncio.sleep(0.05)
        first.cancel()  # its awaiter gives up; the thread still holds the slot
        await asyncio.sleep(0.1)
        assert order == [] and pool.in_use() == 1
        gate.set()
        await asyncio.gather(*waiting)
        assert order == ["a", "b", "a"]
        assert pool.in_use() == 0

    try:
        asyncio.run(main())
    finally:
        gate.set()
        pool.shutdown()


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("unix", "unix"),
    ],
)
def test_a_client_is_its_ipv4_address_or_its_ipv6_64(ip: str, key: str) -> None:
    # One host given a /64 must not get 2**64 shares of the DNS-bound threads.
    assert share_key(ip) == key
