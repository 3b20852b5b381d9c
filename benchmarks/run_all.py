"""`make bench`: every benchmark in turn, output to the terminal and to bench-results/.

Each benchmark measures its own baseline in the same run (direct path, empty pipeline, ...)
and reports ratios, since the machine is shared and noisy. Benchmarks that need the corpus
(`../shared/corpus`) are skipped with a note when it is not there.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench-results"
CORPUS = ROOT.parent / "shared" / "corpus" / "spamassassin-public"

# (script, arguments, needs the corpus)
BENCHMARKS: list[tuple[str, list[str], bool]] = [
    ("bench_e2e.py", ["--json", str(RESULTS / "e2e.json")], False),
    ("bench_scaling.py", ["--json", str(RESULTS / "scaling.json")], False),
    ("bench_auth.py", [], False),
    ("bench_antivirus.py", [], False),
    ("bench_rules.py", [], True),
    ("bench_classifier.py", [], True),
    ("bench_quarantine.py", [], False),
    ("bench_state.py", [], False),
]
TIMEOUT_S = 1800


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    failed = []
    for script, args, needs_corpus in BENCHMARKS:
        path = ROOT / "benchmarks" / script
        if not path.exists() or (needs_corpus and not CORPUS.is_dir()):
            print(f"== {script}: skipped ({'no corpus' if path.exists() else 'missing'})")
            continue
        print(f"== {script}", flush=True)
        started = time.monotonic()
        try:
            run = subprocess.run(
                [sys.executable, str(path), *args],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            failed.append(script)
            print(f"   timed out after {TIMEOUT_S}s")
            continue
        (RESULTS / f"{path.stem}.txt").write_text(run.stdout + run.stderr, encoding="utf-8")
        print(run.stdout.rstrip())
        if run.returncode != 0:
            failed.append(script)
            print(run.stderr.rstrip()[-2000:])
        print(f"   ({time.monotonic() - started:.0f}s)", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
