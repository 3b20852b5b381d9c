"""The promises behind a 250: no accepted message is lost by a crash, a restart or a downstream
outage, and none is delivered twice where avoidable. Real gateway process, real clients, real
downstream server, all on loopback."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.downstream import Downstream
from tests.support.gateway_process import GatewayProcess, GatewayProcessFactory, wait_until

CLIENT_TIMEOUT_S = 15.0
# Figures for the README go here only when asked for: `make test` must not write into the checkout.
REPORT_DIR = os.environ.get("GATEWAY_TEST_REPORTS")


def message(tag: str, size: int = 2048) -> bytes:
    body = (f"{tag} " * (size // (len(tag) + 1) + 1))[:size]
    lines = [body[i : i + 70] for i in range(0, len(body), 70)]
    return (
        f"From: Sender <sender@outside.test>\r\nTo: bob@example.test\r\n"
        f"Subject: {tag}\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{tag}@outside.test>\r\n\r\n" + "\r\n".join(lines) + "\r\n"
    ).encode()


def send(gw: GatewayProcess, tag: str, source_ip: str = "127.0.0.1") -> bool:
    """One session, one message; True only when the gateway answered 250 to DATA."""
    try:
        with smtplib.SMTP(
            gw.host, gw.port, timeout=CLIENT_TIMEOUT_S, source_address=(source_ip, 0)
        ) as client:
            client.sendmail("sender@outside.test", ["bob@example.test"], message(tag))
        return True
    except (smtplib.SMTPException, OSError):
        return False


def report(name: str, data: dict[str, object]) -> None:
    if REPORT_DIR:
        directory = Path(REPORT_DIR)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{name}.json").write_text(json.dumps(data, indent=2), encoding="utf-8")


@pytest.mark.timeout(120)
def test_sigkill_while_ten_clients_send_loses_nothing(
    gateway_process: GatewayProcessFactory, downstream: Downstream
) -> None:
    gw = gateway_process({"relay": {"port": downstream.port}})
    accepted: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        for sequence in range(500):  # bounded; the kill ends it much sooner
            if stop.is_set():
                return
            tag = f"c{number}-m{sequence}"
            if send(gw, tag):
                with lock:
                    accepted.append(tag)

    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [pool.submit(client, n) for n in range(10)]
        assert wait_until(lambda: len(accepted) >= 50, 30), gw.log_tail()
        gw.kill()
        stop.set()
        for future in futures:
            future.result(timeout=60)
    accepted_at_kill = len(accepted)
    gw.start()  # same storage, same port: the queue resumes
    delivered = wait_until(lambda: set(accepted) <= set(downstream.subjects()), 60)
    tags = downstream.subjects()
    lost = sorted(set(accepted) - set(tags))
    duplicates = {t: n for t, n in tags.items() if n > 1}
    report(
        "sigkill",
        {
            "accepted": accepted_at_kill,
            "lost": len(lost),
            "duplicates": len(duplicates),
            "delivered": sum(tags.values()),
        },
    )
    assert delivered and not lost, f"lost {len(lost)} of {accepted_at_kill}: {lost[:10]}"
    # Only a crash between the downstream's 250 and the spool removal can duplicate.
    assert len(duplicates) <= 10, duplicates


@pytest.mark.timeout(90)
def test_messages_wait_while_downstream_is_down_then_all_arrive_once(
    gateway_process: GatewayProcessFactory, downstream: Downstream
) -> None:
    # Recipient verification would (rightly) answer 451 while the internal server is down;
    # this test is about the queue, so the gateway accepts without asking.
    gw = gateway_process({"relay": {"port": downstream.port}, "verify": {"enabled": False}})
    downstream.stop()
    tags = [f"outage-{n}" for n in range(20)]
    assert all(send(gw, tag) for tag in tags)
    time.sleep(2.0)  # several retry rounds against a closed port
    assert downstream.subjects() == Counter()
    downstream.start()
    assert wait_until(lambda: set(tags) <= set(downstream.subjects()), 30), gw.log_tail()
    time.sleep(1.0)  # would-be duplicates have time to show up
    assert downstream.subjects() == Counter({tag: 1 for tag in tags})


@pytest.mark.timeout(120)
def test_two_hundred_concurrent_clients_all_accepted_and_delivered_once(
    gateway_process: GatewayProcessFactory, downstream: Downstream
) -> None:
    gw = gateway_process({"relay": {"port": downstream.port}, "smtp": {"max_connections": 300}})
    barrier = threading.Barrier(200, timeout=30)

    def client(number: int) -> bool:
        barrier.wait()
        # A different loopback source address per client, as 200 different hosts would be.
        return send(
            gw, f"crowd-{number}", source_ip=f"127.0.{1 + number // 250}.{1 + number % 250}"
        )

    with ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(client, range(200)))
    assert results.count(True) == 200, gw.log_tail()
    tags = [f"crowd-{n}" for n in range(200)]
    assert wait_until(lambda: set(tags) <= set(downstream.subjects()), 60), gw.log_tail()
    time.sleep(1.0)
    assert downstream.subjects() == Counter({tag: 1 for tag in tags})


@pytest.mark.timeout(90)
def test_sigterm_drains_and_sighup_reload_survives_broken_rules(
    gateway_process: GatewayProcessFactory, downstream: Downstream, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    from gateway.config import SHIPPED_RULES_DIR

    rules.mkdir()
    for path in SHIPPED_RULES_DIR.glob("*.toml"):
        (rules / path.name).write_bytes(path.read_bytes())
    gw = gateway_process(
        {"relay": {"port": downstream.port}, "pipeline": {"rules_dir": str(rules)}}
    )
    (rules / "scores.toml").write_text("[symbol.BROKEN\n", encoding="utf-8")
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: "rules reload failed" in gw.log_tail(100), 10)
    assert send(gw, "after-bad-reload")  # still serving with the old rules
    assert wait_until(lambda: "after-bad-reload" in downstream.subjects(), 10)
    assert gw.terminate() == 0
