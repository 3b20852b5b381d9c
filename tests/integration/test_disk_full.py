"""A full disk under the spool: new mail gets 452 4.3.1, nothing already accepted is lost.

The storage directory is a real 3 MiB tmpfs (needs root, as CI runs; skipped elsewhere)."""

from __future__ import annotations

import contextlib
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.smtp import replies
from tests.support.downstream import Downstream
from tests.support.gateway_process import GatewayProcessFactory


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
        timeout=10,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mountpoint
    with contextlib.suppress(subprocess.SubprocessError):
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, timeout=10)


def message(number: int) -> bytes:
    body = ("x" * 76 + "\r\n") * 3000  # about 230 KB
    return (
        f"From: a@outside.test\r\nTo: bob@example.test\r\nSubject: fill {number}\r\n"
        f"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\nMessage-ID: <fill{number}@outside.test>"
        f"\r\n\r\n{body}"
    ).encode()


@pytest.mark.timeout(90)
def test_full_disk_gets_452_and_loses_nothing_accepted(
    gateway_process: GatewayProcessFactory, downstream: Downstream, small_disk: Path
) -> None:
    gw = gateway_process(
        {
            "relay": {"port": downstream.port},
            "verify": {"enabled": False},
            "storage": {"dir": str(small_disk / "var")},
            "queue": {"min_free_bytes": 1},  # only the real ENOSPC stops us, not the margin
        }
    )
    downstream.stop()  # keep everything in the spool
    accepted, refusal = [], ""
    for number in range(40):  # 40 x 230 KB cannot fit in 3 MiB
        try:
            with smtplib.SMTP(gw.host, gw.port, timeout=15) as client:
                client.sendmail("a@outside.test", ["bob@example.test"], message(number))
            accepted.append(f"fill {number}")
        except smtplib.SMTPResponseException as exc:
            refusal = f"{exc.smtp_code} {exc.smtp_error.decode()}"
            break
    assert refusal == replies.NO_STORAGE, refusal
    assert accepted, "the disk should have held a few messages"
    downstream.start()
    received = downstream.wait_for(len(accepted), timeout_s=30)
    subjects = sorted(
        line.decode()[9:]
        for m in received
        for line in m.data.split(b"\r\n")
        if line.startswith(b"Subject: ")
    )
    assert subjects == sorted(accepted)
