"""A worker gives back the memory a burst of large messages left behind (gateway/heap.py)."""

from __future__ import annotations

import smtplib
import threading
from pathlib import Path

import pytest

from gateway.heap import slack_bytes
from tests.support.downstream import Downstream
from tests.support.gateway_process import GatewayProcess, GatewayProcessFactory, wait_until

MESSAGES = 4
LINE = b"lorem ipsum dolor sit amet, consectetur adipiscing elit\r\n"
BODY = LINE * (12 * 1024 * 1024 // len(LINE))  # 12 MB each


def memory_mb(gw: GatewayProcess) -> dict[str, int]:
    assert gw.process is not None
    status = Path(f"/proc/{gw.process.pid}/status").read_text(encoding="ascii")
    fields = dict(line.split(":", 1) for line in status.splitlines())
    return {name: int(fields[name].split()[0]) // 1024 for name in ("VmRSS", "VmHWM")}


def send_large(gw: GatewayProcess, n: int, replies: list[str]) -> None:
    raw = b"From: a@outside.test\r\nSubject: large %d\r\n\r\n" % n + BODY
    with smtplib.SMTP(gw.host, gw.port, source_address=(f"127.0.0.{n + 2}", 0), timeout=60) as c:
        c.sendmail("a@outside.test", ["bob@example.test"], raw)
        replies.append("250")


@pytest.mark.skipif(slack_bytes() is None, reason="needs glibc 2.33+ (mallinfo2)")
@pytest.mark.timeout(120)
def test_after_a_burst_of_large_messages_the_worker_rss_drops_back(
    gateway_process: GatewayProcessFactory, downstream: Downstream
) -> None:
    gw = gateway_process({"relay": {"port": downstream.port}, "verify": {"enabled": False}})
    idle = memory_mb(gw)["VmRSS"]
    replies: list[str] = []
    senders = [threading.Thread(target=send_large, args=(gw, n, replies)) for n in range(MESSAGES)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(60)
    assert replies == ["250"] * MESSAGES, gw.log_tail()
    downstream.wait_for(MESSAGES, timeout_s=60)
    burst = memory_mb(gw)["VmHWM"] - idle
    assert burst > 60, memory_mb(gw)  # the messages were held at once: a peak to return

    # Without the trim the RSS stayed near its peak (274 MB against 287, idle 51); with it
    # 116: the idle worker and a little live data. What is asserted is the RSS, not the
    # trim's log line: where glibc unmapped the large blocks itself there is nothing left
    # to trim, and the line never comes (seen once in a full run on a fresh clone).
    def returned() -> bool:
        return memory_mb(gw)["VmRSS"] - idle < burst / 2

    assert wait_until(returned, 30), (idle, memory_mb(gw), gw.log_tail(200))
