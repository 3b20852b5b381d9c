"""Bounces end to end: a downstream refusal after acceptance becomes one DSN to the sender."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
from pathlib import Path

from gateway.queue.delivery import DeliveryService
from gateway.queue.dsn import SpoolBouncer
from gateway.queue.spool import Spool
from tests.integration.test_delivery_relay import FAST_QUEUE, message, relay_to, run, until
from tests.support.downstream import Downstream


def service_for(spool: Spool, downstream: Downstream, **queue: float) -> DeliveryService:
    bouncer = SpoolBouncer(spool, "mx.gateway.test", downstream.host)
    config = dataclasses.replace(FAST_QUEUE, **queue)
    return DeliveryService(spool, relay_to(downstream), config, "mx.gateway.test", bouncer)


def test_refused_recipient_gets_exactly_one_dsn(tmp_path: Path, downstream: Downstream) -> None:
    spool = Spool(tmp_path / "queue", min_free_bytes=0)
    downstream.fail_rcpt("550 5.1.1 No such user", rcpt="nobody@example.test")
    spool.enqueue("m1", "alice@example.org", ["bob@example.test", "nobody@example.test"], message())

    async def scenario() -> None:
        service = service_for(spool, downstream)
        await service.start()
        await downstream.wait_for_async(2)  # the message to bob, then the DSN to alice
        await until(lambda: spool.ids() == [])
        await asyncio.sleep(0.3)
        await service.stop()

    run(scenario())
    original, dsn = downstream.messages
    assert original.rcpt_tos == ("bob@example.test",)
    assert (dsn.mail_from, dsn.rcpt_tos) == ("", ("alice@example.org",))
    report = email.message_from_bytes(dsn.data, policy=email.policy.compat32)
    assert report.get_content_type() == "multipart/report"
    [rcpt] = report.get_payload()[1].get_payload()[1:]
    assert rcpt["Final-Recipient"] == "rfc822; nobody@example.test"
    assert rcpt["Status"] == "5.1.1"
    assert spool.ids(failed=True) == ["m1"]


def test_null_sender_is_never_bounced(tmp_path: Path, downstream: Downstream) -> None:
    spool = Spool(tmp_path / "queue", min_free_bytes=0)
    downstream.fail_rcpt("550 5.1.1 No such user")
    spool.enqueue("m1", "", ["nobody@example.test"], message())

    async def scenario() -> None:
        service = service_for(spool, downstream)
        await service.start()
        await until(lambda: spool.ids(failed=True) == ["m1"])
        await asyncio.sleep(0.3)
        await service.stop()

    run(scenario())
    assert spool.ids() == [] and downstream.messages == []


def test_delay_warning_is_sent_once(tmp_path: Path, downstream: Downstream) -> None:
    spool = Spool(tmp_path / "queue", min_free_bytes=0)
    downstream.fail_rcpt("452 4.2.2 Mailbox full", rcpt="full@example.test")
    spool.enqueue("m1", "alice@example.org", ["full@example.test"], message())

    async def scenario() -> None:
        service = service_for(spool, downstream, delay_warning_s=0.1)
        await service.start()
        [warning] = await downstream.wait_for_async(1)
        await until(lambda: spool.load("m1").attempts >= 4)
        await service.stop()
        report = email.message_from_bytes(warning.data, policy=email.policy.compat32)
        [rcpt] = report.get_payload()[1].get_payload()[1:]
        assert (rcpt["Action"], rcpt["Status"]) == ("delayed", "4.2.2")

    run(scenario())
    assert len(downstream.messages) == 1 and spool.load("m1").delay_warned
