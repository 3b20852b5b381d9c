"""End to end through the real `gateway serve` and delivery: what the internal server gets
from a smuggling attempt is one message with CRLF line ends only, never a second one."""

from __future__ import annotations

import re
import time

from gateway.smtp import replies
from tests.support.downstream import Downstream
from tests.support.gateway_process import GatewayProcessFactory
from tests.support.smtp_client import RawSmtp

BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
FAKE_ENDS = b"\n.\n", b"\r.\r\n", b"\r\n.\n"
HEADERS = (
    b"From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: lunch\r\n"
    b"Date: Sun, 29 Nov 2026 02:45:00 +0000\r\nMessage-ID: <1@sender.test>\r\n\r\n"
)


def test_normalized_smuggling_reaches_downstream_as_one_clean_message(
    gateway_process: GatewayProcessFactory, downstream: Downstream
) -> None:
    gateway = gateway_process(
        {"smtp": {"bare_lf": "normalize"}, "relay": {"port": downstream.port, "tls": "none"}}
    )
    smuggled = b"".join(
        fake_end + b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<victim@example.test>\r\n"
        b"DATA\r\nSubject: smuggled\r\n\r\nsmuggled " + str(n).encode()
        for n, fake_end in enumerate(FAKE_ENDS)
    )
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        assert client.command("MAIL FROM:<a@sender.test>") == replies.sender_ok()
        assert client.command("RCPT TO:<bob@example.test>") == replies.recipient_ok()
        assert client.command("DATA") == replies.START_MAIL
        client.send(HEADERS + b"hello" + smuggled + b"\r\n.\r\n")
        assert client.reply().startswith("250 2.0.0 Ok: queued as ")
    [message] = downstream.wait_for(1)
    time.sleep(0.3)  # a smuggled second message would arrive right behind the first
    assert len(downstream.messages) == 1
    assert message.rcpt_tos == ("bob@example.test",)
    assert BARE.search(message.data) is None
    assert b"\r\nMAIL FROM:<admin@example.test>\r\n" in message.data
    # Every smuggled "transaction" is text inside the one message.
    assert all(f"smuggled {n}\r\n".encode() in message.data for n in range(len(FAKE_ENDS)))
