"""`gateway serve` with `[smtp] workers = 2`: one port, two worker processes, one spool."""

from __future__ import annotations

import os
import signal
import smtplib
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.downstream import Downstream
from tests.support.gateway_process import GatewayProcess, GatewayProcessFactory, wait_until


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def workers_of(gw: GatewayProcess) -> list[int]:
    """The worker processes (the spawn machinery adds a resource tracker child too)."""
    assert gw.process is not None
    return [
        p
        for p in children(gw.process.pid)
        if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()
    ]


def send(gw: GatewayProcess, tag: str) -> None:
    with smtplib.SMTP(gw.host, gw.port, timeout=15) as client:
        client.sendmail(
            "a@outside.test",
            ["bob@example.test"],
            f"From: a@outside.test\r\nSubject: {tag}\r\n\r\nhi\r\n".encode(),
        )


@pytest.mark.timeout(120)
def test_two_workers_share_the_port_and_the_spool(
    gateway_process: GatewayProcessFactory, downstream: Downstream
) -> None:
    gw = gateway_process({"relay": {"port": downstream.port}, "smtp": {"workers": 2}})
    assert len(workers_of(gw)) == 2
    tags = [f"w-{n}" for n in range(30)]
    for tag in tags:
        send(gw, tag)
    assert wait_until(lambda: set(tags) <= set(downstream.subjects()), 30), gw.log_tail()
    time.sleep(0.5)
    assert downstream.subjects() == Counter({tag: 1 for tag in tags})

    # A worker that dies is replaced; the port keeps answering meanwhile.
    victim = workers_of(gw)[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: len(workers_of(gw)) == 2 and victim not in workers_of(gw), 30)
    send(gw, "after-restart")
    assert wait_until(lambda: "after-restart" in downstream.subjects(), 15)

    assert gw.terminate() == 0
    assert wait_until(lambda: not workers_of(gw), 5)
