"""`gateway send-test --gtube`: the ready deployment test prints replies, not tracebacks."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from gateway.quarantine.store import Filter
from tests.support.gateway_fixture import RunningGateway


def send_test(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "send-test", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def target(gateway: RunningGateway) -> str:
    return f"{gateway.host}:{gateway.port}"


def test_gtube_reject_prints_the_refusal_and_exits_0(gateway: RunningGateway) -> None:
    done = send_test("--gtube", "reject", "--to", "bob@example.test", target(gateway))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "DATA: 554 5.7.1 Message rejected: GTUBE test string" in lines
    assert lines[-1] == "send-test: ok: GTUBE reject"
    assert gateway.spool.ids() == []


def test_gtube_quarantine_is_held(gateway: RunningGateway) -> None:
    done = send_test("--gtube", "quarantine", "--to", "bob@example.test", target(gateway))
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(line.startswith("DATA: 250 2.0.0 Ok: held as ") for line in done.stdout.splitlines())
    [held] = gateway.quarantine.find(Filter())
    assert held.rcpt_tos == ("bob@example.test",)


def test_a_refused_recipient_is_shown_and_exits_1(gateway: RunningGateway) -> None:
    done = send_test("--gtube", "reject", "--to", "eve@elsewhere.test", target(gateway))
    assert done.returncode == 1
    assert any(
        line.startswith("RCPT TO:<eve@elsewhere.test>: 550") for line in done.stdout.splitlines()
    )
    assert done.stdout.splitlines()[-1] == "send-test: NOT as expected: GTUBE reject"
    assert "Traceback" not in done.stderr


def test_nothing_listening_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = holder.getsockname()[1]
        done = send_test("--gtube", "reject", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [f"send-test: 127.0.0.1:{port}: Connection refused"]
    assert done.stderr == ""
