"""Recipient verification against the real recording downstream: probe, cache, failure, cost."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time

from gateway.config import VerifyConfig
from gateway.queue.verify import RecipientVerifier
from tests.integration.test_delivery_relay import relay_to, run
from tests.support.downstream import Downstream

VERIFY = VerifyConfig(positive_ttl_s=60.0, negative_ttl_s=60.0, timeout_s=2.0, connections=2)


def verifier_for(downstream: Downstream, **changes: object) -> RecipientVerifier:
    config = dataclasses.replace(VERIFY, **changes)  # type: ignore[arg-type]
    return RecipientVerifier(relay_to(downstream), config, "mx.gateway.test")


def test_unknown_user_known_user_and_the_cache(downstream: Downstream) -> None:
    downstream.fail_rcpt("550 5.1.1 No such user", rcpt="nobody@example.test")

    async def scenario() -> None:
        verifier = verifier_for(downstream)
        assert await verifier.verify("bob@example.test") == "ok"
        assert await verifier.verify("nobody@example.test") == "unknown"
        assert verifier.probes == 2 and downstream.rcpt_commands == 2
        # Cache hits (case-insensitive) do not probe, for either answer.
        assert await verifier.verify("BOB@example.test") == "ok"
        assert await verifier.verify("nobody@example.test") == "unknown"
        assert verifier.probes == 2 and downstream.rcpt_commands == 2
        await verifier.close()

    run(scenario())
    assert downstream.messages == []  # a probe never sends DATA


def test_expired_cache_entries_are_probed_again(downstream: Downstream) -> None:
    async def scenario() -> None:
        verifier = verifier_for(downstream, positive_ttl_s=0.05)
        assert await verifier.verify("bob@example.test") == "ok"
        await asyncio.sleep(0.1)
        assert await verifier.verify("bob@example.test") == "ok"
        assert verifier.probes == 2
        await verifier.close()

    run(scenario())


def test_internal_server_down_or_tempfailing_is_unavailable_and_not_cached(
    downstream: Downstream,
) -> None:
    async def scenario() -> None:
        verifier = verifier_for(downstream)
        await asyncio.to_thread(downstream.stop)
        assert await verifier.verify("bob@example.test") == "unavailable"
        await asyncio.to_thread(downstream.start)
        downstream.fail_rcpt("451 4.3.0 Directory unavailable")
        assert await verifier.verify("bob@example.test") == "unavailable"
        downstream.behave()
        assert await verifier.verify("bob@example.test") == "ok"
        assert verifier.probes == 3
        await verifier.close()

    run(scenario())


def test_slow_internal_server_times_out_as_unavailable(downstream: Downstream) -> None:
    downstream.delay_s = 1.0

    async def scenario() -> None:
        verifier = verifier_for(downstream, timeout_s=0.2)
        started = time.monotonic()
        assert await verifier.verify("bob@example.test") == "unavailable"
        assert time.monotonic() - started < 0.9
        await verifier.close()

    run(scenario())


def test_concurrent_rcpts_for_one_address_share_one_probe(downstream: Downstream) -> None:
    async def scenario() -> None:
        verifier = verifier_for(downstream)
        results = await asyncio.gather(*(verifier.verify("bob@example.test") for _ in range(20)))
        assert set(results) == {"ok"} and verifier.probes == 1
        await verifier.close()

    run(scenario())


def test_time_added_to_rcpt(downstream: Downstream) -> None:
    """Measured for the issue note: p50 of verify() on a cache miss and on a hit."""
    count = 200

    async def scenario() -> None:
        verifier = verifier_for(downstream, connections=1)
        await verifier.verify("warmup@example.test")  # connect once; pooled afterwards
        misses, hits = [], []
        for n in range(count):
            started = time.perf_counter()
            assert await verifier.verify(f"user{n}@example.test") == "ok"
            misses.append(time.perf_counter() - started)
        for n in range(count):
            started = time.perf_counter()
            assert await verifier.verify(f"user{n}@example.test") == "ok"
            hits.append(time.perf_counter() - started)
        await verifier.close()
        miss_ms, hit_ms = statistics.median(misses) * 1e3, statistics.median(hits) * 1e3
        print(f"\nverify p50: miss {miss_ms:.3f} ms, hit {hit_ms:.4f} ms ({count} each)")
        assert hit_ms < miss_ms
        assert verifier.probes == count + 1

    run(scenario())


def test_hung_internal_server_the_wait_for_a_probe_counts_in_the_timeout(
    downstream: Downstream,
) -> None:
    """A tarpitting internal server: 20 RCPTs for different users against 2 probe connections.
    Each is answered "unavailable" within about one timeout_s, not after its turn in the queue
    (before: the wait for a connection was outside the timeout, ~5 s for the last one)."""
    downstream.delay_s = 30.0

    async def scenario() -> None:
        verifier = verifier_for(downstream, timeout_s=0.5)

        async def timed(n: int) -> tuple[str, float]:
            started = time.monotonic()
            result = await verifier.verify(f"user{n}@example.test")
            return result, time.monotonic() - started

        answers = await asyncio.gather(*(timed(n) for n in range(20)))
        assert {result for result, _ in answers} == {"unavailable"}
        assert max(elapsed for _, elapsed in answers) < 1.5
        await verifier.close()

    run(scenario())


def test_hung_internal_server_the_waiting_queue_is_bounded(downstream: Downstream) -> None:
    """Past max_waiting, a RCPT gets "unavailable" at once instead of joining the queue."""
    downstream.delay_s = 30.0

    async def scenario() -> None:
        verifier = verifier_for(downstream, timeout_s=2.0, max_waiting=3)
        probes = [asyncio.ensure_future(verifier.verify(f"user{n}@example.test")) for n in range(5)]
        await asyncio.sleep(0.2)  # 2 probing, 3 waiting for a connection
        started = time.monotonic()
        assert await verifier.verify("late@example.test") == "unavailable"
        assert time.monotonic() - started < 0.2
        assert set(await asyncio.gather(*probes)) == {"unavailable"}
        await verifier.close()

    run(scenario())
