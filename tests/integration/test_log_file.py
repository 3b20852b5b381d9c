"""[log] file: serve appends its log there; SIGUSR1 (logrotate's postrotate) makes every process
write to a new file of that name, after the old one was moved away."""

from __future__ import annotations

import signal
import smtplib
from pathlib import Path

import pytest

from tests.support.downstream import Downstream
from tests.support.gateway_process import GatewayProcessFactory, wait_until


def send(host: str, port: int, subject: str) -> None:
    message = f"From: a@sender.test\r\nTo: b@example.test\r\nSubject: {subject}\r\n\r\nhi\r\n"
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.sendmail("a@sender.test", ["b@example.test"], message)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigusr1_reopens_the_log_file_after_rotation(
    gateway_process: GatewayProcessFactory, downstream: Downstream, tmp_path: Path, workers: int
) -> None:
    log_file = tmp_path / "gateway.log"
    gw = gateway_process(
        {
            "relay": {"port": downstream.port},
            "smtp": {"workers": workers},
            "log": {"file": str(log_file)},
        }
    )
    send(gw.host, gw.port, "first")
    assert wait_until(lambda: '"outcome":"accept"' in log_file.read_text(), 10.0)

    rotated = tmp_path / "gateway.log.1"
    log_file.rename(rotated)
    gw.signal(signal.SIGUSR1)
    # Every worker reopens; then each session's line goes to the new file.
    assert wait_until(log_file.exists, 10.0)
    for i in range(2 * workers):
        send(gw.host, gw.port, f"second-{i}")
    downstream.wait_for(1 + 2 * workers)
    assert wait_until(lambda: log_file.read_text().count('"outcome":"accept"') == 2 * workers, 10)
    assert rotated.read_text().count('"outcome":"accept"') == 1
    assert gw.process is not None and gw.process.poll() is None  # SIGUSR1 did not kill it
