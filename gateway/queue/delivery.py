"""Delivery workers: take due messages from the spool and relay them to the internal server.

`[relay] connections` workers each keep one RelayConnection. New messages arrive through
`notify()`; a scanner finds the rest (retries, messages left by a restart or by another
process) every `[queue] scan_interval_s`. A message is worked on only under its spool claim, so
several processes sharing the spool never deliver it twice.

Duplicate window: after the downstream's 250 the message leaves the spool at once (before any
logging or bookkeeping). A crash between that 250 and the removal delivers the message again on
the next attempt; SMTP has no way to close that window entirely (RFC 5321 section 6.1).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from gateway.config import QueueConfig, RelayConfig
from gateway.errors import SpoolError
from gateway.observe import metrics
from gateway.queue.admin import QueueStats, stats_of
from gateway.queue.dsn import Kind as NoticeKind
from gateway.queue.dsn import mail_parameters, rcpt_parameters, wanted
from gateway.queue.relay import DsnParameters, RelayConnection
from gateway.queue.retry import Disposition, RecipientOutcome, apply_attempt
from gateway.queue.spool import Claim, Prepared, QueueEntry, Spool

log = logging.getLogger(__name__)

STOP_DRAIN_S = 10.0  # how long stop() lets in-flight deliveries finish
STATS_LOG_INTERVAL_S = 60.0  # queue size and oldest age go to the log this often
# Just-spooled messages handed over in memory (see notify) take at most this much memory;
# beyond it they are read back from the spool as any other.
FRESH_MAX_BYTES = 32 * 1024 * 1024


class Bouncer(Protocol):
    """Tells the sender about failed, long-delayed or relayed recipients (of the recipient
    indexes `among`, if given); returns the DSN's queue id."""

    def notify(
        self,
        entry: QueueEntry,
        original: bytes,
        kind: NoticeKind,
        now: float,
        among: Collection[int] | None = None,
    ) -> str | None: ...


class DeliveryService:
    def __init__(
        self,
        spool: Spool,
        relay: RelayConfig,
        queue: QueueConfig,
        hostname: str,
        bouncer: Bouncer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spool = spool
        self.relay = relay
        self.queue = queue
        self.hostname = hostname
        self.bouncer = bouncer
        self.clock = clock
        self._work: asyncio.Queue[str] = asyncio.Queue()
        self._known: set[str] = set()  # ids waiting in _work or being worked on here
        self._fresh: dict[str, Prepared] = {}  # handed over by notify(), by id
        self._fresh_bytes = 0
        self._workers: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[None]] = set()
        self._scanner: asyncio.Task[None] | None = None
        self._connections: list[RelayConnection] = []
        self._stopping = False
        self.stats = QueueStats(size=0, held=0, bytes=0, oldest_age_s=0.0)  # as of the last scan
        self._stats_logged_at = float("-inf")

    async def start(self) -> None:
        swept = await asyncio.to_thread(self.spool.sweep)
        if swept:
            log.warning("queue: swept %d leftover files of an earlier crash", swept)
        for number in range(self.relay.connections):
            connection = RelayConnection(self.relay, self.hostname)
            self._connections.append(connection)
            self._workers.append(
                asyncio.create_task(self._worker(connection), name=f"delivery-{number}")
            )
        self._scanner = asyncio.create_task(self._scan_loop(), name="delivery-scanner")

    def notify(self, msg_id: str, spooled: Prepared | None = None) -> None:
        """Deliver `msg_id` soon (call from the event loop, after it is spooled). `spooled`,
        what was just written, spares reading the envelope and bytes back: the claim (flock)
        is still taken, and a state file written meanwhile still wins."""
        if self._stopping or msg_id in self._known:
            return
        self._known.add(msg_id)
        size = len(spooled.data) if spooled is not None else 0
        if spooled is not None and self._fresh_bytes + size <= FRESH_MAX_BYTES:
            self._fresh[msg_id] = spooled
            self._fresh_bytes += size
        self._work.put_nowait(msg_id)

    async def stop(self, drain_s: float = STOP_DRAIN_S) -> None:
        """Stop taking work, let in-flight deliveries finish (bounded), close connections."""
        self._stopping = True
        if self._scanner is not None:
            self._scanner.cancel()
        for task in self._workers:
            if task not in self._busy:
                task.cancel()
        busy = [t for t in self._workers if t in self._busy]
        if busy:
            _, late = await asyncio.wait(busy, timeout=drain_s)
            for task in late:
                task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._scanner is not None:
            await asyncio.gather(self._scanner, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self._connections), return_exceptions=True)
        self._workers.clear()
        self._connections.clear()

    # -- scanning --------------------------------------------------------------------------

    async def _scan_loop(self) -> None:
        while not self._stopping:
            try:
                due = await asyncio.to_thread(self._due_ids)
            except Exception:  # whatever one scan meets, the next one must still run
                log.exception("queue: scan failed")
                due = []
            for msg_id in due:
                self.notify(msg_id)
            await asyncio.sleep(self.queue.scan_interval_s)

    def _due_ids(self) -> list[str]:
        now = self.clock()
        entries = list(self.spool.entries())
        self.stats = stats_of(entries, now)
        if now - self._stats_logged_at >= STATS_LOG_INTERVAL_S:
            self._stats_logged_at = now
            log.info(
                "queue: size=%d held=%d bytes=%d oldest_age_s=%.0f",
                self.stats.size,
                self.stats.held,
                self.stats.bytes,
                self.stats.oldest_age_s,
            )
        return [e.id for e in entries if not e.held and e.next_attempt_at <= now]

    # -- delivering ------------------------------------------------------------------------

    async def _worker(self, connection: RelayConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        while not self._stopping:
            msg_id = await self._work.get()
            self._busy.add(task)
            try:
                await self._deliver(msg_id, connection)
            except Exception:  # one bad message must not kill the worker
                log.exception("queue: delivery of %s failed unexpectedly", msg_id)
            finally:
                self._busy.discard(task)
                self._known.discard(msg_id)
                fresh = self._fresh.pop(msg_id, None)
                if fresh is not None:
                    self._fresh_bytes -= len(fresh.data)

    async def _claim(self, msg_id: str) -> tuple[Claim, bytes] | None:
        fresh = self._fresh.get(msg_id)
        if fresh is not None:
            # Spooled by this process a moment ago: its small state file is in the page
            # cache, and the claim (open, flock, stat, read) costs less here than a thread
            # hop. The data came with notify().
            return self._claim_and_read(msg_id, fresh)
        # Else one thread hop for the claim and the data. If we are cancelled meanwhile, the
        # claim must still be released.
        future = asyncio.ensure_future(asyncio.to_thread(self._claim_and_read, msg_id, None))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_release_claim)
            raise

    def _claim_and_read(self, msg_id: str, fresh: Prepared | None) -> tuple[Claim, bytes] | None:
        claim = self.spool.try_claim(msg_id, fresh)
        if claim is None:
            return None
        if fresh is not None and len(fresh.data) == claim.entry.size:
            return claim, fresh.data
        try:
            return claim, claim.read_data()
        except BaseException:
            claim.release()
            raise

    async def _deliver(self, msg_id: str, connection: RelayConnection) -> None:
        claimed = await self._claim(msg_id)
        if claimed is None:
            return  # another worker or process has it, or it is gone
        claim, data = claimed
        settling: asyncio.Future[None] | None = None
        try:
            entry = claim.entry
            if entry.held or entry.next_attempt_at > self.clock():
                return
            pending = [i for i, r in enumerate(entry.recipients) if r.status == "pending"]
            # Nothing pending: a crash interrupted the removal or the bounce; finish it.
            results = (
                await connection.send(
                    entry.mail_from,
                    [entry.recipients[i].address for i in pending],
                    data,
                    smtputf8=entry.needs_smtputf8,
                    dsn=_dsn_parameters(entry, pending),
                )
                if pending
                else []
            )
            outcomes = dict(zip(pending, results, strict=True))
            # Shielded: once the downstream has answered, its outcome is recorded even if we
            # are being stopped, and the claim is held until the record is written.
            settling = asyncio.ensure_future(self._settle(claim, entry, outcomes, data))
            await asyncio.shield(settling)
        finally:
            if settling is not None and not settling.done():
                settling.add_done_callback(lambda _: claim.release())
            else:
                claim.release()

    async def _settle(
        self, claim: Claim, entry: QueueEntry, outcomes: dict[int, RecipientOutcome], data: bytes
    ) -> None:
        now = self.clock()
        updated, disposition = apply_attempt(entry, outcomes, now, self.queue)
        # Delivered to a server without DSN: a NOTIFY=SUCCESS is ours to answer (RFC 3461
        # 6.2). Told after the attempt is recorded, never before: a failure to queue the
        # notice must not make us relay the message again.
        relayed = _relayed_to_tell(updated, outcomes)
        if disposition is Disposition.DONE:
            self.spool.remove(claim)  # first: the duplicate window; no thread hop
            metrics.delivery("delivered")
            log.info("queue: %s delivered to %s", entry.id, _summary(updated))
            await self._tell_relayed(updated, data, relayed, now)
        elif disposition is Disposition.RETRY:
            metrics.delivery("deferred")
            if self._delay_warning_due(updated, now):
                updated = dataclasses.replace(updated, delay_warned=True)
                await asyncio.to_thread(claim.update, updated)  # before: never warn twice
                await self._tell_sender(updated, data, "delay", now)
            else:
                await asyncio.to_thread(claim.update, updated)
            await self._tell_relayed(updated, data, relayed, now)
            log.info(
                "queue: %s deferred (attempt %d, next in %.0fs): %s",
                entry.id,
                updated.attempts,
                updated.next_attempt_at - self.clock(),
                updated.last_error,
            )
        else:
            metrics.delivery("failed")
            # Persisted first, so a failing bounce never makes us relay to anyone again.
            await asyncio.to_thread(claim.update, updated)
            await self._tell_relayed(updated, data, relayed, now)
            try:
                await self._tell_sender(updated, data, "failure", now)
            except SpoolError:
                raise  # e.g. disk full: the next attempt bounces again
            except Exception:
                # A bounce that cannot be built (odd envelope data) would fail the same way at
                # every scan, forever: log it, and keep the message in failed/ for the admin.
                log.exception("queue: %s: the failure notice could not be built", entry.id)
            await asyncio.to_thread(self.spool.move_to_failed, claim, updated)
            log.warning("queue: %s failed: %s", entry.id, _summary(updated))

    def _delay_warning_due(self, entry: QueueEntry, now: float) -> bool:
        warn_after_s = self.queue.delay_warning_s
        return (
            bool(warn_after_s)
            and not entry.delay_warned
            and now - entry.received_at >= warn_after_s
        )

    async def _tell_sender(
        self,
        entry: QueueEntry,
        data: bytes,
        kind: NoticeKind,
        now: float,
        among: Collection[int] | None = None,
    ) -> None:
        if self.bouncer is None:
            return
        dsn_id = await asyncio.to_thread(self.bouncer.notify, entry, data, kind, now, among)
        if dsn_id is not None:
            log.info("queue: %s %s notice queued as %s", entry.id, kind, dsn_id)
            self.notify(dsn_id)

    async def _tell_relayed(
        self, entry: QueueEntry, data: bytes, indexes: Sequence[int], now: float
    ) -> None:
        if not indexes:
            return
        try:
            await self._tell_sender(entry, data, "relayed", now, frozenset(indexes))
        except Exception:  # the message is delivered and recorded: only the notice is lost
            log.exception("queue: %s: the relayed notice could not be queued", entry.id)


def _release_claim(future: asyncio.Future[tuple[Claim, bytes] | None]) -> None:
    if not future.cancelled() and future.exception() is None:
        claimed = future.result()
        if claimed is not None:
            claimed[0].release()


def _relayed_to_tell(entry: QueueEntry, outcomes: dict[int, RecipientOutcome]) -> list[int]:
    """Recipients just delivered to a server without DSN that asked for NOTIFY=SUCCESS (checked
    here: a thread hop to the bouncer for every message would cost more than the rest)."""
    if not entry.mail_from:
        return []  # never a notice to the null sender
    return [
        i
        for i, o in outcomes.items()
        if o.kind == "delivered" and not o.dsn_passed and wanted(entry.recipients[i], "relayed")
    ]


def _dsn_parameters(entry: QueueEntry, indexes: Sequence[int]) -> DsnParameters:
    return DsnParameters(
        mail=mail_parameters(entry),
        rcpts=tuple(rcpt_parameters(entry.recipients[i]) for i in indexes),
    )


def _summary(entry: QueueEntry) -> str:
    return "; ".join(f"{r.address} {r.status}: {r.reply}" for r in entry.recipients)
