"""How long `gateway quarantine list` takes with 100,000 entries in the store.

    .venv/bin/python benchmarks/bench_quarantine.py [--entries 100000] [--dir DIR]

Fills a fresh store through the real `QuarantineStore.add` (fsync switched off while filling:
the benchmark measures reading, not the disk's sync latency), then times the queries `list`
runs, each the median of several runs, and the whole CLI command in a fresh process.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

from gateway.model import Action, Connection, Envelope, ScoredSymbol, Transaction, Verdict, new_id
from gateway.quarantine.store import Filter, QuarantineStore

ROOT = Path(__file__).resolve().parent.parent
SYMBOLS = ["HDR_MISSING_DATE", "ML_SPAM", "DNSBL_SPAMHAUS_ZEN", "SPF_SOFTFAIL", "URL_SHORTENER"]
RECIPIENTS = [f"user{i}@example.test" for i in range(500)]


def fill(store: QuarantineStore, entries: int) -> None:
    rng = random.Random(7)
    started = time.perf_counter()
    with mock.patch.object(os, "fsync"):
        store._conn.execute("PRAGMA synchronous=OFF")  # filling only; see the module docstring
        for n in range(entries):
            score = round(rng.uniform(6, 15), 2)
            symbols = tuple(
                ScoredSymbol(
                    name, 1.5, f"reason for {name.lower()} #{n}", name.split("_")[0].lower()
                )
                for name in rng.sample(SYMBOLS, 3)
            )
            tx = Transaction(
                new_id(),
                Connection(new_id(), f"192.0.2.{n % 250}", helo=f"host{n}.spam.test"),
                Envelope(f"sender{n % 2000}@spam.test", (rng.choice(RECIPIENTS),)),
            )
            verdict = Verdict(Action.QUARANTINE, score, 6.0, 15.0, symbols, f"score {score}")
            data = (
                f"From: Sender {n} <sender{n}@spam.test>\r\nSubject: offer number {n}\r\n"
                f"Message-ID: <{n}@spam.test>\r\n\r\n" + "cheap pills\r\n" * 40
            ).encode()
            store.add(tx, verdict, data)
        store._conn.execute("PRAGMA synchronous=FULL")
    print(f"filled {entries} entries in {time.perf_counter() - started:.1f} s")


def timed(what: str, action: Callable[[], object], runs: int = 5) -> None:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        result = action()
        samples.append(time.perf_counter() - started)
    count = len(result) if isinstance(result, list) else "-"
    print(f"{what:<48} {statistics.median(samples) * 1000:9.1f} ms   ({count} rows)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, help="storage dir to (re)use (default: a temp dir)")
    args = parser.parse_args()
    storage = args.dir or Path(tempfile.mkdtemp(prefix="bench-quarantine-"))
    store = QuarantineStore(storage / "quarantine")
    with sqlite3.connect(store.index_path) as conn:  # a re-run on the same --dir tops it up
        existing = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    fill(store, max(0, args.entries - existing))
    print(f"store: {storage}  index: {store.index_path.stat().st_size / 1e6:.1f} MB")
    timed("list (default: newest 50)", lambda: store.find(Filter()))
    timed("list --limit 0 (all entries)", lambda: store.find(Filter(limit=None)), runs=3)
    timed("list --rcpt user42@ (substring)", lambda: store.find(Filter(rcpt="user42@")))
    timed("list --sender sender1999@", lambda: store.find(Filter(sender="sender1999@")))
    timed("list --symbol ML_SPAM", lambda: store.find(Filter(symbol="ML_SPAM")))
    timed("list --min-score 14.9", lambda: store.find(Filter(min_score=14.9)))
    timed("list --since 1h", lambda: store.find(Filter(since=time.time() - 3600)))
    store.close()
    config = storage / "bench.toml"
    config.write_text(f'[storage]\ndir = "{storage}"\n')
    for argv in (["list"], ["list", "--json", "--limit", "0"]):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "quarantine", *argv, "--config", str(config)],
            cwd=ROOT, capture_output=True, timeout=300, check=False,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        print(f"{'gateway quarantine ' + ' '.join(argv):<48} {elapsed * 1000:9.1f} ms   "
              f"(whole process, exit {done.returncode}, {len(done.stdout)} bytes out)")  # fmt: skip
        if done.returncode != 0:
            print("   stderr:", done.stderr.decode(errors="replace").strip().splitlines()[-1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
