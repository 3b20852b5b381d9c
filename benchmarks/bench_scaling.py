"""How the gateway scales with worker processes, driven by Postfix's C load tools.

`bench_e2e.py` drives the gateway from Python: its client and sink take about 1.5 ms of CPU
per message between them, so on a 2-core machine a second gateway worker finds little CPU
left to use. Here the client is Postfix's `smtp-source` and the internal server `smtp-sink`
(about 0.1 ms per message each), so the gateway gets the cores and what a second worker adds
is the gateway's own scaling. Same shape as bench_e2e: 4 KB messages, one per session, 20
concurrent sessions, everything on loopback; a gateway run ends when its queue is empty
(delivered). Both gateways run side by side and every round drives them back to back (after
a direct smtp-source -> smtp-sink run, shown for scale): the 2-worker / 1-worker ratio is taken
within each round, since this machine's speed drifts by tens of percent within minutes.
`smtp-source` speaks HELO, not EHLO, and resets each connection after QUIT.

    python benchmarks/bench_scaling.py [--messages 3000] [--rounds 5] [--checks both]
                                       [--json OUT]

Needs /usr/sbin/smtp-source and smtp-sink (Debian's `postfix` package; `make bench` installs
it without configuring or starting a mail server); without them it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_e2e import (
    CHECK_MODES,
    cpu_seconds,
    machine_cpu,
    start_gateway,
    stop,
    wait_until_delivered,
)

from tests.support.dns_server import DnsTestServer  # bench_e2e put the checkout on sys.path

TOOL_DIRS = ("/usr/sbin", "/usr/bin")
SESSIONS = 20
BODY_BYTES = 4000  # smtp-source adds From, To, Date, Message-Id, Subject: ~4.1 KB in all
SOURCE_TIMEOUT_S = 300.0
# The C tools alone move ~8,000 msg/s here: a direct run of the gateway runs' size would last
# a third of a second, too short to be a steady baseline.
DIRECT_FACTOR = 5


def tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (f"{d}/{name}" for d in TOOL_DIRS if os.access(f"{d}/{name}", os.X_OK)), None
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_sink(path: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """smtp-sink on a free loopback port: accepts everything, writes nothing to disk."""
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
    process = subprocess.Popen(
        [path, *user, f"127.0.0.1:{port}", "1024"],
        stdout=(workdir / "smtp-sink.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    stop(process)
    raise RuntimeError("smtp-sink did not start listening within 10 s")


def send(source: str, port: int, messages: int) -> None:
    """smtp-source: `messages` messages, one per session, SESSIONS at a time; exits 1 on
    the first reply that is not 2xx."""
    command = [
        source,
        *("-s", str(SESSIONS), "-m", str(messages), "-l", str(BODY_BYTES)),
        *("-S", "bench", "-f", "bench@outside.test", "-t", "user@example.test"),
        *("-M", "client.outside.test", f"127.0.0.1:{port}"),
    ]
    run = subprocess.run(command, capture_output=True, timeout=SOURCE_TIMEOUT_S, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {run.stderr.decode(errors='replace')[-500:]}")


def measured(
    source: str, port: int, messages: int, pids: dict[str, int], active: Path | None = None
) -> dict[str, float]:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    machine_before = machine_cpu()
    started = time.perf_counter()
    send(source, port, messages)
    accepted = time.perf_counter() - started
    if active is not None:
        wait_until_delivered(active)
    elapsed = time.perf_counter() - started
    result: dict[str, float] = {
        "rate_per_s": round(messages / elapsed, 1),
        "accepted_per_s": round(messages / accepted, 1),
    }
    for name, pid in pids.items():
        spent = cpu_seconds(pid) - before[name]
        result[f"{name}_cpu_ms_per_msg"] = round(spent * 1000 / messages, 3)
    busy, total = (now - then for now, then in zip(machine_cpu(), machine_before, strict=True))
    result["machine_busy_pct"] = round(100 * busy / max(total, 1e-9), 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--checks", choices=(*CHECK_MODES, "both"), default="both")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    source, sink_tool = tool("smtp-source"), tool("smtp-sink")
    if source is None or sink_tool is None:
        print("skipped: smtp-source/smtp-sink not installed (Debian package postfix)")
        return 0
    modes = CHECK_MODES if args.checks == "both" else (args.checks,)
    results: dict[str, Any] = {"messages": args.messages, "sessions": SESSIONS}
    dns = DnsTestServer().start()
    dns.set_zone(".", {})  # NXDOMAIN for everything: no lookup leaves the machine
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sink, sink_port = start_sink(sink_tool, workdir)
        try:
            send(source, sink_port, 200)  # warm-up
            for checks in modes:
                results[checks] = compare_workers(
                    source, sink_port, workdir, dns.address, checks, args
                )
        finally:
            stop(sink)
            dns.stop()
    print(
        f"{'path':<10}{'msg/s':>9}{'accepted/s':>12}{'direct msg/s':>14}"
        f"{'gateway CPU ms/msg':>20}{'machine busy':>14}"
    )
    for checks in modes:
        for workers in ("1w", "2w"):
            r = results[checks][workers]
            print(
                f"{checks + '_' + workers:<10}{r['rate_per_s']:>9}{r['accepted_per_s']:>12}"
                f"{r['direct_per_s']:>14}{r['gateway_cpu_ms_per_msg']:>20}"
                f"{r['machine_busy_pct']:>13}%"
            )
    print(
        f"each round: a direct run, then 1 worker, then 2 workers, back to back; rows are the "
        f"median of {args.rounds} rounds"
    )
    for checks in modes:
        scaling = results[checks]["scaling"]
        print(
            f"2 workers / 1 worker ({checks}): {scaling['median']} "
            f"(rounds {scaling['min']}-{scaling['max']})"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


def compare_workers(
    source: str,
    sink_port: int,
    workdir: Path,
    nameserver: str,
    checks: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Both gateways up at once (the idle one costs nothing); every round drives the direct
    path, then 1 worker, then 2 workers: each round's pair is measured seconds apart, on a
    machine whose speed drifts over minutes."""
    gateways = {
        name: start_gateway(workdir, sink_port, nameserver, workers, checks)
        for name, workers in (("1w", 1), ("2w", 2))
    }
    try:
        for _, port, active in gateways.values():
            send(source, port, 200)  # warm-up
            wait_until_delivered(active)
        rounds: dict[str, list[dict[str, float]]] = {"1w": [], "2w": []}
        ratios: list[float] = []
        for _ in range(args.rounds):
            direct = measured(source, sink_port, args.messages * DIRECT_FACTOR, {})
            for name, (process, port, active) in gateways.items():
                run = measured(source, port, args.messages, {"gateway": process.pid}, active)
                run["direct_per_s"] = direct["rate_per_s"]
                rounds[name].append(run)
            ratios.append(rounds["2w"][-1]["rate_per_s"] / rounds["1w"][-1]["rate_per_s"])
    finally:
        for process, _, _ in gateways.values():
            stop(process)
    summary: dict[str, Any] = {
        name: sorted(runs, key=lambda r: r["rate_per_s"])[len(runs) // 2]
        for name, runs in rounds.items()
    }
    ordered = sorted(ratios)
    summary["scaling"] = {
        "median": round(ordered[len(ordered) // 2], 3),
        "min": round(ordered[0], 3),
        "max": round(ordered[-1], 3),
    }
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
