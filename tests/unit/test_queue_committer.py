"""Group commit: several messages written together, each one's outcome its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.errors import SpoolError
from gateway.queue.committer import GroupCommitter
from gateway.queue.spool import Prepared, Spool

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


class RecordingSpool(Spool):
    """A real spool that remembers the size of each batch it committed."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, min_free_bytes=0)
        self.batches: list[int] = []
        self.gate = threading.Event()  # the first batch waits for it, so others pile up
        self.gate.set()

    def commit_many(self, batch: Sequence[Prepared]) -> list[SpoolError | None]:
        self.gate.wait(10)
        self.batches.append(len(batch))
        return super().commit_many(batch)


@pytest.fixture
def spool(tmp_path: Path) -> RecordingSpool:
    return RecordingSpool(tmp_path / "queue")


def prepare(spool: Spool, msg_id: str, data: bytes = MESSAGE) -> Prepared:
    return spool.prepare(msg_id, "a@example.org", ["b@example.test"], data)


def test_a_batch_commits_every_message_durably_and_in_full(spool: RecordingSpool) -> None:
    errors = spool.commit_many([prepare(spool, f"m{n}", MESSAGE * (n + 1)) for n in range(5)])
    assert errors == [None] * 5
    assert spool.ids() == [f"m{n}" for n in range(5)]
    assert [spool.read_data(f"m{n}") for n in range(5)] == [MESSAGE * (n + 1) for n in range(5)]
    assert list(spool.tmp_dir.iterdir()) == []


def test_one_failed_message_in_a_batch_fails_alone(spool: RecordingSpool) -> None:
    # Its temporary file is in the way (O_EXCL): only that message is refused.
    (spool.tmp_dir / "m1.msg").write_bytes(b"left by someone else")
    errors = spool.commit_many([prepare(spool, "m0"), prepare(spool, "m1"), prepare(spool, "m2")])
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], SpoolError) and "m1: cannot spool" in str(errors[1])
    assert spool.ids() == ["m0", "m2"]


def test_a_state_file_from_an_earlier_life_of_the_id_is_removed(spool: RecordingSpool) -> None:
    spool.state_path("m1").write_text("{}")
    assert spool.commit_many([prepare(spool, "m1")]) == [None]
    assert not spool.state_path("m1").exists()
    assert spool.load("m1").recipients[0].status == "pending"


def test_concurrent_commits_share_batches_and_each_waits_for_its_own(
    spool: RecordingSpool,
) -> None:
    committer = GroupCommitter(spool)
    (spool.tmp_dir / "m3.msg").write_bytes(b"in the way")

    async def scenario() -> list[BaseException | None]:
        spool.gate.clear()
        first = asyncio.ensure_future(committer.commit(prepare(spool, "m0")))
        await asyncio.sleep(0)  # m0 is handed over...
        for _ in range(500):  # ...and taken by the thread, which waits at the gate
            if committer._waiting.empty():
                break
            await asyncio.sleep(0.01)
        others = [committer.commit(prepare(spool, f"m{n}")) for n in (1, 2, 3, 4)]
        waiting = [asyncio.ensure_future(c) for c in others]
        await asyncio.sleep(0)  # all four handed over while m0's batch is held
        spool.gate.set()
        return await asyncio.gather(first, *waiting, return_exceptions=True)

    try:
        outcomes = asyncio.run(asyncio.wait_for(scenario(), 10))
    finally:
        committer.close()
    assert [o is None for o in outcomes] == [True, True, True, False, True]
    assert isinstance(outcomes[3], SpoolError)
    assert spool.ids() == ["m0", "m1", "m2", "m4"]
    assert spool.batches == [1, 4]  # m1..m4 waited together, and went in one batch


def test_close_commits_what_waits_then_ends_the_thread(spool: RecordingSpool) -> None:
    committer = GroupCommitter(spool)

    async def commit(msg_id: str) -> None:
        await committer.commit(prepare(spool, msg_id))

    asyncio.run(commit("m0"))
    thread = committer._thread
    assert thread is not None and thread.is_alive()
    committer.close()
    assert not thread.is_alive()
    asyncio.run(commit("m1"))  # a commit after close starts a thread of its own
    committer.close()
    assert spool.ids() == ["m0", "m1"]


def test_a_batch_whose_directory_fsync_fails_is_taken_out_again(
    spool: RecordingSpool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each client gets a 4xx and will send again: a copy left in active/ would go out twice.
    monkeypatch.setattr(spool, "_active_fd", -1)  # fsync(active/) fails with EBADF
    errors = spool.commit_many([prepare(spool, "m0"), prepare(spool, "m1")])
    assert all(isinstance(e, SpoolError) and "cannot spool" in str(e) for e in errors)
    assert spool.ids() == [] and list(spool.tmp_dir.iterdir()) == []
