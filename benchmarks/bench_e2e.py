"""End-to-end throughput: client -> gateway -> downstream sink, against client -> sink directly.

All on loopback, in one run, so the machine's noise hits both alike; the figure that matters is
the ratio. 4 KB messages, one message per SMTP session (as an MX sees them), 20 concurrent
clients. Through the gateway a run ends when the last message has left its queue for the sink
(delivered, not only accepted): `msg/s` is that end-to-end rate, `accepted/s` the rate of 250s
the clients saw, and the CPU figures include delivering the backlog.
The gateway runs as a real `gateway serve` process (1 worker, then 2 workers), the
sink as a separate process, the client here (asyncio + aiosmtplib). `--checks full` runs every
default check (antivirus off: no clamd here), `--checks spine` only the built-in headers and
gtube checks (the cost of the SMTP, spool and delivery spine itself); the default runs both.

    python benchmarks/bench_e2e.py [--messages 2000] [--clients 20] [--checks both]
                                   [--rounds 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosmtplib
import tomli_w

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import ChecksConfig  # noqa: E402
from tests.support.dns_server import DnsTestServer  # noqa: E402

SINK_CODE = """
import asyncio, sys
from aiosmtpd.smtp import SMTP
class Sink:
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # As internal servers (Postfix, Exchange) do; aiosmtpd handles pipelined commands.
        session.host_name = hostname
        return responses[:-1] + ["250-PIPELINING", responses[-1]]
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 Ok"
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Sink(), hostname="sink"), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def message(number: int, size: int = 4096) -> bytes:
    head = (
        f"From: Bench <bench@outside.test>\r\nTo: user@example.test\r\n"
        f"Subject: bench {number}\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
        f"Message-ID: <bench-{number}@outside.test>\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = (line * (size // len(line) + 1))[: size - len(head)]
    return head + body


def read_line(process: subprocess.Popen[bytes], timeout_s: float) -> str:
    assert process.stdout is not None
    fd = process.stdout.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and b"\n" not in buffer:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buffer += chunk
    if b"\n" not in buffer:
        raise RuntimeError(f"no startup line within {timeout_s}s")
    return buffer.split(b"\n", 1)[0].decode()


def start_sink() -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen([sys.executable, "-c", SINK_CODE], stdout=subprocess.PIPE)
    return process, int(read_line(process, 20))


CHECK_MODES = ("full", "spine")
DRAIN_TIMEOUT_S = 120.0
SPINE_CHECKS = ("headers", "gtube")


def start_gateway(
    workdir: Path, sink_port: int, nameserver: str, workers: int, checks: str = "full"
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """The gateway process, its port and its queue's active/ directory."""
    config: dict[str, Any] = {
        "smtp": {"listen": "127.0.0.1:0", "workers": workers, "max_connections_per_ip": 100},
        "relay": {"port": sink_port, "domains": ["example.test"], "tls": "none"},
        "queue": {"min_free_bytes": 1},
        "storage": {"dir": str(workdir / f"var-{checks}-{workers}")},
        "dns": {"nameservers": [nameserver], "timeout_s": 0.5, "lifetime_s": 1.0},
        "pipeline": {"rules_dir": str(ROOT / "rules")},
        "log": {"level": "warning"},
        "checks": {"antivirus": {"enabled": False}},
        **({"process": {"user": "root"}} if os.geteuid() == 0 else {}),  # root: stay so
    }
    if checks == "spine":
        config["checks"] = {
            name: {"enabled": False}
            for name in ChecksConfig.__dataclass_fields__
            if name not in SPINE_CHECKS
        }
    path = workdir / f"gateway-{checks}-{workers}.toml"
    path.write_text(tomli_w.dumps(config), encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=(workdir / f"gateway-{checks}-{workers}.log").open("wb"),
    )
    line = read_line(process, 60)
    active = Path(config["storage"]["dir"]) / "queue" / "active"
    return process, int(line.rsplit(":", 1)[1]), active


def wait_until_delivered(active: Path) -> None:
    """Until the gateway's queue is empty: every accepted message has reached the sink."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while any(active.glob("*.msg")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"queue not empty {DRAIN_TIMEOUT_S}s after the last message")
        time.sleep(0.01)


async def drive(port: int, total: int, clients: int) -> dict[str, float]:
    """Send `total` messages over `clients` concurrent sessions-in-a-row; rate and latencies."""
    latencies: list[float] = []
    failures = 0
    counter = iter(range(total))

    async def client() -> None:
        nonlocal failures
        for number in counter:
            started = time.perf_counter()
            try:
                smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
                await smtp.connect()
                await smtp.sendmail("bench@outside.test", ["user@example.test"], message(number))
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                failures += 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "messages": len(latencies),
        "failures": failures,
        "rate_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else 0.0,
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2) if latencies else 0.0,
    }


def cpu_seconds(root_pid: int) -> float:
    """User + system CPU of a process and its live children (from /proc, Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if root_pid in (pid, ppid):
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def measured(
    port: int, total: int, clients: int, pids: dict[str, int], active: Path | None = None
) -> dict[str, float]:
    """drive() plus the CPU milliseconds per message each process in `pids` spent. With the
    gateway's `active` queue directory, the run lasts until that queue is empty."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    client_before, machine_before = time.process_time(), machine_cpu()
    started = time.perf_counter()
    result = asyncio.run(drive(port, total, clients))
    if active is not None:
        result["accepted_per_s"] = result["rate_per_s"]
        wait_until_delivered(active)
        result["rate_per_s"] = round(result["messages"] / (time.perf_counter() - started), 1)
    messages = max(1, result["messages"])
    for name, pid in pids.items():
        spent = cpu_seconds(pid) - before[name]
        result[f"{name}_cpu_ms_per_msg"] = round(spent * 1000 / messages, 3)
    # This process is the client (and the idle test DNS server).
    result["client_cpu_ms_per_msg"] = round(
        (time.process_time() - client_before) * 1000 / messages, 3
    )
    busy, elapsed = (now - then for now, then in zip(machine_cpu(), machine_before, strict=True))
    result["machine_busy_pct"] = round(100 * busy / max(elapsed, 1e-9), 1)
    return result


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, all cores (from /proc/stat): how
    much of the machine a run used, whoever used it."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def result_key(checks: str, workers: int) -> str:
    # "gateway_1w" as before for the full set of checks, "spine_1w" for the spine.
    return f"{'gateway' if checks == 'full' else 'spine'}_{workers}w"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--checks", choices=(*CHECK_MODES, "both"), default="both")
    parser.add_argument("--rounds", type=int, default=5, help="direct + gateway pairs per path")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    modes = CHECK_MODES if args.checks == "both" else (args.checks,)
    names = [result_key(checks, workers) for checks in modes for workers in (1, 2)]

    dns = DnsTestServer().start()
    dns.set_zone(".", {})  # NXDOMAIN for everything: no lookup leaves the machine
    sink, sink_port = start_sink()
    results: dict[str, Any] = {
        "messages": args.messages,
        "clients": args.clients,
        "message_bytes": 4096,
        "rounds": args.rounds,
    }
    directs: list[dict[str, float]] = []
    try:
        asyncio.run(drive(sink_port, 200, args.clients))  # warm-up
        with tempfile.TemporaryDirectory() as tmp:
            for checks in modes:
                for workers in (1, 2):
                    gateway, port, active = start_gateway(
                        Path(tmp), sink_port, dns.address, workers, checks
                    )
                    try:
                        asyncio.run(drive(port, 200, args.clients))  # warm-up
                        wait_until_delivered(active)
                        rounds = []
                        for _ in range(args.rounds):
                            # Each gateway run right after its own direct baseline: the
                            # machine's drift hits both sides of every ratio alike.
                            direct = measured(
                                sink_port, args.messages, args.clients, {"sink": sink.pid}
                            )
                            through = measured(
                                port,
                                args.messages,
                                args.clients,
                                {"gateway": gateway.pid, "sink": sink.pid},
                                active,
                            )
                            through["ratio_to_direct"] = round(
                                through["rate_per_s"] / direct["rate_per_s"], 3
                            )
                            directs.append(direct)
                            rounds.append(through)
                        results[result_key(checks, workers)] = median_round(rounds)
                    finally:
                        stop(gateway)
    finally:
        stop(sink)
        dns.stop()
    results["direct"] = sorted(directs, key=lambda r: r["rate_per_s"])[len(directs) // 2]
    for checks in modes:
        one, two = results[result_key(checks, 1)], results[result_key(checks, 2)]
        scaling = two["ratio_to_direct"] / one["ratio_to_direct"]
        results[f"scaling_2w_over_1w_{checks}"] = round(scaling, 3)
    print(
        f"{'path':<14}{'msg/s':>9}{'accepted/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}"
        f"{'(range)':>14}{'failed':>8}   CPU ms/msg: gateway client sink   machine busy"
    )
    for name in ("direct", *names):
        r = results[name]
        spread = f"{r['ratio_min']}-{r['ratio_max']}" if "ratio_min" in r else ""
        print(
            f"{name:<14}{r['rate_per_s']:>9}{r.get('accepted_per_s', ''):>12}{r['p50_ms']:>9}"
            f"{r['p99_ms']:>9}{r.get('ratio_to_direct', 1.0):>8}{spread:>14}{r['failures']:>8}"
            f"{r.get('gateway_cpu_ms_per_msg', ''):>23}{r['client_cpu_ms_per_msg']:>7}"
            f"{r['sink_cpu_ms_per_msg']:>6}{r['machine_busy_pct']:>14}%"
        )
    print(f"each gateway row: the median of {args.rounds} rounds by ratio, each round paired with")
    print("its own direct run; `direct` is the median of those direct runs")
    for checks in modes:
        print(f"2 workers / 1 worker ({checks}): {results[f'scaling_2w_over_1w_{checks}']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


def median_round(rounds: list[dict[str, float]]) -> dict[str, float]:
    """The round with the median ratio to direct, with the spread of all rounds' ratios."""
    ordered = sorted(rounds, key=lambda r: r["ratio_to_direct"])
    median = dict(ordered[len(ordered) // 2])
    median["ratio_min"] = ordered[0]["ratio_to_direct"]
    median["ratio_max"] = ordered[-1]["ratio_to_direct"]
    return median


if __name__ == "__main__":
    raise SystemExit(main())
