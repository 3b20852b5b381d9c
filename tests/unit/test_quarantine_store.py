"""The quarantine store on a real SQLite file and real message files (no sockets)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from gateway.errors import QuarantineCorrupt, QuarantineError, QuarantineMissing, QuarantineNotFound
from gateway.model import Action, Connection, Envelope, ScoredSymbol, Transaction, Verdict
from gateway.quarantine.store import (
    STALE_CLAIM_S,
    CorruptEntry,
    Entry,
    Filter,
    QuarantineStore,
    State,
)
from tests.support.quarantine import hold, make_message


def _entries(store: QuarantineStore, flt: Filter | None = None) -> list[Entry]:
    found = store.find(flt or Filter())
    assert all(isinstance(e, Entry) for e in found)
    return [e for e in found if isinstance(e, Entry)]


def test_add_keeps_the_raw_message_and_everything_that_explains_it(
    quarantine_store: QuarantineStore,
) -> None:
    data = make_message(
        subject="=?utf-8?q?Gro=C3=9Fe_Preise?=", extra_headers="X-Odd:  kept   as is\r\n"
    )
    qid = hold(quarantine_store, data=data, rcpt_tos=("bob@example.test", "eve@example.test"))

    entry = quarantine_store.get(qid)
    assert quarantine_store.read_message(qid) == data
    assert (entry.client_ip, entry.helo, entry.mail_from) == (
        "192.0.2.7",
        "mail.bad.test",
        "bounce@bad.test",
    )
    assert entry.rcpt_tos == ("bob@example.test", "eve@example.test")
    assert entry.header_from == "Spammer <spammer@bad.test>"
    assert entry.subject == "Große Preise"
    assert entry.size == len(data)
    assert entry.score == 8.0
    assert entry.reason == "score 8 >= quarantine threshold 6"
    assert [(s.name, s.score, s.reason, s.check) for s in entry.symbols] == [
        ("HDR_MISSING_DATE", 1.0, "no Date header", "headers"),
        ("GTUBE_QUARANTINE", 0.0, "quarantine test string at offset 120", "gtube"),
    ]
    assert entry.state == State.HELD and entry.problem == ""
    assert abs(entry.received_at - time.time()) < 60


def test_a_subject_in_a_charset_named_in_8bit_is_held_and_listed(
    quarantine_store: QuarantineStore,
) -> None:
    # make_header's CharsetError escaped the index summary: the store failed, so a message
    # to be held was deferred at every retry.
    data = make_message(subject="=?\u00e9?Q?Preise?=")
    qid = hold(quarantine_store, data=data)
    assert quarantine_store.get(qid).subject == "Preise"


def test_a_second_add_with_the_same_id_is_refused_and_keeps_the_first(
    quarantine_store: QuarantineStore,
) -> None:
    qid = hold(quarantine_store)
    first = quarantine_store.read_message(qid)
    entry = quarantine_store.get(qid)
    tx = Transaction(qid, Connection("c", "192.0.2.1"), Envelope("a@b.test", ("c@example.test",)))
    verdict = Verdict(Action.QUARANTINE, 9.0, 6.0, 15.0, (), "again")
    with pytest.raises(QuarantineError, match="already in the quarantine"):
        quarantine_store.add(tx, verdict, b"Subject: other\r\n\r\nother\r\n")
    assert quarantine_store.read_message(qid) == first
    assert quarantine_store.get(qid) == entry


def test_find_filters_and_orders_newest_first(quarantine_store: QuarantineStore) -> None:
    old = hold(quarantine_store, subject="old", score=6.5, rcpt_tos=("Alice@Example.test",))
    with sqlite3.connect(quarantine_store.index_path) as conn:
        conn.execute("UPDATE messages SET received_at = received_at - 7200 WHERE id = ?", (old,))
    high = hold(quarantine_store, subject="high", score=12.0, mail_from="x@spam.test")
    special = hold(
        quarantine_store,
        subject="special",
        symbols=(ScoredSymbol("ML_SPAM", 5.0, "p=0.97", "classifier"),),
    )

    def ids(**kwargs: object) -> list[str]:
        return [e.id for e in _entries(quarantine_store, Filter(**kwargs))]  # type: ignore[arg-type]

    assert ids() == [special, high, old]
    assert ids(limit=2) == [special, high]
    assert ids(since=time.time() - 3600) == [special, high]
    assert ids(rcpt="alice@EXAMPLE") == [old]
    assert ids(sender="SPAM.test") == [high]  # envelope sender
    assert ids(sender="spammer@bad") == [special, high, old]  # header From
    assert ids(min_score=10) == [high]
    assert ids(symbol="ml_spam") == [special]
    assert ids(symbol="NO_SUCH_SYMBOL") == []


def test_release_is_claimed_once_and_can_be_given_back(quarantine_store: QuarantineStore) -> None:
    qid = hold(quarantine_store)
    claim = quarantine_store.claim_release(qid)
    assert claim.state == State.RELEASING and claim.release_id
    with pytest.raises(QuarantineError, match="being released by another process"):
        quarantine_store.claim_release(qid)
    with pytest.raises(QuarantineError, match="being released"):
        quarantine_store.delete(qid)

    quarantine_store.abandon_release(claim)
    assert quarantine_store.get(qid).state == State.HELD
    again = quarantine_store.claim_release(qid)
    assert again.release_id == claim.release_id  # one queue id per message, whatever happens

    quarantine_store.mark_released(again)
    released = quarantine_store.get(qid)
    assert released.state == State.RELEASED and released.released_at is not None
    with pytest.raises(QuarantineError, match="already released"):
        quarantine_store.claim_release(qid)
    assert _entries(quarantine_store) == []  # list shows held messages by default
    assert [e.id for e in _entries(quarantine_store, Filter(states=(State.RELEASED,)))] == [qid]


def test_a_claim_left_by_a_dead_process_can_be_taken_over(
    quarantine_store: QuarantineStore,
) -> None:
    qid = hold(quarantine_store)
    claim = quarantine_store.claim_release(qid, now=time.time() - STALE_CLAIM_S - 1)
    retaken = quarantine_store.claim_release(qid)
    assert retaken.release_id == claim.release_id
    # The slow first releaser comes back: its claim is gone, so it must not queue the message.
    with pytest.raises(QuarantineError, match="taken over by another process"):
        quarantine_store.mark_released(claim)
    quarantine_store.abandon_release(claim)  # nor undo the new claim
    assert quarantine_store.get(qid).state == State.RELEASING
    quarantine_store.mark_released(retaken)
    assert quarantine_store.get(qid).state == State.RELEASED


def test_a_failed_enqueue_puts_the_message_back_to_held(
    quarantine_store: QuarantineStore,
) -> None:
    from gateway.errors import SpoolFull
    from gateway.quarantine.admin import release

    class FullQueue:
        def enqueue(self, msg_id: str, mail_from: str, rcpt_tos: list[str], data: bytes) -> None:
            assert quarantine_store.get(qid).state == State.RELEASED  # marked before queueing
            raise SpoolFull("no room")

    qid = hold(quarantine_store)
    with pytest.raises(SpoolFull):
        release(quarantine_store, FullQueue(), qid, released_by="admin", authserv_id="mx.test")
    entry = quarantine_store.get(qid)
    assert (entry.state, entry.claimed_at, entry.released_at) == (State.HELD, None, None)


def test_delete_removes_row_and_file(quarantine_store: QuarantineStore) -> None:
    qid = hold(quarantine_store)
    path = quarantine_store.message_path(qid)
    quarantine_store.delete(qid)
    assert not path.exists()
    with pytest.raises(QuarantineNotFound):
        quarantine_store.get(qid)
    with pytest.raises(QuarantineNotFound):
        quarantine_store.delete(qid)


def test_delete_and_release_wait_for_a_fresh_claim_not_a_stale_one(
    quarantine_store: QuarantineStore,
) -> None:
    claimed_at = 1000.0
    qid = hold(quarantine_store)
    with sqlite3.connect(quarantine_store.index_path) as conn:
        conn.execute(
            "UPDATE messages SET state = 'releasing', claimed_at = ? WHERE id = ?",
            (claimed_at, qid),
        )
    with pytest.raises(QuarantineError, match="being released right now"):
        quarantine_store.delete(qid, now=1000.0 + 60)
    with pytest.raises(QuarantineError, match="being released by another process"):
        quarantine_store.claim_release(qid, now=1000.0 + 60)
    quarantine_store.delete(qid, now=1000.0 + STALE_CLAIM_S + 1)  # stale: may go
    with pytest.raises(QuarantineNotFound):
        quarantine_store.get(qid)


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "", "ABC*", "x" * 200])
def test_ids_that_are_not_ids_are_not_found(quarantine_store: QuarantineStore, bad_id: str) -> None:
    with pytest.raises(QuarantineNotFound):
        quarantine_store.get(bad_id)
    with pytest.raises(QuarantineNotFound):
        quarantine_store.read_message(bad_id)


def test_expire_removes_old_entries_their_files_and_old_orphans(
    quarantine_store: QuarantineStore,
) -> None:
    old, new, releasing = (hold(quarantine_store) for _ in range(3))
    month_ago = time.time() - 31 * 86400
    with sqlite3.connect(quarantine_store.index_path) as conn:
        for qid in (old, releasing):
            conn.execute("UPDATE messages SET received_at = ? WHERE id = ?", (month_ago, qid))
    quarantine_store.claim_release(releasing)
    old_path = quarantine_store.message_path(old)
    folder = quarantine_store.message_path(new).parent
    old_orphan, fresh_orphan = folder / "0000000000000aa.eml", folder / "0000000000001aa.eml"
    for orphan in (old_orphan, fresh_orphan):
        orphan.write_bytes(b"left by a crash")
    os.utime(old_orphan, (month_ago, month_ago))

    result = quarantine_store.expire(retention_days=30)

    assert (result.entries, result.orphan_files) == (1, 1)
    assert not old_path.exists() and not old_orphan.exists()
    assert fresh_orphan.exists()
    assert [e.id for e in _entries(quarantine_store)] == [new]
    assert quarantine_store.get(releasing).state == State.RELEASING  # its release finishes first
    assert quarantine_store.read_message(new)


def test_corrupt_rows_are_reported_and_the_rest_still_listed(
    quarantine_store: QuarantineStore,
) -> None:
    good = hold(quarantine_store)
    bad_json, bad_score, bad_symbol = (hold(quarantine_store) for _ in range(3))
    with sqlite3.connect(quarantine_store.index_path) as conn:
        conn.execute("UPDATE messages SET rcpt_tos = '{{{' WHERE id = ?", (bad_json,))
        conn.execute("UPDATE messages SET score = 'lots' WHERE id = ?", (bad_score,))
        conn.execute("UPDATE symbols SET reason = x'ff00' WHERE message_id = ?", (bad_symbol,))

    found = {e.id: e for e in quarantine_store.find(Filter())}

    assert isinstance(found[good], Entry)
    for qid, words in ((bad_json, "recipients"), (bad_score, "score"), (bad_symbol, "reason")):
        entry = found[qid]
        assert isinstance(entry, CorruptEntry) and words in entry.problem
        with pytest.raises(QuarantineCorrupt, match=words):
            quarantine_store.get(qid)
    quarantine_store.delete(bad_json)  # a corrupt entry can still be cleaned up
    assert bad_json not in {e.id for e in quarantine_store.find(Filter())}


def test_a_missing_message_file_is_reported(quarantine_store: QuarantineStore) -> None:
    qid = hold(quarantine_store)
    quarantine_store.message_path(qid).unlink()
    [entry] = quarantine_store.find(Filter())
    assert isinstance(entry, Entry) and entry.problem == "message file missing"
    with pytest.raises(QuarantineCorrupt, match="missing"):
        quarantine_store.read_message(qid)


def test_opening_a_missing_store_without_create_says_so(tmp_path: Path) -> None:
    with pytest.raises(QuarantineMissing, match="no quarantine store"):
        QuarantineStore(tmp_path / "nowhere", create=False)
    assert not (tmp_path / "nowhere").exists()


def test_a_file_that_is_not_a_store_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "index.sqlite3").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(QuarantineError, match="not a database"):
        QuarantineStore(tmp_path / "q", create=False)


def test_a_locked_store_is_a_clear_error_not_a_hang(quarantine_store: QuarantineStore) -> None:
    quick = QuarantineStore(quarantine_store.root, busy_timeout_s=0.2)
    blocker = sqlite3.connect(quarantine_store.index_path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(QuarantineError, match="locked by another process"):
            hold(quick)
        assert list(quick.message_path("x" * 10).parent.parent.glob("*/*.eml")) == []
        assert quick.find(Filter()) == []  # readers are not blocked by a writer (WAL)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        quick.close()


def test_threads_adding_at_once_lose_nothing(quarantine_store: QuarantineStore) -> None:
    added: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            qid = hold(quarantine_store)
            with lock:
                added.append(qid)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(added) == sorted(e.id for e in quarantine_store.find(Filter(limit=None)))
    assert len(added) == 60


def test_a_release_retaken_after_its_process_died_post_queue_completes(
    quarantine_store: QuarantineStore, tmp_path: Path
) -> None:
    from gateway.quarantine.admin import release
    from gateway.queue.spool import Spool

    spool = Spool(tmp_path / "queue", min_free_bytes=0)
    qid = hold(quarantine_store)
    claim = quarantine_store.claim_release(qid)
    # The first releaser queued the message and died before marking the row released.
    spool.enqueue(
        claim.release_id, claim.mail_from, list(claim.rcpt_tos), b"Subject: x\r\n\r\nx\r\n"
    )
    later = time.time() + 3600  # the claim is stale by now
    released = release(
        quarantine_store, spool, qid, released_by="admin", authserv_id="mx.test", now=later
    )
    assert released == claim.release_id
    assert quarantine_store.get(qid).state == State.RELEASED
    assert spool.ids() == [claim.release_id]  # queued once, not twice, not held again
