"""Classifier speed and memory: messages/s on one core (feature extraction included) and the
RSS a loaded model adds to a worker.

    .venv/bin/python benchmarks/bench_classifier.py [--corpus DIR] [--model PATH] [--limit N]

DIR holds raw messages (any layout `gateway.mailsources` reads, e.g. ham/ + spam/); the default
is the public corpus next to the project, which only this developer tool reads.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from gateway.config import PROJECT_ROOT, SHIPPED_MODEL
from gateway.mailsources import iter_messages

DEFAULT_CORPUS = PROJECT_ROOT.parent / "shared" / "corpus" / "spamassassin-public"


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--limit", type=int, default=0, help="score at most N messages")
    args = parser.parse_args()
    raws = [m.raw for m in iter_messages(args.corpus)]
    raws = raws[: args.limit] if args.limit else raws
    before = rss_mib()
    started = time.perf_counter()
    # Imported here so the measured RSS includes the libraries the check pulls in.
    from gateway.checks.classifier import ClassifierCheck

    libraries = rss_mib() - before
    check = ClassifierCheck.from_file(args.model)
    load_s = time.perf_counter() - started
    model = rss_mib() - before - libraries
    started = time.process_time()
    verdicts = [check.classify(raw).symbols for raw in raws]
    cpu_s = time.process_time() - started
    spam = sum(1 for symbols in verdicts if symbols and symbols[0].name == "ML_SPAM")
    print(f"model: {args.model}: imports and load {load_s:.2f}s")
    print(
        f"RSS added: check module and its imports (numpy) {libraries:.1f} MiB, "
        f"loaded model {model:.1f} MiB (skops + scikit-learn run in a child while loading)"
    )
    print(
        f"scored {len(raws)} messages in {cpu_s:.2f}s CPU: {len(raws) / cpu_s:.0f} msg/s per core"
    )
    print(f"ML_SPAM on {spam} of them")


if __name__ == "__main__":
    main()
