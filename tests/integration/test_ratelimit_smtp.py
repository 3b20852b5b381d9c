"""Rate limits through the real SMTP path: 20 concurrent clients against a limit of 50
messages get exactly 50 accepted; the others 450 with the limit's name; time is a clock the
test moves. And the limits are reloaded with the rules (SIGHUP)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import smtplib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.checks.ratelimit import STATE_FILE
from gateway.config import SHIPPED_RULES_DIR, config_from_dict
from gateway.pipeline.registry import Services
from gateway.runtime import Runtime
from tests.support.gateway_fixture import GatewayFactory, RunningGateway, only_checks

MESSAGE = (
    b"From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: hello\r\n"
    b"Date: Sun, 29 Nov 2026 02:00:00 +0000\r\nMessage-ID: <rl@sender.test>\r\n\r\nHello.\r\n"
)
LIMITS = """
[limit.client_network]
key = "client_network"
count = "messages"
max = 50
window_s = 3600
"""


class ManualClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def time(self) -> float:
        return self.now


def rules_with(tmp_path: Path, limits: str) -> Path:
    rules = tmp_path / "rules"
    if not rules.exists():
        shutil.copytree(SHIPPED_RULES_DIR, rules)
    (rules / "ratelimits.toml").write_text(limits, encoding="utf-8")
    return rules


def limited(rules: Path) -> dict[str, Any]:
    return {"pipeline": {"rules_dir": str(rules)}, "checks": only_checks("headers", "ratelimit")}


def send(gw: RunningGateway, sender: str, rcpts: list[str]) -> tuple[int, str]:
    with gw.client(timeout_s=30) as smtp:
        try:
            smtp.sendmail(sender, rcpts, MESSAGE)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return code, text.decode()
    return 250, "queued"


def test_twenty_concurrent_clients_get_exactly_the_limit(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = gateway_factory(
        limited(rules_with(tmp_path, LIMITS)), services=Services(clock=ManualClock())
    )
    replies: list[tuple[int, str]] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for i in range(5):  # 20 x 5 = 100 attempts against a limit of 50
            result = send(gw, f"user{n}-{i}@sender.test", ["bob@example.test"])
            with lock:
                replies.append(result)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(replies) == 100
    assert sum(code == 250 for code, _ in replies) == 50
    refused = [text for code, text in replies if code != 250]
    assert len(refused) == 50
    assert all(t.startswith("4.7.1 Rate limit exceeded") for t in refused)
    assert "limit=client_network client_network=127.0.0.0/24" in refused[0]
    assert len(gw.spool.ids()) == 50


def test_limits_per_sender_recipients_and_refill(
    gateway_factory: GatewayFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limits = """
[limit.sender]
key = "sender"
count = "recipients"
max = 3
window_s = 600
"""
    clock = ManualClock()
    gw = gateway_factory(limited(rules_with(tmp_path, limits)), services=Services(clock=clock))
    rcpts = [f"u{i}@example.test" for i in range(5)]
    with gw.client() as smtp, caplog.at_level(logging.INFO, logger="gateway"):
        refused = smtp.sendmail("bulk@sender.test", rcpts, MESSAGE)
    assert sorted(refused) == rcpts[3:]  # three recipients pass, two are deferred
    assert all(code == 450 for code, _ in refused.values())
    logged = [r.transaction for r in caplog.records if hasattr(r, "transaction")][-1]
    assert logged["recipients"] == rcpts[:3]
    assert "limit=sender sender=bulk@sender.test" in logged["refused_recipients"][0]["reply"]
    # Another sender has its own bucket; this one is empty until 200 s refill one recipient.
    assert send(gw, "other@sender.test", ["u0@example.test"])[0] == 250
    assert send(gw, "bulk@sender.test", ["u0@example.test"])[0] == 450
    clock.now += 200
    assert send(gw, "bulk@sender.test", ["u0@example.test"])[0] == 250
    assert send(gw, "bulk@sender.test", ["u0@example.test"])[0] == 450


def test_limits_are_reloaded_with_the_rules(tmp_path: Path) -> None:
    rules = rules_with(tmp_path, "")
    config = config_from_dict(
        {
            "storage": {"dir": str(tmp_path / "var")},
            "pipeline": {"rules_dir": str(rules)},
            "dns": {"nameservers": ["127.0.0.1:9"]},
            "checks": {"antivirus": {"enabled": False}, "classifier": {"enabled": False}},
        }
    )
    runtime = Runtime(config)
    assert "ratelimit" not in [c.name for c in runtime.pipeline.checks]
    rules_with(tmp_path, LIMITS)

    async def reload() -> None:
        runtime.reload_rules()

    asyncio.run(reload())
    assert "ratelimit" in [c.name for c in runtime.pipeline.checks]


def test_a_locked_state_lets_mail_through_and_logs_it(
    gateway_factory: GatewayFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holds the state's write lock past timeout_s: the mail goes on
    (on_error = ignore), RATELIMIT_ERROR in the log line; nothing is lost."""
    overrides = limited(rules_with(tmp_path, LIMITS))
    overrides["checks"]["ratelimit"]["timeout_s"] = 0.3
    gw = gateway_factory(overrides, services=Services(clock=ManualClock()))
    blocker = sqlite3.connect(gw.config.storage_dir / STATE_FILE, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.INFO, logger="gateway"):
            assert send(gw, "a@sender.test", ["bob@example.test"]) == (250, "queued")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    logged = [r.transaction for r in caplog.records if hasattr(r, "transaction")][-1]
    assert "RATELIMIT_ERROR" in str(logged["symbols"])
    assert len(gw.spool.ids()) == 1


def test_a_421_reply_ends_the_session(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    rules = rules_with(tmp_path, LIMITS.replace("max = 50", "max = 1"))
    actions = (rules / "actions.toml").read_text(encoding="utf-8")
    closing = '"421 4.7.1 Rate limit exceeded, closing: {reason}"'
    (rules / "actions.toml").write_text(
        actions.replace('"450 4.7.1 Rate limit exceeded, try again later: {reason}"', closing),
        encoding="utf-8",
    )
    gw = gateway_factory(limited(rules), services=Services(clock=ManualClock()))
    assert send(gw, "a@sender.test", ["bob@example.test"]) == (250, "queued")
    with gw.client() as smtp:
        smtp.ehlo()
        smtp.mail("a@sender.test")
        code, text = smtp.rcpt("bob@example.test")
        assert code == 421 and b"limit=client_network" in text
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()
