"""The durable spool: atomic enqueue, state round trip, claims, removal, crash leftovers."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import SpoolError, SpoolFull
from gateway.queue.spool import ORPHAN_GRACE_S, Spool

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "queue", min_free_bytes=0)


def test_enqueue_makes_message_and_envelope_visible_together(spool: Spool) -> None:
    spool.enqueue("m1", "alice@example.org", ["bob@example.test", "carol@example.test"], MESSAGE)
    assert spool.ids() == ["m1"]
    entry = spool.load("m1")
    assert entry.mail_from == "alice@example.org"
    assert [r.address for r in entry.recipients] == ["bob@example.test", "carol@example.test"]
    assert all(r.status == "pending" for r in entry.recipients)
    assert entry.attempts == 0 and not entry.held and entry.size == len(MESSAGE)
    assert entry.next_attempt_at == entry.received_at
    assert spool.read_data("m1") == MESSAGE
    assert list(spool.tmp_dir.iterdir()) == []


def test_dsn_parameters_travel_with_the_message(spool: Spool) -> None:
    spool.enqueue(
        "m1", "a@example.org", ["b@example.test"], MESSAGE,
        dsn_ret="HDRS", dsn_envid="env-1", rcpt_notify=[("FAILURE", "DELAY")],
        rcpt_orcpt=["rfc822;b@example.test"],
    )  # fmt: skip
    entry = spool.load("m1")
    assert (entry.dsn_ret, entry.dsn_envid) == ("HDRS", "env-1")
    assert entry.recipients[0].notify == ("FAILURE", "DELAY")
    assert entry.recipients[0].orcpt == "rfc822;b@example.test"


def test_unsafe_ids_and_empty_recipients_are_refused(spool: Spool) -> None:
    for bad in ("../x", "a/b", "", "x" * 200, "a.b"):
        with pytest.raises(SpoolError, match="invalid queue id"):
            spool.enqueue(bad, "a@example.org", ["b@example.test"], MESSAGE)
    with pytest.raises(SpoolError, match="no recipients"):
        spool.enqueue("m1", "a@example.org", [], MESSAGE)
    spool.enqueue("m1", "a@example.org", ["b@example.test"], MESSAGE)
    with pytest.raises(SpoolError, match="already queued"):
        spool.enqueue("m1", "a@example.org", ["b@example.test"], MESSAGE)


def test_failure_before_commit_leaves_nothing_visible(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_rename = os.rename
    calls: list[str] = []

    def failing_rename(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        calls.append(str(dst))
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(SpoolError, match="cannot spool"):
        spool.enqueue("m1", "a@example.org", ["b@example.test"], MESSAGE)
    assert calls == [str(spool.data_path("m1"))]  # written and synced, then the commit failed
    monkeypatch.setattr(os, "rename", real_rename)
    assert spool.ids() == []
    assert list(spool.active_dir.iterdir()) == []
    assert list(spool.tmp_dir.iterdir()) == []


def test_crash_leftovers_are_invisible_and_swept(spool: Spool) -> None:
    # A crash mid-write leaves tmp files; one mid-removal leaves a state file without message.
    (spool.tmp_dir / "m1.msg").write_bytes(MESSAGE[:5])
    (spool.tmp_dir / "m4.msg").write_bytes(MESSAGE[:5])  # fresh: being written right now
    spool.state_path("m2").write_text("{}")
    spool.state_path("m3").write_text("{}")  # fresh: within the grace period
    old = time.time() - ORPHAN_GRACE_S - 10
    os.utime(spool.tmp_dir / "m1.msg", (old, old))
    os.utime(spool.state_path("m2"), (old, old))
    assert spool.ids() == []
    assert spool.sweep() == 2
    assert [p.name for p in spool.tmp_dir.iterdir()] == ["m4.msg"]
    assert sorted(p.name for p in spool.active_dir.iterdir()) == ["m3.json"]


def test_a_delivered_message_file_is_emptied_and_reused(spool: Spool) -> None:
    spool.enqueue("m1", "a@example.org", ["b@example.test"], MESSAGE)
    inode = spool.data_path("m1").stat().st_ino
    claim = spool.try_claim("m1")
    assert claim is not None
    spool.remove(claim)
    spool.wait_emptied()
    spares = list(spool.recycled_dir.iterdir())
    assert [p.stat().st_size for p in spares] == [0] and spool.ids() == []
    spool.enqueue("m2", "a@example.org", ["b@example.test"], MESSAGE + b"more\r\n")
    assert spool.data_path("m2").stat().st_ino == inode
    assert spool.read_data("m2") == MESSAGE + b"more\r\n"
    assert list(spool.recycled_dir.iterdir()) == [] and list(spool.tmp_dir.iterdir()) == []
    with pytest.raises(SpoolError, match="not in the queue"):
        spool.read_data("m1")


def test_a_spare_file_taken_by_another_process_falls_back_to_a_new_file(spool: Spool) -> None:
    spool.enqueue("m1", "a@example.org", ["b@example.test"], MESSAGE)
    with spool.claimed("m1") as claim:
        assert claim is not None
        spool.remove(claim)
    other = Spool(spool.root, min_free_bytes=0)  # another worker: it knows the same spare
    other.enqueue("m2", "a@example.org", ["b@example.test"], MESSAGE)
    spool.enqueue("m3", "a@example.org", ["b@example.test"], MESSAGE)
    assert spool.ids() == ["m2", "m3"]
    assert spool.read_data("m2") == spool.read_data("m3") == MESSAGE


def test_the_recycling_pool_is_bounded(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.queue.spool.RECYCLE_POOL_MAX", 2)
    for number in range(4):
        spool.enqueue(f"m{number}", "a@example.org", ["b@example.test"], MESSAGE)
    for number in range(4):
        with spool.claimed(f"m{number}") as claim:
            assert claim is not None
            spool.remove(claim)
    spool.wait_emptied()
    assert sorted(p.name for p in spool.recycled_dir.iterdir()) == ["m0", "m1"]
    (spool.recycled_dir / "left-by-admin").write_bytes(b"")
    assert spool.sweep() == 1
    assert sorted(p.name for p in spool.recycled_dir.iterdir()) == ["m0", "m1"]


def test_a_state_file_left_from_an_earlier_life_of_the_id_is_not_used(spool: Spool) -> None:
    # A crash between the two unlinks of remove() leaves the old state (all delivered); a
    # quarantine release queues the same id again, and must be delivered.
    spool.enqueue("m1", "a@example.org", ["b@example.test"], MESSAGE)
    claim = spool.try_claim("m1")
    assert claim is not None
    recipients = tuple(dataclasses.replace(r, status="delivered") for r in claim.entry.recipients)
    delivered = dataclasses.replace(claim.entry, recipients=recipients)
    claim.update(delivered)
    state = spool.state_path("m1").read_bytes()
    spool.remove(claim)
    spool.state_path("m1").write_bytes(state)
    spool.enqueue("m1", "a@example.org", ["b@example.test"], MESSAGE)
    assert [r.status for r in spool.load("m1").recipients] == ["pending"]


def test_a_spool_in_the_old_two_file_layout_is_converted(spool: Spool) -> None:
    def old_layout(directory: Path, msg_id: str, state_dir: Path | None = None) -> None:
        spool.enqueue(msg_id, "a@example.org", ["b@example.test"], MESSAGE + msg_id.encode())
        state = spool.load(msg_id)
        (directory / f"{msg_id}.eml").write_bytes(spool.read_data(msg_id))
        (state_dir or directory).joinpath(f"{msg_id}.json").write_text(
            json.dumps({**state.to_json(), "attempts": 2})
        )
        spool.data_path(msg_id).unlink()

    old_layout(spool.active_dir, "m1")
    old_layout(spool.failed_dir, "m2")
    old_layout(spool.active_dir, "m3", state_dir=spool.failed_dir)  # a crash mid-move
    assert spool.ids() == [] and spool.ids(failed=True) == []
    assert spool.sweep() == 4
    assert spool.ids() == ["m1"] and spool.ids(failed=True) == ["m2", "m3"]
    assert spool.read_data("m1") == MESSAGE + b"m1" and spool.load("m1").attempts == 2
    assert spool.read_data("m3", failed=True) == MESSAGE + b"m3"
    assert not list(spool.active_dir.glob("*.eml")) and not list(spool.failed_dir.glob("*.eml"))
    with spool.claimed("m1") as claim:
        assert claim is not None and claim.read_data() == MESSAGE + b"m1"


def test_a_claim_is_exclusive_across_open_file_descriptions(spool: Spool) -> None:
    spool.enqueue("m1", "a@example.org", ["b@example.test"], MESSAGE)
    other = Spool(spool.root, min_free_bytes=0)  # as another worker process would open it
    with spool.claimed("m1") as first:
        assert first is not None
        assert other.try_claim("m1") is None
        assert first.read_data() == MESSAGE
    with other.claimed("m1") as second:
        assert second is not None


def test_removed_message_cannot_be_claimed_again(spool: Spool) -> None:
    spool.enqueue("m1", "a@example.org", ["b@example.test"], MESSAGE)
    claim = spool.try_claim("m1")
    assert claim is not None
    spool.remove(claim)
    assert spool.ids() == [] and spool.try_claim("m1") is None
    assert list(spool.active_dir.iterdir()) == []


def test_state_updates_and_failed_moves_persist(spool: Spool) -> None:
    spool.enqueue("m1", "a@example.org", ["b@example.test"], MESSAGE)
    with spool.claimed("m1") as claim:
        assert claim is not None
        claim.update(dataclasses.replace(claim.entry, attempts=3, last_error="451 busy"))
    assert spool.load("m1").attempts == 3
    claim = spool.try_claim("m1")
    assert claim is not None
    spool.move_to_failed(claim, dataclasses.replace(claim.entry, last_error="550 no"))
    assert spool.ids() == [] and spool.ids(failed=True) == ["m1"]
    assert spool.load("m1", failed=True).last_error == "550 no"
    assert spool.read_data("m1", failed=True) == MESSAGE
    with pytest.raises(SpoolError, match="not in the queue"):
        spool.load("m1")


def test_crash_during_failed_move_is_finished_by_sweep(spool: Spool) -> None:
    spool.enqueue("m1", "a@example.org", ["b@example.test"], MESSAGE)
    with spool.claimed("m1") as claim:
        assert claim is not None
        claim.update(dataclasses.replace(claim.entry, last_error="550 no"))
    os.rename(spool.data_path("m1"), spool.data_path("m1", spool.failed_dir))
    assert spool.ids() == [] and spool.load("m1", failed=True).last_error == ""
    assert spool.sweep() == 1
    assert spool.read_data("m1", failed=True) == MESSAGE
    assert spool.load("m1", failed=True).last_error == "550 no"


def test_corrupt_state_is_a_clear_error(spool: Spool, caplog: pytest.LogCaptureFixture) -> None:
    spool.enqueue("m1", "a@example.org", ["b@example.test"], MESSAGE)
    spool.state_path("m1").write_text("{not json")
    with pytest.raises(SpoolError, match="corrupt state"):
        spool.load("m1")
    assert list(spool.entries()) == []
    assert "m1: corrupt state file" in caplog.text


def test_min_free_bytes_refuses_with_spool_full(tmp_path: Path) -> None:
    free = Spool(tmp_path / "q0", min_free_bytes=0).free_bytes()
    spool = Spool(tmp_path / "queue", min_free_bytes=free + 1)
    assert not spool.has_room(1)
    with pytest.raises(SpoolFull):
        spool.enqueue("m1", "a@example.org", ["b@example.test"], MESSAGE)
    assert spool.ids() == []


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mountpoint)],
        capture_output=True,
        timeout=10,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); min_free_bytes test covers SpoolFull")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], capture_output=True, timeout=10)


def test_enospc_is_spool_full_and_leaves_nothing_behind(
    tiny_filesystem: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tiny_filesystem / "queue", min_free_bytes=0)
    try:
        spool.enqueue("small", "a@example.org", ["b@example.test"], MESSAGE)
        # Another writer may fill the disk between the free-space check and the write.
        monkeypatch.setattr(spool, "has_room", lambda size: True)
        with pytest.raises(SpoolFull, match="disk full"):
            spool.enqueue("big", "a@example.org", ["b@example.test"], b"x" * 400_000)
        assert spool.ids() == ["small"]
        assert list(spool.tmp_dir.iterdir()) == []
        assert sorted(p.name for p in spool.active_dir.iterdir()) == ["small.msg"]
    finally:
        spool.close()  # its kept-open active/ would keep the tmpfs from being unmounted


def test_state_with_undecodable_reply_bytes_is_still_written(tmp_path: Path) -> None:
    # aiosmtplib hands over non-UTF-8 replies with surrogate escapes ("f\xfcr" from Latin-1).
    spool = Spool(tmp_path / "queue", min_free_bytes=0)
    msg_id = "1a2b3c4d5e6f7a8b9c0d1"
    spool.enqueue(msg_id, "a@x.test", ["b@example.test"], b"Subject: x\r\n\r\nx\r\n")
    claim = spool.try_claim(msg_id)
    assert claim is not None
    try:
        claim.update(dataclasses.replace(claim.entry, last_error="450 Postfach voll f\udcfcr b"))
    finally:
        claim.release()
    assert "f\udcfcr" in spool.load(msg_id).last_error


def _old_layout_pair(spool: Spool, msg_id: str) -> None:
    """`msg_id` as the earlier two-file layout kept it in active/ (ID.eml + ID.json)."""
    spool.enqueue(msg_id, "a@example.org", ["b@example.test"], MESSAGE)
    state = spool.load(msg_id)
    (spool.active_dir / f"{msg_id}.eml").write_bytes(spool.read_data(msg_id))
    spool.state_path(msg_id).write_text(json.dumps(state.to_json()))
    spool.data_path(msg_id).unlink()


def test_converting_again_never_replaces_a_message_another_worker_delivers(spool: Spool) -> None:
    # A crash between the conversion's rename and its unlink of ID.eml: the next worker to
    # start sweeps while another worker already holds the converted message's claim.
    _old_layout_pair(spool, "m1")
    old = (spool.active_dir / "m1.eml").read_bytes()
    assert spool.sweep() == 1
    (spool.active_dir / "m1.eml").write_bytes(old)
    other = Spool(spool.root, min_free_bytes=0)
    with spool.claimed("m1") as claim:
        assert claim is not None  # being delivered by this worker
        other.sweep()
        assert other.try_claim("m1") is None  # the other worker must not deliver it too
    assert not list(spool.active_dir.glob("*.eml")) and spool.ids() == ["m1"]


def test_an_old_layout_message_being_converted_elsewhere_is_left_alone(spool: Spool) -> None:
    # Two workers start at once on an old spool: the one that meets the pair second must not
    # convert it again (it would bring back a message the first one has delivered since).
    _old_layout_pair(spool, "m1")
    other = Spool(spool.root, min_free_bytes=0)
    with open(spool.active_dir / "m1.eml", "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as the other worker's conversion holds it
        assert other.sweep() == 0
    assert spool.ids() == [] and (spool.active_dir / "m1.eml").exists()
    assert spool.sweep() == 1 and spool.ids() == ["m1"]


@pytest.mark.parametrize("state", ['{"id": "m1"}', "[1, 2]", '{"id": "m1", "recipients": 3}'])
def test_a_corrupt_old_layout_state_does_not_stop_the_sweep(
    spool: Spool, state: str, caplog: pytest.LogCaptureFixture
) -> None:
    _old_layout_pair(spool, "m1")
    _old_layout_pair(spool, "m2")
    spool.state_path("m1").write_text(state)
    assert spool.sweep() == 1  # m2 is converted; m1 stays as it is for the admin
    assert spool.ids() == ["m2"] and (spool.active_dir / "m1.eml").exists()
    assert "m1" in caplog.text


def test_a_spare_swept_by_another_worker_mid_removal_still_removes_cleanly(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker starting up sweeps recycled/ while this one is between remove()'s rename and
    # its truncate: the delivered message must still leave the queue without an error.
    spool.enqueue("m1", "a@example.org", ["b@example.test"], MESSAGE)
    other = Spool(spool.root, min_free_bytes=0)
    truncate = os.truncate

    def swept_first(path: str, length: int) -> None:
        other.sweep()
        truncate(path, length)

    monkeypatch.setattr("gateway.queue.spool.os.truncate", swept_first)
    with spool.claimed("m1") as claim:
        assert claim is not None
        claim.update(dataclasses.replace(claim.entry, attempts=1))
        spool.remove(claim)
    assert list(spool.active_dir.iterdir()) == []


def test_the_pool_emptied_by_another_thread_between_check_and_pop(spool: Spool) -> None:
    # The bouncer enqueues from a worker thread while the event loop enqueues too: the last
    # spare can go between `if self._recycled` and `.pop()`.
    class Emptied(list[str]):
        def __bool__(self) -> bool:
            return True

    spool._recycled = Emptied()
    spool.enqueue("m1", "a@example.org", ["b@example.test"], MESSAGE)
    assert spool.read_data("m1") == MESSAGE


def test_a_claim_by_the_writer_uses_what_it_wrote_unless_a_state_file_replaced_it(
    spool: Spool,
) -> None:
    prepared = spool.prepare("m1", "a@example.org", ["b@example.test"], MESSAGE)
    spool.commit(prepared)
    with spool.claimed("m1") as claim:
        assert claim is not None
        assert claim.entry == prepared.entry
    claim = spool.try_claim("m1", prepared)
    assert claim is not None
    try:
        assert claim.entry is prepared.entry and claim.read_data() == MESSAGE
        # Another worker's attempt meanwhile: its state file is what counts from now on.
        claim.update(dataclasses.replace(claim.entry, attempts=1, last_error="451 try later"))
    finally:
        claim.release()
    claim = spool.try_claim("m1", prepared)
    assert claim is not None
    try:
        assert claim.entry.attempts == 1 and claim.entry.last_error == "451 try later"
        assert claim.read_data() == MESSAGE
    finally:
        claim.release()


def test_sweep_empties_a_spare_a_crash_left_with_a_delivered_message_in_it(
    spool: Spool,
) -> None:
    spool.enqueue("m1", "a@example.org", ["b@example.test"], MESSAGE)
    # Killed after the rename into recycled/, before the emptier truncated it.
    os.rename(spool.data_path("m1"), spool.recycled_dir / "m1")
    restarted = Spool(spool.root, min_free_bytes=0)
    assert restarted.sweep() == 1
    assert (restarted.recycled_dir / "m1").stat().st_size == 0
    restarted.enqueue("m2", "a@example.org", ["b@example.test"], MESSAGE)  # and reused
    assert restarted.read_data("m2") == MESSAGE and list(restarted.recycled_dir.iterdir()) == []
