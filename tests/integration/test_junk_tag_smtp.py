"""The junk tag between accept and quarantine (issue 32): borderline mail is delivered marked
with X-Spam-Flag: YES (and a Subject prefix when set) for the users' Junk rules."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gateway.smtp import replies
from tests.support.gateway_fixture import GatewayFactory, RunningGateway

NO_DATE = (
    b"From: Alice <alice@sender.test>\r\n"
    b"To: Bob <bob@example.test>\r\n"
    b"Subject: lunch\r\n"
    b"Message-ID: <1@sender.test>\r\n"
    b"\r\nHello.\r\n"
)


def start(factory: GatewayFactory, rules: Path, actions: str = "") -> RunningGateway:
    """A gateway whose admin scores a missing Date at 4.5: above the shipped tag threshold
    (4.0), below quarantine (6.0)."""
    (rules / "scores.toml").write_text("[symbol.HDR_MISSING_DATE]\nscore = 4.5\n")
    if actions:
        (rules / "actions.toml").write_text(actions)
    return factory({"pipeline": {"rules_dir": str(rules)}})


def send(gateway: RunningGateway, data: bytes) -> bytes:
    with gateway.client() as smtp:
        smtp.ehlo()
        refused = smtp.sendmail("alice@sender.test", ["bob@example.test"], data)
    assert refused == {}
    [msg_id] = gateway.spool.ids()
    return gateway.spool.read_data(msg_id)


def test_borderline_mail_is_delivered_with_the_spam_flag(
    gateway_factory: GatewayFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.transaction")
    gateway = start(gateway_factory, tmp_path)
    stored = send(gateway, NO_DATE)
    head = stored.partition(b"\r\n\r\n")[0]
    assert b"\r\nX-Spam-Flag: YES\r\nX-Spam-Score: 4.50\r\n" in head
    assert b"\r\nSubject: lunch\r\n" in head  # no prefix unless configured
    [line] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.transaction"]
    assert line["outcome"] == "tag"
    assert line["reply"] == replies.queued(line["id"])


def test_subject_prefix_when_configured(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    gateway = start(gateway_factory, tmp_path, '[tag]\nsubject_prefix = "[SPAM] "\n')
    head = send(gateway, NO_DATE).partition(b"\r\n\r\n")[0]
    assert b"\r\nSubject: [SPAM] lunch\r\n" in head


def test_mail_below_the_tag_threshold_is_not_flagged(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gateway = start(gateway_factory, tmp_path, "[thresholds]\ntag = 5.0\n")
    head = send(gateway, NO_DATE).partition(b"\r\n\r\n")[0]
    assert b"X-Spam-Flag" not in head
