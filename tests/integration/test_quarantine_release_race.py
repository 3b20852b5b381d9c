"""Releases that race (two admins at once) or die half-way (a claim retaken later): each message
goes out once."""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
from pathlib import Path

import pytest

from gateway.errors import QuarantineError
from gateway.quarantine import admin
from gateway.quarantine.store import STALE_CLAIM_S, Filter, QuarantineStore, State
from gateway.queue.delivery import DeliveryService
from gateway.queue.spool import Spool
from tests.integration.test_delivery_relay import FAST_QUEUE, relay_to, run, until
from tests.support.downstream import Downstream
from tests.support.quarantine import hold

MESSAGES = 20
PROCESSES = 2
JOIN_TIMEOUT_S = 30.0
HOST = "mx.gateway.test"


def _release_all(
    storage: str,
    ids: list[str],
    start: multiprocessing.synchronize.Barrier,
    results: multiprocessing.Queue[tuple[str, str]],
) -> None:
    store = QuarantineStore(Path(storage) / "quarantine", create=False)
    spool = Spool(Path(storage) / "queue", min_free_bytes=0)
    start.wait(timeout=JOIN_TIMEOUT_S)
    for qid in ids:
        try:
            admin.release(store, spool, qid, released_by="race", authserv_id=HOST)
            results.put((qid, "released"))
        except QuarantineError as exc:
            results.put((qid, f"refused: {exc}"))
    store.close()


def test_concurrent_double_release_delivers_each_message_once(tmp_path: Path) -> None:
    storage = tmp_path / "var"
    store = QuarantineStore(storage / "quarantine")
    ids = [hold(store) for _ in range(MESSAGES)]
    context = multiprocessing.get_context("spawn")  # no inherited SQLite handles or threads
    start = context.Barrier(PROCESSES)
    results: multiprocessing.Queue[tuple[str, str]] = context.Queue()
    workers = [
        context.Process(target=_release_all, args=(str(storage), ids, start, results))
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    try:
        outcomes = [results.get(timeout=JOIN_TIMEOUT_S) for _ in range(MESSAGES * PROCESSES)]
    except queue.Empty:
        outcomes = []
    finally:
        for worker in workers:
            worker.join(timeout=JOIN_TIMEOUT_S)
            if worker.is_alive():
                worker.kill()  # by its own pid: only what this test started
                worker.join(timeout=5)

    assert len(outcomes) == MESSAGES * PROCESSES, "a worker did not finish"
    released = sorted(qid for qid, outcome in outcomes if outcome == "released")
    assert released == sorted(ids)  # each exactly once, none lost
    refusals = [outcome for _, outcome in outcomes if outcome != "released"]
    assert all("being released" in r or "already released" in r for r in refusals), refusals
    assert len(Spool(storage / "queue", min_free_bytes=0).ids()) == MESSAGES
    states = {e.state for e in store.find(Filter(states=(), limit=None)) if hasattr(e, "state")}
    assert states == {State.RELEASED}
    store.close()


class _DyingQueue:
    """The spool, in a releasing process that dies the moment the message is queued."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def enqueue(self, msg_id: str, mail_from: str, rcpt_tos: list[str], data: bytes) -> None:
        self.spool.enqueue(msg_id, mail_from, rcpt_tos, data)
        os._exit(DIED)  # no finally, no cleanup: as a kill -9 or a power cut would


DIED = 17


def _release_and_die(storage: str, qid: str) -> None:
    store = QuarantineStore(Path(storage) / "quarantine", create=False)
    spool = Spool(Path(storage) / "queue", min_free_bytes=0)
    admin.release(store, _DyingQueue(spool), qid, released_by="first", authserv_id=HOST)


def test_a_stale_release_retaken_after_delivery_does_not_deliver_again(
    tmp_path: Path, downstream: Downstream
) -> None:
    storage = tmp_path / "var"
    store = QuarantineStore(storage / "quarantine")
    qid = hold(store)
    spool = Spool(storage / "queue", min_free_bytes=0)

    # 1. The first release queues the message and its process dies before anything else.
    first = multiprocessing.get_context("spawn").Process(
        target=_release_and_die, args=(str(storage), qid)
    )
    first.start()
    first.join(timeout=JOIN_TIMEOUT_S)
    assert first.exitcode == DIED
    [queue_id] = spool.ids()

    # 2. The queue delivers it: it is no longer in the queue for anyone to find.
    async def deliver() -> None:
        service = DeliveryService(spool, relay_to(downstream), FAST_QUEUE, "mx.gateway.test")
        await service.start()
        await downstream.wait_for_async(1)
        await until(lambda: spool.ids() == [])
        await service.stop()

    run(deliver())

    # 3. Much later (any claim would be stale by now) the admin releases it again.
    later = time.time() + STALE_CLAIM_S + 60
    with pytest.raises(QuarantineError, match="already released"):
        admin.release(store, spool, qid, released_by="second", authserv_id=HOST, now=later)

    assert spool.ids() == [] and len(downstream.messages) == 1  # delivered once
    assert b"by=first" in downstream.messages[0].data
    entry = store.get(qid)
    assert (entry.state, entry.release_id) == (State.RELEASED, queue_id)
    store.close()
