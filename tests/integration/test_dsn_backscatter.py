"""No "relayed" or delay notices to a sender the transaction did not authenticate: with a
forged MAIL FROM (SPF fail) and NOTIFY=SUCCESS the gateway mailed the forged sender a copy of
the attacker's headers with our X-Spam-Status (a backscatter source and a score oracle)."""

from __future__ import annotations

import smtplib
import time

import pytest

from tests.support.dns_server import DnsTestServer
from tests.support.downstream import Downstream
from tests.support.gateway_process import GatewayProcessFactory, wait_until

FORGED = "victim@bank.test"  # bank.test: v=spf1 -all, and we come from 127.0.0.1
GENUINE = "alice@good.test"  # good.test: v=spf1 ip4:127.0.0.1 -all


@pytest.fixture
def spf_zones(dns_server: DnsTestServer) -> None:
    dns_server.set_zone("bank.test", {"@": {"TXT": ["v=spf1 -all"]}})
    dns_server.set_zone("good.test", {"@": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]}})


def send(port: int, sender: str, rcpt: str, notify: str) -> None:
    message = (
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: hello from {sender}\r\n"
        f"Message-ID: <{time.monotonic_ns()}@client.test>\r\n\r\nHello\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.mail(sender, ["RET=FULL"])[0] == 250
        assert client.rcpt(rcpt, [f"NOTIFY={notify}"])[0] == 250
        assert client.data(message)[0] == 250


def notices_to(downstream: Downstream, sender: str) -> list[bytes]:
    """The notices (from the null sender) that reached the internal server for `sender`."""
    return [m.data for m in downstream.messages if m.rcpt_tos == (sender,) and not m.mail_from]


@pytest.mark.usefixtures("spf_zones")
@pytest.mark.timeout(120)
def test_success_notice_only_for_an_spf_authenticated_sender(
    gateway_process: GatewayProcessFactory, downstream: Downstream
) -> None:
    gw = gateway_process({"relay": {"port": downstream.port}, "verify": {"enabled": False}})
    send(gw.port, FORGED, "bob@example.test", "SUCCESS")
    send(gw.port, GENUINE, "bob@example.test", "SUCCESS")
    # The genuine sender's notice comes (the mechanism works), the forged one's never does.
    assert wait_until(lambda: notices_to(downstream, GENUINE) != [], 20), gw.log_tail()
    time.sleep(1.0)  # queue scans every 0.2 s: time for a notice that must not come
    assert notices_to(downstream, FORGED) == []
    assert len(downstream.messages) == 3  # two messages, one notice


@pytest.mark.usefixtures("spf_zones")
@pytest.mark.timeout(120)
def test_delay_notice_only_for_an_spf_authenticated_sender(
    gateway_process: GatewayProcessFactory, downstream: Downstream
) -> None:
    downstream.fail_rcpt("452 4.2.2 Mailbox full", rcpt="full@example.test")
    gw = gateway_process(
        {
            "relay": {"port": downstream.port},
            "verify": {"enabled": False},
            "queue": {"delay_warning_s": 0.5},
        }
    )
    send(gw.port, FORGED, "full@example.test", "DELAY,FAILURE")
    send(gw.port, GENUINE, "full@example.test", "DELAY,FAILURE")
    assert wait_until(lambda: notices_to(downstream, GENUINE) != [], 20), gw.log_tail()
    time.sleep(1.5)
    assert notices_to(downstream, FORGED) == []
