"""Recipient verification at RCPT through the real gateway: unknown users are refused during
the session (no backscatter later), and an internal server that cannot answer defers."""

from __future__ import annotations

import smtplib

import pytest

from gateway.smtp import replies
from tests.support.downstream import Downstream
from tests.support.gateway_process import GatewayProcessFactory


def rcpt_reply(port: int, rcpt: str) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
        client.ehlo("client.test")
        client.mail("sender@outside.test")
        code, text = client.rcpt(rcpt)
        return f"{code} {text.decode()}"


@pytest.mark.timeout(60)
def test_unknown_user_refused_and_known_user_accepted(
    gateway_process: GatewayProcessFactory, downstream: Downstream
) -> None:
    downstream.fail_rcpt("550 5.1.1 No such user", rcpt="ghost@example.test")
    gw = gateway_process({"relay": {"port": downstream.port}})
    assert rcpt_reply(gw.port, "ghost@example.test") == replies.UNKNOWN_RECIPIENT
    assert rcpt_reply(gw.port, "bob@example.test").startswith("250 ")
    probes = downstream.rcpt_commands
    assert rcpt_reply(gw.port, "ghost@example.test") == replies.UNKNOWN_RECIPIENT
    assert downstream.rcpt_commands == probes  # the negative answer came from the cache


@pytest.mark.timeout(60)
def test_internal_server_down_defers_or_accepts_as_configured(
    gateway_process: GatewayProcessFactory, downstream: Downstream
) -> None:
    deferring = gateway_process({"relay": {"port": downstream.port}}, name="defer")
    accepting = gateway_process(
        {"relay": {"port": downstream.port}, "verify": {"on_unavailable": "accept"}},
        name="accept",
    )
    downstream.stop()
    assert rcpt_reply(deferring.port, "bob@example.test") == replies.RECIPIENT_UNVERIFIED
    assert rcpt_reply(accepting.port, "bob@example.test").startswith("250 ")


@pytest.mark.timeout(90)
def test_recipients_confirmed_before_an_outage_are_still_accepted_after_a_restart(
    gateway_process: GatewayProcessFactory, downstream: Downstream
) -> None:
    """An Exchange patch night (issue 32): bob was verified, the gateway restarted (or
    another worker answers), then the internal server went down. bob's mail is accepted and
    queued; carol, never confirmed, still gets the temporary refusal."""
    gw = gateway_process({"relay": {"port": downstream.port}})
    assert rcpt_reply(gw.port, "bob@example.test").startswith("250 ")
    gw.terminate()  # the in-memory cache goes with the process
    gw.start()
    downstream.stop()
    assert rcpt_reply(gw.port, "Bob@Example.test").startswith("250 ")
    assert rcpt_reply(gw.port, "carol@example.test") == replies.RECIPIENT_UNVERIFIED
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=15) as client:
        refused = client.sendmail(
            "sender@outside.test",
            ["bob@example.test"],
            b"From: <sender@outside.test>\r\nSubject: patch night\r\n\r\nHello.\r\n",
        )
    assert refused == {}  # queued; delivered once the internal server is back
    assert "internal server unavailable, confirmed 0.0 h ago" in gw.log_tail(200)


@pytest.mark.timeout(60)
def test_known_recipients_off_defers_as_before(
    gateway_process: GatewayProcessFactory, downstream: Downstream
) -> None:
    gw = gateway_process({"relay": {"port": downstream.port}, "verify": {"known_ttl_s": 0}})
    assert rcpt_reply(gw.port, "bob@example.test").startswith("250 ")
    gw.terminate()
    gw.start()
    downstream.stop()
    assert rcpt_reply(gw.port, "bob@example.test") == replies.RECIPIENT_UNVERIFIED
