"""SMTP smuggling (CVE-2023-51764/51765/51766 class): only CRLF.CRLF ends DATA, and no bare CR
or LF reaches the spool, whatever the published end-of-data look-alike is."""

from __future__ import annotations

import re

import pytest

from gateway.smtp import replies
from tests.support.gateway_fixture import GatewayFactory, RunningGateway
from tests.support.smtp_client import RawSmtp

# The published fake end-of-data sequences (SEC Consult, Postfix/Sendmail/Exim advisories).
FAKE_ENDS = [b"\n.\n", b"\n.\r\n", b"\r.\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r", b"\n.\r"]
HEADERS = b"From: a@sender.test\r\nTo: bob@example.test\r\nSubject: x\r\n\r\n"
SMUGGLED = (
    b"MAIL FROM:<admin@example.test>\r\n"
    b"RCPT TO:<victim@example.test>\r\n"
    b"DATA\r\n"
    b"From: admin@example.test\r\n\r\nsmuggled\r\n"
)
BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def send_smuggling_attempt(gateway: RunningGateway, fake_end: bytes) -> tuple[str, bytes]:
    """One session: a message with `fake_end` + a smuggled transaction inside; the reply to the
    DATA and anything else the server said before the NOOP that follows."""
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        assert client.command("MAIL FROM:<a@sender.test>") == replies.sender_ok()
        assert client.command("RCPT TO:<bob@example.test>") == replies.recipient_ok()
        assert client.command("DATA") == replies.START_MAIL
        client.send(HEADERS + b"hello" + fake_end + SMUGGLED + b"\r\n.\r\n")
        data_reply = client.reply()
        # In step: the very next reply is the NOOP's, and nothing else follows it.
        assert client.command("NOOP") == replies.NOOP
        return data_reply, client.pending()


@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=repr)
def test_reject_mode_refuses_after_the_real_end(gateway: RunningGateway, fake_end: bytes) -> None:
    data_reply, extra = send_smuggling_attempt(gateway, fake_end)
    assert data_reply == replies.BARE_LINE_ENDING
    assert extra == b""
    assert gateway.spool.ids() == []


@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=repr)
def test_normalize_mode_keeps_one_message_with_crlf_only(
    gateway_factory: GatewayFactory, fake_end: bytes
) -> None:
    gateway = gateway_factory({"smtp": {"bare_lf": "normalize"}})
    data_reply, extra = send_smuggling_attempt(gateway, fake_end)
    assert data_reply.startswith("250 2.0.0 Ok: queued as ")
    assert extra == b""
    [msg_id] = gateway.spool.ids()
    stored = gateway.spool.read_data(msg_id)
    assert BARE.search(stored) is None
    # The smuggled commands are text of the one message, not a second transaction.
    assert b"MAIL FROM:<admin@example.test>\r\n" in stored
    assert [r.address for r in gateway.spool.load(msg_id).recipients] == ["bob@example.test"]


def test_dot_stuffing_is_undone_only_at_line_starts(gateway: RunningGateway) -> None:
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        client.command("MAIL FROM:<a@sender.test>")
        client.command("RCPT TO:<bob@example.test>")
        assert client.command("DATA") == replies.START_MAIL
        client.send(HEADERS + b"..\r\n..leading dot\r\nmid.dle\r\n.\r\n")
        assert client.reply().startswith("250 ")
    [msg_id] = gateway.spool.ids()
    assert gateway.spool.read_data(msg_id).endswith(b"\r\n\r\n.\r\n.leading dot\r\nmid.dle\r\n")


# Past the first network reads: DATA is taken a read at a time in one piece where it is clean,
# and the smuggling rules must hold there as on a short message.
FILLER = b"".join(
    b"line %d of a long message\r\n..dot-stuffed %d\r\n" % (n, n) for n in range(50_000)
)


@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=repr)
def test_a_fake_end_deep_in_a_large_message_is_refused(
    gateway_factory: GatewayFactory, fake_end: bytes
) -> None:
    gateway = gateway_factory({"smtp": {"max_message_bytes": 10 * 1024 * 1024}})
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        assert client.command("MAIL FROM:<a@sender.test>") == replies.sender_ok()
        assert client.command("RCPT TO:<bob@example.test>") == replies.recipient_ok()
        assert client.command("DATA") == replies.START_MAIL
        client.send(HEADERS + FILLER + b"hello" + fake_end + SMUGGLED + FILLER + b"\r\n.\r\n")
        assert client.reply() == replies.BARE_LINE_ENDING
        assert client.command("NOOP") == replies.NOOP
        assert client.pending() == b""
    assert gateway.spool.ids() == []


def test_a_large_message_is_stored_exactly_with_its_dots_undone(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory({"smtp": {"max_message_bytes": 10 * 1024 * 1024}})
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        client.command("MAIL FROM:<a@sender.test>")
        client.command("RCPT TO:<bob@example.test>")
        assert client.command("DATA") == replies.START_MAIL
        client.send(HEADERS + FILLER + b"\r\n" * 200_000 + FILLER + b".\r\nNOOP\r\n")
        assert client.reply().startswith("250 ")
        assert client.reply() == replies.NOOP  # pipelined after the dot: still in step
    [msg_id] = gateway.spool.ids()
    unstuffed = FILLER.replace(b"\r\n..", b"\r\n.")
    assert gateway.spool.read_data(msg_id).endswith(
        b"\r\n\r\n" + unstuffed + b"\r\n" * 200_000 + unstuffed
    )
