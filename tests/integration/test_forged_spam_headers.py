"""Forged X-Spam-* and Authentication-Results (issue 22 item 1, issue 31): over real SMTP, the
internal server sees only ours, whether the message was queued at once or held and released;
the quarantine keeps the sender's copies as evidence; a DSN returns none of ours."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from pathlib import Path

import pytest

from gateway.checks.gtube import GTUBE_QUARANTINE
from gateway.quarantine.store import Filter
from gateway.queue.delivery import DeliveryService
from gateway.queue.dsn import SpoolBouncer
from gateway.queue.spool import Spool
from tests.integration.test_delivery_relay import FAST_QUEUE, relay_to, run, until
from tests.integration.test_quarantine_smtp import cli, deliver_queue
from tests.support.downstream import Downstream
from tests.support.gateway_fixture import RunningGateway

HOST = "mx.gateway.test"
CLEAN = b"X-Spam-Status: No, score=-100.0 required=5.0 symbols=FORGED"
# Every way a forger may spell them: case, obsolete space before the colon, folding,
# encoded words, the names of other filters' fields in our namespace, and 50 times over.
# Last in the header section: the obsolete space before the colon (RFC 5322 4.5.8), which the
# email package takes for the start of the body (so the checks would miss From; see report).
OBSOLETE = [b"X-Spam-Status :No, score=-98", b"X-sPaM-sCoRe\t: -98"]
FORGED = (
    [
        CLEAN,
        b"X-Spam-Score: -100",
        b"x-spam-status: No, score=-99",
        b"X-SPAM-SCORE: -99",
        b"X-Spam-Status: No,\r\n\tscore=-97\r\n required=5.0 symbols=FOLDED",
        b"X-Spam-Status: =?utf-8?q?No=2C_score=3D-96?=",
        b"X-Spam-Score: =?utf-8?b?LTk2?=",
        b"X-Spam-Flag: NO",
        b"X-Spam-Level: ",
        b"X-Spam-Checker-Version: SpamAssassin 4.0.0 on forger.test",
        b"X-Spam-Report: \r\n\t* -100 FORGED forged",
        b"Authentication-Results: mx.gateway.test; dmarc=pass header.from=bank.test",
        b"Authentication-Results: (c) MX.Gateway.Test.; spf=pass",
    ]
    + [b"X-Spam-Status: No, score=-%d" % n for n in range(50)]
    + [b"X-Spam-Score: -%d" % n for n in range(50)]
)
THEIRS = [
    b"X-Spamd-Result: default: False [1.0 / 15.0]",
    b"Authentication-Results: other.test; x=y",
]


def message(body: bytes = b"Hello.\r\n") -> bytes:
    fields = [*FORGED[:5], *THEIRS, *FORGED[5:]]
    return (
        b"\r\n".join(fields) + b"\r\n"
        b"From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: forged\r\n"
        b"Date: Tue, 08 Dec 2026 04:00:00 +0000\r\n"
        b"Message-ID: <forged@sender.test>\r\n" + b"\r\n".join(OBSOLETE) + b"\r\n\r\n" + body
    )


def field_values(data: bytes, name: bytes) -> list[bytes]:
    """The values of every `name` field in the header section, however spelled."""
    head = data.partition(b"\r\n\r\n")[0]
    pattern = rb"(?im)^" + re.escape(name) + rb"[ \t]*:(.*(?:\r\n[ \t].*)*)"
    return [m.group(1).strip() for m in re.finditer(pattern, head)]


def assert_only_ours(data: bytes, flag: bytes) -> None:
    head = data.partition(b"\r\n\r\n")[0]
    [status] = field_values(data, b"X-Spam-Status")
    [score] = field_values(data, b"X-Spam-Score")
    assert status.startswith(flag + b", score=" + score + b" required=6.00 symbols=")
    assert re.findall(rb"(?im)^x-spam-[^:]*:", head) == [b"X-Spam-Score:", b"X-Spam-Status:"]
    [ours] = [v for v in field_values(data, b"Authentication-Results") if b"other.test" not in v]
    assert ours.startswith(HOST.encode() + b";") and b"pass" not in ours
    assert all(t in data for t in THEIRS)  # other filters' fields are not ours to remove


def test_the_internal_server_sees_only_our_spam_headers(
    gateway: RunningGateway, downstream: Downstream
) -> None:
    with gateway.client() as smtp:
        smtp.sendmail("alice@sender.test", ["bob@example.test"], message())
    deliver_queue(gateway, downstream)
    [got] = downstream.messages
    assert_only_ours(got.data, b"No")
    assert got.data.endswith(b"Message-ID: <forged@sender.test>\r\n\r\nHello.\r\n")


def test_a_held_message_keeps_the_forgeries_as_evidence_and_is_released_without_them(
    gateway: RunningGateway, downstream: Downstream, capsys: pytest.CaptureFixture[str]
) -> None:
    with gateway.client() as smtp:
        smtp.sendmail(
            "alice@sender.test", ["bob@example.test"], message(GTUBE_QUARANTINE + b"\r\n")
        )
    [entry] = gateway.quarantine.find(Filter())
    assert cli(gateway, "show", entry.id) == 0
    shown = capsys.readouterr().out
    assert "symbols=FORGED" in shown and "dmarc=pass header.from=bank.test" in shown
    assert cli(gateway, "release", entry.id) == 0
    deliver_queue(gateway, downstream)
    [got] = downstream.messages
    # Below X-Quarantine-Released; a released message says No (issue 32: a Junk rule must not
    # file it away again).
    assert_only_ours(got.data.partition(b"\r\n")[2], b"No")


def stamped() -> bytes:
    """What the gateway queues: ours on top of the sender's message."""
    return (
        b"Authentication-Results: mx.gateway.test;\r\n\tspf=pass smtp.mailfrom=sender.test\r\n"
        b"X-Spam-Score: 3.10\r\n"
        b"X-Spam-Status: No, score=3.10 required=6.00\r\n\tsymbols=ML_SPAM,URIBL_BLACK\r\n"
        b"Received: from client.test ([127.0.0.1])\r\n\tby mx.gateway.test with ESMTP id m1;"
        b" Tue, 8 Dec 2026 04:00:00 +0000\r\n"
        b"From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: bounced\r\n"
        b"Message-ID: <bounced@sender.test>\r\n\r\nHello.\r\n"
    )


@pytest.mark.parametrize("ret", ["FULL", "HDRS"])
def test_a_returned_copy_carries_none_of_our_headers(
    tmp_path: Path, downstream: Downstream, ret: str
) -> None:
    spool = Spool(tmp_path / "queue", min_free_bytes=0)
    downstream.fail_rcpt("550 5.1.1 no such user", rcpt="bob@example.test")
    spool.enqueue("m1", "alice@example.org", ["bob@example.test"], stamped(), dsn_ret=ret)

    async def scenario() -> None:
        bouncer = SpoolBouncer(spool, HOST, downstream.host)
        service = DeliveryService(spool, relay_to(downstream), FAST_QUEUE, HOST, bouncer)
        await service.start()
        try:
            await downstream.wait_for_async(1)
            await until(lambda: spool.ids() == [])
            await asyncio.sleep(0.1)
        finally:
            await service.stop()

    run(scenario())
    [dsn] = downstream.messages
    assert (dsn.mail_from, dsn.rcpt_tos) == ("", ("alice@example.org",))
    report = email.message_from_bytes(dsn.data, policy=email.policy.compat32)
    returned = report.get_payload()[2].as_bytes()
    assert b"Message-ID: <bounced@sender.test>" in returned and b"Received: from" in returned
    for ours in (b"X-Spam", b"ML_SPAM", b"Authentication-Results", b"spf=pass"):
        assert ours not in returned, ours
