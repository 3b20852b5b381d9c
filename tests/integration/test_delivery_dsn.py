"""Bounces end to end: a downstream refusal after acceptance becomes one DSN to the sender."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
from pathlib import Path
from typing import Any

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
    spool.enqueue(
        "m1", "alice@example.org", ["full@example.test"], message(), sender_authenticated=True
    )

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


def _dsn_message(spool: Spool, mail_from: str = "alice@example.org") -> None:
    """m1 as a client asked for it: RET, ENVID (decoded "+" inside), per recipient NOTIFY and
    ORCPT (decoded), as the SMTP session stores them."""
    spool.enqueue(
        "m1",
        mail_from,
        ["success@example.test", "never@example.test", "plain@example.test"],
        message(),
        dsn_ret="FULL",
        dsn_envid="QQ+314",
        rcpt_notify=[("SUCCESS", "FAILURE"), ("NEVER",), ()],
        rcpt_orcpt=["rfc822;Success+tag@example.test", "", ""],
        sender_authenticated=True,
    )


def test_dsn_parameters_are_relayed_to_a_server_offering_dsn(tmp_path: Path) -> None:
    downstream = Downstream(dsn=True)
    downstream.start()
    try:
        spool = Spool(tmp_path / "queue", min_free_bytes=0)
        _dsn_message(spool)

        async def scenario() -> None:
            service = service_for(spool, downstream)
            await service.start()
            await downstream.wait_for_async(1)
            await until(lambda: spool.ids() == [])
            await asyncio.sleep(0.3)  # time for a notice that must not come
            await service.stop()

        run(scenario())
    finally:
        downstream.stop()
    [relayed] = downstream.messages
    assert relayed.mail_from == "alice@example.org"
    mail, *rcpts = downstream.commands
    assert mail.startswith("MAIL FROM:<alice@example.org> ")
    assert mail.endswith(" RET=FULL ENVID=QQ+2B314")  # xtext on the wire (RFC 3461 4)
    assert rcpts == [
        "RCPT TO:<success@example.test> NOTIFY=SUCCESS,FAILURE"
        " ORCPT=rfc822;Success+2Btag@example.test",
        "RCPT TO:<never@example.test> NOTIFY=NEVER",
        "RCPT TO:<plain@example.test>",
    ]
    # The internal server took on the success notices: none from us.
    assert spool.ids() == [] and len(downstream.messages) == 1


def test_without_dsn_downstream_notify_success_gets_a_relayed_notice(
    tmp_path: Path, downstream: Downstream
) -> None:
    spool = Spool(tmp_path / "queue", min_free_bytes=0)
    _dsn_message(spool)
    queued: list[str | None] = []

    class Recording(SpoolBouncer):
        def notify(self, *args: Any, **kwargs: Any) -> str | None:
            queued.append(super().notify(*args, **kwargs))
            return queued[-1]

    async def scenario() -> None:
        bouncer = Recording(spool, "mx.gateway.test", downstream.host)
        service = DeliveryService(
            spool, relay_to(downstream), FAST_QUEUE, "mx.gateway.test", bouncer
        )
        await service.start()
        await downstream.wait_for_async(2)  # the message, then the notice to alice
        await until(lambda: spool.ids() == [])
        await asyncio.sleep(0.3)
        await service.stop()

    run(scenario())
    original, notice = downstream.messages
    # aiosmtpd refuses unknown parameters: none were sent to it.
    assert not any("NOTIFY=" in c or "RET=" in c for c in downstream.commands)
    assert original.rcpt_tos == ("success@example.test", "never@example.test", "plain@example.test")
    assert queued == ["m1-relayed"]
    assert (notice.mail_from, notice.rcpt_tos) == ("", ("alice@example.org",))
    report = email.message_from_bytes(notice.data, policy=email.policy.compat32)
    text, status, returned = report.get_payload()
    assert "success@example.test" in text.get_payload()
    per_message, rcpt = status.get_payload()  # only the one who asked for SUCCESS
    assert per_message["Original-Envelope-Id"] == "QQ+314"
    assert rcpt["Final-Recipient"] == "rfc822; success@example.test"
    assert rcpt["Original-Recipient"] == "rfc822;Success+tag@example.test"
    assert (rcpt["Action"], rcpt["Status"]) == ("relayed", "2.0.0")
    # RET=FULL is for failures: a success notice returns the headers only.
    assert returned.get_content_type() == "text/rfc822-headers"


def test_a_null_sender_never_gets_a_relayed_notice(tmp_path: Path, downstream: Downstream) -> None:
    spool = Spool(tmp_path / "queue", min_free_bytes=0)
    _dsn_message(spool, mail_from="")

    async def scenario() -> None:
        service = service_for(spool, downstream)
        await service.start()
        await downstream.wait_for_async(1)
        await until(lambda: spool.ids() == [])
        await asyncio.sleep(0.3)
        await service.stop()

    run(scenario())
    assert len(downstream.messages) == 1 and spool.ids() == []
