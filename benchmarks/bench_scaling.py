"""How the gateway scales with worker processes, driven by Postfix's C load tools.

`bench_e2e.py` drives the gateway from Python: its client and sink take about 1.5 ms of CPU
per message between them, so on a 2-core machine a second gateway worker finds little CPU
left to use. Here the client is Postfix's `smtp-source` and the internal server `smtp-sink`
(about 0.1 ms per message each), so the gateway gets the cores and what a second worker adds
is the gateway's own scaling. Same shape as bench_e2e: 4 KB messages, one per session, 20
concurrent sessions, everything on loopback; a gateway run ends when its queue is empty
(delivered); each gateway run is paired with its own direct smtp-source -> smtp-sink run.
`smtp-source` speaks HELO, not EHLO, and resets each connection after QUIT.

    python benchmarks/bench_scaling.py [--messages 3000] [--rounds 3] [--checks both]
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
    median_round,
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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--checks", choices=(*CHECK_MODES, "both"), default="both")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    source, sink_tool = tool("smtp-source"), tool("smtp-sink")
    if source is None or sink_tool is None:
        print("skipped: smtp-source/smtp-sink not installed (Debian package postfix)")
        return 0
    modes = CHECK_MODES if args.checks == "both" else (args.checks,)
    results: dict[str, Any] = {
        "messages": args.messages,
        "sessions": SESSIONS,
        "rounds": args.rounds,
    }
    dns = DnsTestServer().start()
    dns.set_zone(".", {})  # NXDOMAIN for everything: no lookup leaves the machine
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sink, sink_port = start_sink(sink_tool, workdir)
        try:
            send(source, sink_port, 200)  # warm-up
            for checks in modes:
                for workers in (1, 2):
                    gateway, port, active = start_gateway(
                        workdir, sink_port, dns.address, workers, checks
                    )
                    try:
                        send(source, port, 200)  # warm-up
                        wait_until_delivered(active)
                        rounds = []
                        for _ in range(args.rounds):
                            direct = measured(source, sink_port, args.messages * DIRECT_FACTOR, {})
                            through = measured(
                                source,
                                port,
                                args.messages,
                                {"gateway": gateway.pid, "sink": sink.pid},
                                active,
                            )
                            through["direct_per_s"] = direct["rate_per_s"]
                            through["ratio_to_direct"] = round(
                                through["rate_per_s"] / direct["rate_per_s"], 4
                            )
                            rounds.append(through)
                        results[f"{checks}_{workers}w"] = median_round(rounds)
                    finally:
                        stop(gateway)
        finally:
            stop(sink)
            dns.stop()
    print(
        f"{'path':<10}{'msg/s':>9}{'accepted/s':>12}{'direct msg/s':>14}"
        f"{'gateway CPU ms/msg':>20}{'machine busy':>14}"
    )
    for checks in modes:
        for workers in (1, 2):
            r = results[f"{checks}_{workers}w"]
            print(
                f"{checks + '_' + str(workers) + 'w':<10}{r['rate_per_s']:>9}"
                f"{r['accepted_per_s']:>12}{r['direct_per_s']:>14}"
                f"{r['gateway_cpu_ms_per_msg']:>20}{r['machine_busy_pct']:>13}%"
            )
    print(f"each row: the median of {args.rounds} rounds by ratio to its paired direct run")
    for checks in modes:
        one, two = results[f"{checks}_1w"], results[f"{checks}_2w"]
        by_rate = round(two["rate_per_s"] / one["rate_per_s"], 3)
        by_ratio = round(two["ratio_to_direct"] / one["ratio_to_direct"], 3)
        results[f"scaling_2w_over_1w_{checks}"] = {"by_rate": by_rate, "by_ratio": by_ratio}
        print(
            f"2 workers / 1 worker ({checks}): {by_rate} by rate, {by_ratio} by ratio to the "
            "paired direct runs"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
