"""Delivery in real worker processes: SIGKILL mid-delivery and restart; two processes, one spool."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.queue.spool import Spool
from tests.integration.test_delivery_relay import message
from tests.support.downstream import Downstream

# One delivery process, as a gateway worker runs it: until SIGTERM (clean stop) or SIGKILL.
WORKER = """
import asyncio, logging, signal, sys
from pathlib import Path
from gateway.config import QueueConfig, RelayConfig
from gateway.queue.delivery import DeliveryService
from gateway.queue.spool import Spool

async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spool = Spool(Path(sys.argv[1]), min_free_bytes=0)
    relay = RelayConfig(host="127.0.0.1", port=int(sys.argv[2]), domains=("example.test",),
                        tls="none", timeout_s=5.0, connections=4)
    queue = QueueConfig(retry_initial_s=0.05, retry_max_s=0.2, min_free_bytes=0,
                        scan_interval_s=0.05)
    service = DeliveryService(spool, relay, queue, "mx.gateway.test")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await service.start()
    await stop.wait()
    await service.stop()

asyncio.run(main())
"""


class Workers:
    def __init__(self, spool: Spool, downstream: Downstream, log_dir: Path) -> None:
        self.spool = spool
        self.log_dir = log_dir
        self.downstream = downstream
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        with self.log_dir.joinpath(f"worker{len(self.processes)}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", WORKER, str(self.spool.root), str(self.downstream.port)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=5)

    def delivered_per_process(self) -> list[int]:
        logs = sorted(self.log_dir.glob("worker*.log"))
        return [p.read_text().count(" delivered to ") for p in logs]


@pytest.fixture
def workers(tmp_path: Path, downstream: Downstream) -> Iterator[Workers]:
    started = Workers(Spool(tmp_path / "queue", min_free_bytes=0), downstream, tmp_path)
    yield started
    started.stop_all()


def subjects(downstream: Downstream) -> collections.Counter[bytes]:
    return collections.Counter(
        m.data.split(b"Subject: ")[1].split(b"\r\n")[0] for m in downstream.messages
    )


def wait_until_empty(spool: Spool, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while spool.ids():
        assert time.monotonic() < deadline, f"{len(spool.ids())} messages still queued"
        time.sleep(0.05)


def test_sigkill_mid_delivery_then_restart_delivers_everything(
    workers: Workers, downstream: Downstream
) -> None:
    count = 100
    for n in range(count):
        workers.spool.enqueue(f"m{n:03d}", "a@example.org", ["b@example.test"], message(n))
    downstream.delay_s = 0.01  # slow enough that the kill lands with deliveries in flight
    victim = workers.start()
    downstream.wait_for(20, timeout_s=20)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=5)
    workers.start()
    wait_until_empty(workers.spool)
    seen = subjects(downstream)
    assert set(seen) == {f"test {n}".encode() for n in range(count)}  # nothing lost
    duplicates = sum(c - 1 for c in seen.values())
    print(f"\nSIGKILL with 4 deliveries in flight: {count} delivered, {duplicates} duplicate(s)")
    assert duplicates <= 4  # at most the in-flight ones: the window between 250 and unlink


def test_two_processes_on_one_spool_deliver_each_exactly_once(
    workers: Workers, downstream: Downstream
) -> None:
    count = 150
    workers.start()
    workers.start()
    time.sleep(1.0)  # both are up and scanning before the mail arrives
    for n in range(count):
        workers.spool.enqueue(f"m{n:03d}", "a@example.org", ["b@example.test"], message(n))
    wait_until_empty(workers.spool)
    time.sleep(0.3)  # several scan intervals of both processes
    workers.stop_all()
    seen = subjects(downstream)
    assert len(seen) == count and set(seen.values()) == {1}
    per_process = workers.delivered_per_process()
    print(f"\ntwo processes delivered {per_process} of {count}")
    assert sum(per_process) == count and min(per_process) > 0
