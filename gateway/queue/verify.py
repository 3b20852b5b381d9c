"""Recipient verification at RCPT time: ask the internal server, remember the answer.

Like Postfix's reject_unverified_recipient: a MAIL + RCPT probe on a pooled connection, no
DATA. "ok" and "unknown" are cached (positive and negative TTLs); "unavailable" never is, so
the next RCPT asks again. Concurrent RCPTs for one address share a single probe.

A hung or tarpitting internal server must not stall RCPT: the wait for a free pooled
connection counts inside `timeout_s`, and at most `max_waiting` probes wait for one; the rest
are "unavailable" at once (the configured temporary reply).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.config import RelayConfig, VerifyConfig
from gateway.queue.relay import ProbeResult, RelayConnection

log = logging.getLogger(__name__)


class RecipientVerifier:
    def __init__(
        self,
        relay: RelayConfig,
        verify: VerifyConfig,
        hostname: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.verify_config = verify
        self.clock = clock
        probe_relay = dataclasses.replace(relay, timeout_s=verify.timeout_s)
        self._pool: asyncio.Queue[RelayConnection] = asyncio.Queue()
        self._connections = [
            RelayConnection(probe_relay, hostname) for _ in range(verify.connections)
        ]
        for connection in self._connections:
            self._pool.put_nowait(connection)
        self._cache: OrderedDict[str, tuple[ProbeResult, float]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[ProbeResult]] = {}
        self.probes = 0  # how many probes went to the internal server (for tests and metrics)
        self._waiting = 0  # probes waiting for a free connection

    async def verify(self, rcpt: str) -> ProbeResult:
        key = rcpt.lower()  # domains are case-insensitive; local parts are in practice too
        cached = self._cache.get(key)
        if cached is not None:
            result, expires_at = cached
            if self.clock() < expires_at:
                self._cache.move_to_end(key)
                return result
            del self._cache[key]
        probe = self._inflight.get(key)
        if probe is None:
            probe = asyncio.ensure_future(self._probe_and_remember(rcpt, key))
            self._inflight[key] = probe
            probe.add_done_callback(lambda _: self._inflight.pop(key, None))
        # Shielded: one client hanging up must not cancel the probe others wait for.
        return await asyncio.shield(probe)

    async def _probe_and_remember(self, rcpt: str, key: str) -> ProbeResult:
        result = await self._probe(rcpt)
        self._remember(key, result)
        return result

    async def _probe(self, rcpt: str) -> ProbeResult:
        timeout_s = self.verify_config.timeout_s
        if self._pool.empty() and self._waiting >= self.verify_config.max_waiting:
            log.warning("verify: %s -> unavailable (%d probes waiting)", rcpt, self._waiting)
            return "unavailable"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._waiting += 1
        try:
            connection = await asyncio.wait_for(self._pool.get(), timeout_s)
        except TimeoutError:
            log.warning("verify: %s -> unavailable (no free probe within %ss)", rcpt, timeout_s)
            return "unavailable"
        finally:
            self._waiting -= 1
        self.probes += 1
        try:
            result, reply = await asyncio.wait_for(
                connection.probe(self.verify_config.probe_sender, rcpt),
                max(deadline - loop.time(), 0.0),
            )
        except TimeoutError:
            await connection.close()  # the session is mid-command: useless now
            result, reply = "unavailable", f"probe timed out after {timeout_s}s"
        finally:
            self._pool.put_nowait(connection)
        log.debug("verify: %s -> %s (%s)", rcpt, result, reply)
        return result

    def _remember(self, key: str, result: ProbeResult) -> None:
        ttl_s = {
            "ok": self.verify_config.positive_ttl_s,
            "unknown": self.verify_config.negative_ttl_s,
        }.get(result, 0.0)
        if ttl_s <= 0:
            return
        self._cache[key] = (result, self.clock() + ttl_s)
        self._cache.move_to_end(key)
        while len(self._cache) > self.verify_config.cache_entries:
            self._cache.popitem(last=False)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._connections), return_exceptions=True)
