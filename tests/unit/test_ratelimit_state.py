"""Rate-limit token buckets on the real SQLite file, and the limits file's errors."""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
from pathlib import Path

import pytest

from gateway.checks.ratelimit import load_limits
from gateway.errors import ConfigError
from gateway.state.ratelimit import SqliteRateLimitStore, Take

T0 = 1_800_000_000.0


def test_a_bucket_allows_a_burst_then_refills(tmp_path: Path) -> None:
    store = SqliteRateLimitStore(tmp_path / "rl.sqlite")
    take = [Take("k", capacity=3, window_s=300)]
    assert [store.take(take, T0) for _ in range(4)] == [None, None, None, 0]
    assert store.take(take, T0 + 99) == 0  # one token takes 100 s to come back
    assert store.take(take, T0 + 100) is None
    assert store.take(take, T0 + 100) == 0


def test_all_or_nothing(tmp_path: Path) -> None:
    store = SqliteRateLimitStore(tmp_path / "rl.sqlite")
    small, big = Take("small", 1, 60), Take("big", 10, 60)
    assert store.take([big, small], T0) is None
    assert store.take([big, small], T0) == 1  # denied by the small one: big keeps its token
    assert [store.take([big], T0) for _ in range(10)] == [None] * 9 + [0]


def test_full_buckets_are_pruned(tmp_path: Path) -> None:
    store = SqliteRateLimitStore(tmp_path / "rl.sqlite")
    for i in range(5):
        store.take([Take(f"k{i}", 2, 60)], T0)
    store.take([Take("late", 2, 60)], T0 + 3600)
    assert store._db.execute("SELECT key FROM buckets").fetchall() == [("late",)]


def _take_all(path: Path, out: multiprocessing.queues.Queue[int]) -> None:
    store = SqliteRateLimitStore(path)
    out.put(sum(store.take([Take("shared", 50, 3600)], T0) is None for _ in range(100)))


def test_worker_processes_take_exactly_the_capacity(tmp_path: Path) -> None:
    path = tmp_path / "rl.sqlite"
    SqliteRateLimitStore(path).close()
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.queues.Queue[int] = context.Queue()
    workers = [context.Process(target=_take_all, args=(path, out)) for _ in range(4)]
    for p in workers:
        p.start()
    taken = sum(out.get(timeout=60) for _ in workers)
    for p in workers:
        p.join(60)
    assert taken == 50


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('key = "ip"\nmax = 5\nwindow_s = 60', "limit.x.key"),
        ('key = "sender"\ncount = "bytes"\nmax = 5\nwindow_s = 60', "limit.x.count"),
        ('key = "sender"\nmax = 0\nwindow_s = 60', "limit.x.max"),
        ('key = "sender"\nmax = 5\nwindow_s = 0', "limit.x.window_s"),
        ('key = "sender"\nmax = 5\nwindow_s = 60\nburst = 2', "keys are"),
    ],
)
def test_limits_file_errors(tmp_path: Path, table: str, problem: str) -> None:
    path = tmp_path / "ratelimits.toml"
    path.write_text(f"[limit.x]\n{table}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_limits(path)
    assert problem in str(raised.value.problems)


def test_shipped_limits_file_has_no_active_limit() -> None:
    from gateway.config import SHIPPED_RULES_DIR

    assert load_limits(SHIPPED_RULES_DIR / "ratelimits.toml") == []
