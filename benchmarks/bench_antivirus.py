"""Scan latency with a real clamd, and clamd's own start time.

    .venv/bin/python benchmarks/bench_antivirus.py [--scans 200] [--starts 3]

Starts clamd the way the tests do (loopback TCP, a one-signature test database, no
freshclam), times how long it takes from exec to the first PONG, then times the antivirus
check (our client, INSTREAM, clamd's MIME/base64 decoding) on a 4 KB and a 1 MB message, one
scan at a time. With the official databases (~8 million signatures) clamd starts in tens of
seconds and scans more slowly: these figures are the gateway's overhead plus clamd's parsing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support: the benchmark starts clamd like the tests

from gateway.checks.antivirus import AntivirusCheck  # noqa: E402
from gateway.net.clamd import ClamdClient, parse_address  # noqa: E402
from tests.support.attachments_mail import message, transaction  # noqa: E402
from tests.support.clamd_fixture import start_clamd, stop_clamd  # noqa: E402


def sized_message(total_bytes: int) -> bytes:
    """A message with a random (incompressible) attachment, about `total_bytes` long."""
    rng = random.Random(total_bytes)
    payload = rng.randbytes(max(0, (total_bytes - 600) * 3 // 4))
    return message(("data.bin", payload))


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def time_scans(check: AntivirusCheck, raw: bytes, scans: int) -> list[float]:
    tx = transaction(raw)
    await check.run(tx)  # warm-up: first connection, first allocation in clamd
    timings = []
    for _ in range(scans):
        started = time.perf_counter()
        result = await check.run(tx)
        timings.append(time.perf_counter() - started)
        if result.symbols:
            raise SystemExit(f"unexpected symbols on a clean message: {result.symbols}")
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=200, help="scans per message size")
    parser.add_argument("--starts", type=int, default=3, help="clamd starts to time")
    args = parser.parse_args()

    start_times = []
    with tempfile.TemporaryDirectory() as directory:
        for n in range(args.starts):
            run_dir = Path(directory) / f"run{n}"
            run_dir.mkdir()
            server, process = start_clamd(run_dir)
            start_times.append(server.start_s)
            if n < args.starts - 1:
                stop_clamd(process)
        print(
            f"clamd start (exec -> first PONG, {args.starts} runs): "
            f"median {statistics.median(start_times) * 1000:.0f} ms, "
            f"max {max(start_times) * 1000:.0f} ms"
        )
        try:
            client = ClamdClient(parse_address(server.address), timeout_s=30.0)
            check = AntivirusCheck(client, max_scan_bytes=10 * 1024 * 1024)
            for label, size in (("4 KB", 4 * 1024), ("1 MB", 1024 * 1024)):
                raw = sized_message(size)
                timings = asyncio.run(time_scans(check, raw, args.scans))
                print(
                    f"scan {label} ({len(raw)} bytes, {args.scans} scans): "
                    f"p50 {percentile(timings, 0.50) * 1000:.2f} ms, "
                    f"p99 {percentile(timings, 0.99) * 1000:.2f} ms, "
                    f"max {max(timings) * 1000:.2f} ms"
                )
        finally:
            stop_clamd(process)


if __name__ == "__main__":
    main()
