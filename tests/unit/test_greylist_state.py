"""The embedded greylist state (SQLite) and the greylist step's exemptions, on real files."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import pytest

from gateway.checks.greylist import DEFERRED, Greylist
from gateway.config import GreylistCheckConfig
from gateway.model import Action, Connection, Envelope, ScoredSymbol, Transaction, Verdict
from gateway.state.greylist import GreylistTimes, SqliteGreylistStore
from gateway.state.keys import client_network

TIMES = GreylistTimes(min_delay_s=300, window_s=86400, pass_ttl_s=36 * 86400, auto_allow_after=3)
T0 = 1_800_000_000.0
NET = "192.0.2.0/24"


@pytest.fixture
def store(tmp_path: Path) -> SqliteGreylistStore:
    return SqliteGreylistStore(tmp_path / "greylist.sqlite", TIMES)


def test_first_sight_too_early_after_delay(store: SqliteGreylistStore) -> None:
    first = store.decide(NET, "a@s.test", ["b@example.test"], T0)
    assert not first.passed and first.retry_in_s == 300 and first.new_triplets == 1
    early = store.decide(NET, "a@s.test", ["b@example.test"], T0 + 299)
    assert not early.passed and early.retry_in_s == 1 and early.new_triplets == 0
    assert store.decide(NET, "a@s.test", ["b@example.test"], T0 + 300).passed
    # Remembered pass_ttl_s after its last pass: no delay a month later.
    assert store.decide(NET, "a@s.test", ["b@example.test"], T0 + 30 * 86400).passed


def test_every_recipient_must_be_known(store: SqliteGreylistStore) -> None:
    store.decide(NET, "a@s.test", ["b@example.test"], T0)
    assert store.decide(NET, "a@s.test", ["b@example.test"], T0 + 400).passed
    mixed = store.decide(NET, "a@s.test", ["b@example.test", "c@example.test"], T0 + 500)
    assert not mixed.passed and mixed.new_triplets == 1


def test_a_retry_after_the_window_starts_over(store: SqliteGreylistStore) -> None:
    store.decide(NET, "a@s.test", ["b@example.test"], T0)
    late = store.decide(NET, "a@s.test", ["b@example.test"], T0 + 86400 + 1)
    assert not late.passed and late.new_triplets == 1


def test_a_passed_triplet_is_forgotten_after_pass_ttl(store: SqliteGreylistStore) -> None:
    store.decide(NET, "a@s.test", ["b@example.test"], T0)
    store.decide(NET, "a@s.test", ["b@example.test"], T0 + 300)
    assert not store.decide(NET, "a@s.test", ["b@example.test"], T0 + 300 + 37 * 86400).passed


def test_a_network_that_passed_often_is_auto_allowed(store: SqliteGreylistStore) -> None:
    for i in range(3):  # three messages of different senders pass after their delay
        store.decide(NET, f"s{i}@s.test", ["b@example.test"], T0)
        assert store.decide(NET, f"s{i}@s.test", ["b@example.test"], T0 + 300).passed
    fresh = store.decide(NET, "new@s.test", ["x@example.test"], T0 + 301)
    assert fresh.passed and fresh.auto_allowed
    assert not store.decide("198.51.100.0/24", "new@s.test", ["x@example.test"], T0 + 301).passed


def test_expired_rows_are_pruned(store: SqliteGreylistStore, tmp_path: Path) -> None:
    for i in range(10):
        store.decide(NET, f"s{i}@s.test", ["b@example.test"], T0)
    store.decide(NET, "late@s.test", ["b@example.test"], T0 + 2 * 86400)
    rows = store._db.execute("SELECT COUNT(*) FROM triplets").fetchone()[0]
    assert rows == 1


def test_two_processes_share_the_state(tmp_path: Path) -> None:
    """First attempt through one worker's store, the retry through another's: it passes."""
    path = tmp_path / "greylist.sqlite"
    a, b = SqliteGreylistStore(path, TIMES), SqliteGreylistStore(path, TIMES)
    assert not a.decide(NET, "a@s.test", ["b@example.test"], T0).passed
    assert b.decide(NET, "a@s.test", ["b@example.test"], T0 + 300).passed


def _hammer(path: Path, worker: int, rounds: int) -> None:
    store = SqliteGreylistStore(path, GreylistTimes(300, 86400, 86400, 0))
    for i in range(rounds):
        sender = f"w{worker}-{i}@s.test"
        store.decide(NET, sender, ["b@example.test"], T0)
        assert store.decide(NET, sender, ["b@example.test"], T0 + 300).passed
    store.close()


def test_concurrent_worker_processes_lose_no_decision(tmp_path: Path) -> None:
    path = tmp_path / "greylist.sqlite"
    SqliteGreylistStore(path, TIMES).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_hammer, args=(path, w, 300)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    check = SqliteGreylistStore(path, TIMES)
    assert check._db.execute("SELECT passes FROM networks").fetchone() == (1200,)
    assert check._db.execute("SELECT COUNT(*) FROM triplets").fetchone() == (1200,)


def test_client_network() -> None:
    assert client_network("192.0.2.77", 24, 64) == "192.0.2.0/24"
    assert client_network("::ffff:192.0.2.77", 24, 64) == "192.0.2.0/24"
    assert client_network("2001:db8:1:2:3::9", 24, 64) == "2001:db8:1:2::/64"
    assert client_network("192.0.2.77", 32, 64) == "192.0.2.77/32"


def _tx(sender: str) -> Transaction:
    return Transaction("T1", Connection("c1", "192.0.2.7"), Envelope(sender, ("b@example.test",)))


def _verdict(score: float, *symbols: ScoredSymbol) -> Verdict:
    return Verdict(Action.ACCEPT, score, 6.0, 15.0, symbols, "score below thresholds")


@pytest.mark.parametrize(
    ("sender", "verdict", "greylisted"),
    [
        ("a@s.test", _verdict(3.0), True),
        ("a@s.test", _verdict(2.9), False),  # clearly passes
        ("", _verdict(3.0), False),  # null sender
        ("a@s.test", _verdict(3.0, ScoredSymbol("DNSWL_LISTED", -2.0, "", "dnsbl")), False),
        ("a@s.test", _verdict(3.0, ScoredSymbol("LIST_ALLOW_SENDER", -5.0, "", "lists")), False),
        ("a@s.test", _verdict(3.0, ScoredSymbol("ML_HAM", -2.0, "", "classifier")), True),
    ],
)
def test_which_mail_is_greylisted(
    store: SqliteGreylistStore, sender: str, verdict: Verdict, greylisted: bool
) -> None:
    step = Greylist(GreylistCheckConfig(enabled=True), store)
    judged = asyncio.run(step.judge(_tx(sender), verdict))
    assert (judged.action is Action.TEMPFAIL) is greylisted
    assert (DEFERRED in judged.symbol_names()) is greylisted
