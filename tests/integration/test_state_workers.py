"""`gateway serve` with two worker processes shares its greylist and rate-limit state: a retry
that lands on the other worker passes, and the workers together accept exactly a limit."""

from __future__ import annotations

import os
import shutil
import smtplib
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.config import SHIPPED_RULES_DIR
from tests.support.downstream import Downstream
from tests.support.gateway_process import GatewayProcess, GatewayProcessFactory

MESSAGE = b"From: a@outside.test\r\nSubject: hi\r\n\r\nhi\r\n"


ESTABLISHED = "01"  # the st column of /proc/net/tcp
FIND_TIMEOUT_S = 5.0


def serving_worker(gw: GatewayProcess, client: smtplib.SMTP) -> int:
    """The pid of the worker holding the server end of `client`'s connection. Only an
    established socket counts: an earlier connection from the same client port may still be in
    TIME_WAIT, with no inode (0) and no process."""
    assert client.sock is not None and gw.process is not None
    client_port = client.sock.getsockname()[1]
    deadline = time.monotonic() + FIND_TIMEOUT_S
    while time.monotonic() < deadline:
        inodes = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local_port, remote_port = (int(a.split(":")[1], 16) for a in fields[1:3])
            if (local_port, remote_port, fields[3]) == (gw.port, client_port, ESTABLISHED):
                inodes.add(f"socket:[{fields[9]}]")
        for task in Path("/proc").glob("[0-9]*"):
            if task.name == str(gw.process.pid):
                continue
            try:
                links = {os.readlink(fd) for fd in (task / "fd").iterdir()}
            except OSError:
                continue
            if inodes & links:
                return int(task.name)
        time.sleep(0.05)
    raise AssertionError("no worker holds the connection")


def send(gw: GatewayProcess, sender: str) -> tuple[int, int]:
    """One message on its own connection: the reply code and the worker that gave it."""
    with smtplib.SMTP(gw.host, gw.port, timeout=15) as client:
        worker = serving_worker(gw, client)
        try:
            client.sendmail(sender, ["bob@example.test"], MESSAGE)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, worker
        except smtplib.SMTPRecipientsRefused as exc:
            return next(iter(exc.recipients.values()))[0], worker
    return 250, worker


def serve(
    gateway_process: GatewayProcessFactory,
    downstream: Downstream,
    checks: dict[str, Any],
    rules: Path,
) -> GatewayProcess:
    return gateway_process(
        {
            "relay": {"port": downstream.port},  # recipients are verified there
            "smtp": {"workers": 2},
            "pipeline": {"rules_dir": str(rules)},
            "checks": checks,
        }
    )


@pytest.mark.timeout(120)
def test_a_retry_on_the_other_worker_passes(
    gateway_process: GatewayProcessFactory, downstream: Downstream, tmp_path: Path
) -> None:
    # min_delay_s = 0: any retry passes, so no time has to pass in a process we cannot clock.
    greylist = {"enabled": True, "min_delay_s": 0, "only_above_score": -100.0}
    gw = serve(gateway_process, downstream, {"greylist": greylist}, SHIPPED_RULES_DIR)
    code, first_worker = send(gw, "a@outside.test")
    assert code == 451  # first sight, on one worker
    for _ in range(40):  # connect until SO_REUSEPORT hands a connection to the other worker
        client = smtplib.SMTP(gw.host, gw.port, timeout=15)
        if serving_worker(gw, client) != first_worker:
            break
        client.quit()
    else:
        pytest.fail("every connection went to one worker")
    with client:  # the retry, on the other worker: it passes there
        assert client.sendmail("a@outside.test", ["bob@example.test"], MESSAGE) == {}


@pytest.mark.timeout(120)
def test_two_workers_accept_exactly_the_limit(
    gateway_process: GatewayProcessFactory, downstream: Downstream, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(SHIPPED_RULES_DIR, rules)
    (rules / "ratelimits.toml").write_text(
        '[limit.net]\nkey = "client_network"\nmax = 10\nwindow_s = 86400\n', encoding="utf-8"
    )
    gw = serve(gateway_process, downstream, {}, rules)
    results = [send(gw, f"u{i}@outside.test") for i in range(30)]
    codes = [code for code, _ in results]
    assert codes.count(250) == 10 and codes.count(450) == 20
    assert len({worker for _, worker in results}) == 2  # both workers counted
