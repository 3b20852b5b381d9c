"""Through the real SMTP path: held with 250, listed, shown, released, delivered downstream."""

from __future__ import annotations

import argparse
import asyncio
import json

import pytest

from gateway.config import QueueConfig, RelayConfig
from gateway.feedback import feedback_dir
from gateway.quarantine.admin import RELEASE_HEADER
from gateway.quarantine.cli_commands import add_quarantine_commands, run_quarantine_command
from gateway.quarantine.store import Filter
from gateway.queue.delivery import DeliveryService
from gateway.smtp import replies
from tests.support.downstream import Downstream
from tests.support.gateway_fixture import RunningGateway

GTUBE_QUARANTINE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-QUARANTINE*C.34X"
ORIGINAL = (
    "From: Newsletter <news@sender.test>\r\n"
    "To: bob@example.test\r\n"
    "Subject: Monthly offers\r\n"
    "Date: Sun, 29 Nov 2026 02:00:00 +0000\r\n"
    "Message-ID: <offers-1@sender.test>\r\n"
    "X-Original-Header: keep me exactly   as is\r\n"
    "\r\n"
    f"Hello Bob,\r\nthis month's offers.\r\n{GTUBE_QUARANTINE}\r\n"
).encode()
FAST_QUEUE = QueueConfig(
    retry_initial_s=0.05, retry_max_s=0.2, lifetime_s=60.0, min_free_bytes=0, scan_interval_s=0.05
)


def cli(gateway: RunningGateway, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gateway")
    add_quarantine_commands(parser.add_subparsers(dest="command", required=True))
    return run_quarantine_command(parser.parse_args(["quarantine", *argv]), gateway.config)


def deliver_queue(gateway: RunningGateway, downstream: Downstream) -> None:
    """Run the real delivery workers over the gateway's spool until one message arrived."""
    relay = RelayConfig(
        host=downstream.host, port=downstream.port, domains=("example.test",), tls="none",
        timeout_s=5.0, connections=1,
    )  # fmt: skip

    async def scenario() -> None:
        service = DeliveryService(gateway.spool, relay, FAST_QUEUE, "mx.gateway.test")
        await service.start()
        try:
            await downstream.wait_for_async(1, timeout_s=15)
        finally:
            await service.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_held_message_is_listed_shown_released_and_arrives_intact(
    gateway: RunningGateway, downstream: Downstream, capsys: pytest.CaptureFixture[str]
) -> None:
    with gateway.client() as smtp:
        smtp.ehlo()
        assert smtp.mail("news@sender.test")[0] == 250
        assert smtp.rcpt("bob@example.test")[0] == 250
        code, text = smtp.data(ORIGINAL)
    [qid] = [e.id for e in gateway.quarantine.find(Filter())]
    assert f"{code} {text.decode()}" == replies.held(qid)
    assert gateway.spool.ids() == []  # held, not queued

    assert cli(gateway, "list") == 0
    listing = capsys.readouterr().out
    assert (
        qid in listing
        and "Monthly offers" in listing
        and "Newsletter <news@sender.test>" in listing
    )

    assert cli(gateway, "list", "--json", "--symbol", "GTUBE_QUARANTINE") == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["mail_from"] == "news@sender.test" and listed["rcpt_tos"] == ["bob@example.test"]
    assert "GTUBE_QUARANTINE" in [s["name"] for s in listed["symbols"]]

    assert cli(gateway, "show", qid) == 0
    shown = capsys.readouterr().out
    assert "GTUBE_QUARANTINE forces quarantine" in shown
    assert "X-Original-Header: keep me exactly as is" in shown
    assert "Hello Bob," in shown

    assert cli(gateway, "release", qid, "--learn") == 0
    assert f"released {qid} as queue id" in capsys.readouterr().out
    deliver_queue(gateway, downstream)

    [got] = downstream.messages
    assert got.mail_from == "news@sender.test" and got.rcpt_tos == ("bob@example.test",)
    assert got.data.startswith(f"{RELEASE_HEADER}: id={qid};".encode())
    assert got.data.endswith(ORIGINAL)  # the client's headers and body, byte for byte
    # The gateway's own stamp stays visible, turned to "No": a Junk rule must not file the
    # released message away again (issue 32); the score and symbols stay for the record.
    assert b"\r\nX-Spam-Status: No, score=" in got.data
    assert b"X-Spam-Status: Yes" not in got.data
    [ham] = (feedback_dir(gateway.config.storage_dir) / "ham").iterdir()
    assert ham.read_bytes().endswith(ORIGINAL)
    assert cli(gateway, "release", qid) == 1  # a second release is refused, nothing resent
    assert "already released" in capsys.readouterr().err
