"""Recipient verification at RCPT time: ask the internal server, remember the answer.

Like Postfix's reject_unverified_recipient: a MAIL + RCPT probe on a pooled connection, no
DATA. "ok" and "unknown" are cached (positive and negative TTLs); "unavailable" never is, so
the next RCPT asks again. Concurrent RCPTs for one address share a single probe.

A hung or tarpitting internal server must not stall RCPT: the wait for a free pooled
connection counts inside `timeout_s`, and at most `max_waiting` probes wait for one; the rest
are "unavailable" at once (the configured temporary reply).

With `known` (queue/known_recipients.py), every "ok" is also kept on disk for `known_ttl_s`:
while the internal server cannot answer, an address it confirmed within that time is "ok"
(the mail is queued and delivered once the server is back) instead of a 451 for every RCPT.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.config import RelayConfig, VerifyConfig
from gateway.queue.known_recipients import KnownRecipients
from gateway.queue.relay import ProbeResult, RelayConnection

log = logging.getLogger(__name__)


class RecipientVerifier:
    def __init__(
        self,
        relay: RelayConfig,
        verify: VerifyConfig,
        hostname: str,
        clock: Callable[[], float] = time.monotonic,
        known: KnownRecipients | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.verify_config = verify
        self.clock = clock
        self.known = known
        self.wall_clock = wall_clock
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
        self.known_answers = 0  # "ok" from the known recipients during an outage
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
        if self.known is None:
            return result
        known = self.known
        if result == "ok":
            await asyncio.to_thread(known.remember, key, self.wall_clock())
        elif result == "unknown":
            await asyncio.to_thread(known.forget, key)
        elif result == "unavailable":
            since = self.wall_clock() - self.verify_config.known_ttl_s
            confirmed = await asyncio.to_thread(known.verified_since, key, since)
            if confirmed is not None:
                age_h = (self.wall_clock() - confirmed) / 3600
                log.info(
                    "verify: %s -> ok: internal server unavailable, confirmed %.1f h ago",
                    rcpt,
                    age_h,
                )
                self.known_answers += 1
                return "ok"  # not cached in memory: the next RCPT asks the server again
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
        if self.known is not None:
            self.known.close()
