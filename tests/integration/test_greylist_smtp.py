"""Greylisting through the real SMTP path: a real client retries too early (451 again) and
after the delay (accepted, queued once, delivered once downstream). Time is a clock the test
moves, never slept."""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import sqlite3
from typing import Any

import pytest

from gateway.checks.greylist import STATE_FILE
from gateway.config import QueueConfig, RelayConfig
from gateway.queue.delivery import DeliveryService
from tests.support.downstream import Downstream
from tests.support.gateway_fixture import GatewayFactory, RunningGateway, only_checks

SENDER = "alice@sender.test"
RCPT = "bob@example.test"
HEADERS = (
    "To: bob@example.test\r\nSubject: retry me\r\n"
    "Date: Sun, 29 Nov 2026 02:00:00 +0000\r\nMessage-ID: <grey-1@sender.test>\r\n"
)
# HDR_MISSING_FROM scores 3.0: at the default only_above_score (3.0), between accept and quarantine.
IN_BETWEEN = (HEADERS + "\r\nHello Bob.\r\n").encode()
CLEAN = (f"From: Alice <{SENDER}>\r\n" + HEADERS + "\r\nHello Bob.\r\n").encode()
FAST_QUEUE = QueueConfig(
    retry_initial_s=0.05, retry_max_s=0.2, lifetime_s=60.0, min_free_bytes=0, scan_interval_s=0.05
)


class ManualClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def greylisting(**settings: Any) -> dict[str, Any]:
    checks = only_checks("headers", "gtube")
    checks["greylist"] = {"enabled": True, **settings}
    return {"checks": checks}


def send(gw: RunningGateway, message: bytes, sender: str = SENDER) -> tuple[int, str]:
    """One delivery attempt as a real client makes it: the reply to the end of DATA."""
    with gw.client() as smtp:
        try:
            smtp.sendmail(sender, [RCPT], message)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
    return 250, "queued"


def deliver_all(gw: RunningGateway, downstream: Downstream, count: int) -> None:
    relay = RelayConfig(
        host=downstream.host, port=downstream.port, domains=("example.test",), tls="none",
        timeout_s=5.0, connections=1,
    )  # fmt: skip

    async def scenario() -> None:
        service = DeliveryService(gw.spool, relay, FAST_QUEUE, "mx.gateway.test")
        await service.start()
        try:
            await downstream.wait_for_async(count, timeout_s=15)
            await asyncio.sleep(0.3)  # a second copy, if one were queued, would arrive now
        finally:
            await service.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_retry_too_early_is_deferred_again_and_after_the_delay_delivered_once(
    gateway_factory: GatewayFactory, downstream: Downstream, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    gw = gateway_factory(greylisting(min_delay_s=300), clock=clock)

    with caplog.at_level(logging.INFO, logger="gateway"):
        code, text = send(gw, IN_BETWEEN)
    assert code == 451 and text.startswith("4.7.1 Try again later (greylisted")
    assert "retry in 300 s" in text
    logged = [r.transaction for r in caplog.records if hasattr(r, "transaction")]
    assert logged[-1]["outcome"] == "tempfail"
    assert "GREYLIST_DEFERRED" in json.dumps(logged[-1]["symbols"])

    clock.now += 120  # too early: deferred again, told how long is left
    code, text = send(gw, IN_BETWEEN)
    assert code == 451 and "retry in 180 s" in text
    assert gw.spool.ids() == []

    clock.now += 181  # after the delay: accepted
    assert send(gw, IN_BETWEEN) == (250, "queued")
    assert len(gw.spool.ids()) == 1 and len(gw.recorder.notified) == 1

    deliver_all(gw, downstream, 1)
    assert len(downstream.messages) == 1
    assert downstream.messages[0].rcpt_tos == (RCPT,)

    clock.now += 7 * 86400  # a week later the triplet is known: no delay
    assert send(gw, IN_BETWEEN) == (250, "queued")


def test_only_mail_scoring_in_between_is_greylisted(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(greylisting(), clock=ManualClock())
    assert send(gw, CLEAN) == (250, "queued")  # score 0: clearly passes, never delayed
    assert send(gw, IN_BETWEEN)[0] == 451  # score 3.0: greylisted
    assert send(gw, IN_BETWEEN, sender="")[0] == 250  # the null sender is never delayed


def test_greylisting_is_off_unless_enabled(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(clock=ManualClock())
    assert send(gw, IN_BETWEEN) == (250, "queued")
    assert not (gw.config.storage_dir / STATE_FILE).exists()


def test_a_locked_state_accepts_the_mail_and_logs_it(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holds the state's write lock past timeout_s: no mail is lost
    (on_error = ignore accepts it), and the fallback is logged and visible as GREYLIST_ERROR."""
    gw = gateway_factory(greylisting(timeout_s=0.3), clock=ManualClock())
    blocker = sqlite3.connect(gw.config.storage_dir / STATE_FILE, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.INFO, logger="gateway"):
            assert send(gw, IN_BETWEEN) == (250, "queued")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert any("greylisting failed" in r.getMessage() for r in caplog.records)
    logged = [r.transaction for r in caplog.records if hasattr(r, "transaction")]
    assert "GREYLIST_ERROR" in json.dumps(logged[-1]["symbols"])
    assert len(gw.spool.ids()) == 1


def test_a_locked_state_defers_when_on_error_is_tempfail(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(greylisting(timeout_s=0.3, on_error="tempfail"), clock=ManualClock())
    blocker = sqlite3.connect(gw.config.storage_dir / STATE_FILE, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        code, text = send(gw, IN_BETWEEN)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert code == 451 and "check greylist failed" in text
    assert gw.spool.ids() == []
