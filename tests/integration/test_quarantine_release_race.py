"""Two admins (two processes) release the same messages at the same instant: each goes out once."""

from __future__ import annotations

import multiprocessing
import queue
from pathlib import Path

from gateway.errors import QuarantineError
from gateway.quarantine import admin
from gateway.quarantine.store import Filter, QuarantineStore, State
from gateway.queue.spool import Spool
from tests.support.quarantine import hold

MESSAGES = 20
PROCESSES = 2
JOIN_TIMEOUT_S = 30.0


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
            admin.release(store, spool, qid, released_by="race")
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
