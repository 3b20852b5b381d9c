"""[quarantine] max_bytes / max_messages: the quarantine cannot be filled by anyone who can send
the GTUBE quarantine string; past the limit, mail that would be held gets 451 4.3.1."""

from __future__ import annotations

import smtplib

from gateway.smtp import replies
from tests.support.downstream import Downstream
from tests.support.gateway_process import GatewayProcessFactory

GTUBE_QUARANTINE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-QUARANTINE*C.34X"


def message(n: int, body: str) -> bytes:
    return (
        f"From: a@sender.test\r\nTo: bob@example.test\r\nSubject: number {n}\r\n"
        f"Message-ID: <n{n}@sender.test>\r\n\r\n{body}\r\n{'x' * 2000}\r\n"
    ).encode()


def send(client: smtplib.SMTP, data: bytes) -> str:
    client.ehlo_or_helo_if_needed()
    assert client.mail("a@sender.test")[0] == 250
    assert client.rcpt("bob@example.test")[0] == 250
    code, text = client.data(data)
    return f"{code} {text.decode()}"


def test_past_max_bytes_held_mail_is_deferred_and_the_rest_flows(
    gateway_process: GatewayProcessFactory, downstream: Downstream
) -> None:
    gw = gateway_process(
        {
            "relay": {"port": downstream.port},
            "verify": {"enabled": False},
            "quarantine": {"max_bytes": 6000},  # two held messages of ~2.5 kB, not three
        }
    )
    with smtplib.SMTP(gw.host, gw.port, timeout=10) as client:
        answers = [send(client, message(n, GTUBE_QUARANTINE)) for n in range(3)]
        ordinary = send(client, message(3, "Hello Bob"))
    assert [a.split()[0] for a in answers] == ["250", "250", "451"]
    assert answers[2] == replies.QUARANTINE_FULL
    assert ordinary.startswith("250 2.0.0 Ok: queued as")
    assert "quarantine full" in gw.log_path.read_text(encoding="utf-8")


def test_past_max_messages_held_mail_is_deferred(
    gateway_process: GatewayProcessFactory, downstream: Downstream
) -> None:
    gw = gateway_process(
        {
            "relay": {"port": downstream.port},
            "verify": {"enabled": False},
            "quarantine": {"max_messages": 1},
        }
    )
    with smtplib.SMTP(gw.host, gw.port, timeout=10) as client:
        answers = [send(client, message(n, GTUBE_QUARANTINE)) for n in range(2)]
    assert answers[0].startswith("250 2.0.0 Ok: held as")
    assert answers[1] == replies.QUARANTINE_FULL
