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
