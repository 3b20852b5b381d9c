"""Hostile and odd clients against the real front end: half-closed sockets, duplicate
recipients, DSN parameters. Each test here failed before its fix."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import time
from typing import Any

import pytest

from gateway.model import Phase
from gateway.smtp import replies
from tests.support.gateway_fixture import GatewayFactory, RunningGateway
from tests.support.smtp_client import RawSmtp

MESSAGE = (
    b"From: a@sender.test\r\nTo: bob@example.test\r\nSubject: x\r\n"
    b"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@sender.test>\r\n\r\nbody\r\n"
)
ENVELOPE = (
    b"EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
)


def read_until_eof(sock: socket.socket, timeout_s: float = 5.0) -> tuple[bytes, bool]:
    """Everything the server sends, and whether it closed the connection within the time."""
    sock.settimeout(0.2)
    received = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            return received, True
        received += data
    return received, False


def transaction_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    records = caplog.records
    return [json.loads(r.getMessage()) for r in records if r.name == "gateway.transaction"]


def test_half_closed_client_gets_its_replies_then_the_connection_closes(
    gateway: RunningGateway,
) -> None:
    # Everything pipelined in one packet, then SHUT_WR: a client that only waits for replies.
    with socket.create_connection((gateway.host, gateway.port), timeout=5) as sock:
        sock.sendall(ENVELOPE + MESSAGE + b".\r\nNOOP\r\n")
        sock.shutdown(socket.SHUT_WR)
        received, closed = read_until_eof(sock)
    lines = received.decode().splitlines()
    [msg_id] = gateway.spool.ids()
    assert lines[-2:] == [replies.queued(msg_id), replies.NOOP]
    assert closed, "the server must close a half-closed session once it has answered"


def test_half_close_in_data_stores_nothing_and_logs_abandoned(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.transaction")
    with socket.create_connection((gateway.host, gateway.port), timeout=5) as sock:
        sock.sendall(ENVELOPE + MESSAGE)  # no end of data
        sock.shutdown(socket.SHUT_WR)
        _, closed = read_until_eof(sock)
    assert closed
    deadline = time.monotonic() + 5
    while not transaction_lines(caplog) and time.monotonic() < deadline:
        time.sleep(0.01)
    [line] = transaction_lines(caplog)
    assert line["outcome"] == "abandoned"
    assert gateway.spool.ids() == []


def test_duplicate_recipients_are_relayed_once(gateway: RunningGateway) -> None:
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        assert client.command("MAIL FROM:<a@sender.test>") == replies.sender_ok()
        for rcpt in ("<bob@example.test>", "<bob@EXAMPLE.TEST>", "bob@example.test"):
            assert client.command(f"RCPT TO:{rcpt}") == replies.recipient_ok()
        assert client.command("RCPT TO:<carol@example.test>") == replies.recipient_ok()
        assert client.command("DATA") == replies.START_MAIL
        client.send(MESSAGE + b".\r\n")
        assert client.reply().startswith("250 ")
    [msg_id] = gateway.spool.ids()
    addresses = [r.address for r in gateway.spool.load(msg_id).recipients]
    assert addresses == ["bob@example.test", "carol@example.test"]


def test_dsn_parameters_are_advertised_and_kept_with_the_message(
    gateway: RunningGateway,
) -> None:
    with RawSmtp(gateway.host, gateway.port) as client:
        assert "DSN" in [line[4:] for line in client.greet().split("\n")]
        assert (
            client.command("MAIL FROM:<a@sender.test> RET=HDRS ENVID=Q+2Bid42 SIZE=100")
            == replies.sender_ok()
        )
        reply = client.command(
            "RCPT TO:<bob@example.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;Bob+40example.test"
        )
        assert reply == replies.recipient_ok()
        assert client.command("RCPT TO:<carol@example.test> NOTIFY=NEVER") == replies.recipient_ok()
        assert client.command("DATA") == replies.START_MAIL
        client.send(MESSAGE + b".\r\n")
        assert client.reply().startswith("250 ")
    [msg_id] = gateway.spool.ids()
    entry = gateway.spool.load(msg_id)
    assert (entry.dsn_ret, entry.dsn_envid) == ("HDRS", "Q+id42")
    bob, carol = entry.recipients
    assert (bob.notify, bob.orcpt) == (("FAILURE", "DELAY"), "rfc822;Bob@example.test")
    assert (carol.notify, carol.orcpt) == (("NEVER",), "")


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("MAIL FROM:<a@sender.test> RET=SOME", replies.BAD_DSN_PARAMETER),
        ("MAIL FROM:<a@sender.test> ENVID=" + "x" * 101, replies.BAD_DSN_PARAMETER),
        ("MAIL FROM:<a@sender.test> FOO=bar", replies.UNKNOWN_PARAMETER),
        ("RCPT TO:<bob@example.test> NOTIFY=NEVER,SUCCESS", replies.BAD_DSN_PARAMETER),
        ("RCPT TO:<bob@example.test> NOTIFY=SOMETIMES", replies.BAD_DSN_PARAMETER),
        ("RCPT TO:<bob@example.test> ORCPT=bob@example.test", replies.BAD_DSN_PARAMETER),
        ("RCPT TO:<bob@example.test> FOO=bar", replies.UNKNOWN_PARAMETER),
        # xtext that decodes to CR LF would split a header of the DSN
        ("MAIL FROM:<a@sender.test> ENVID=a+0D+0ABcc:+20x@y.test", replies.BAD_DSN_PARAMETER),
        ("RCPT TO:<bob@example.test> ORCPT=rfc822;b+0A@x.test", replies.BAD_DSN_PARAMETER),
    ],
)
def test_malformed_dsn_parameters_are_refused(
    gateway: RunningGateway, command: str, reply: str
) -> None:
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        if command.startswith("RCPT"):
            assert client.command("MAIL FROM:<a@sender.test>") == replies.sender_ok()
        assert client.command(command) == reply
        assert client.command("NOOP") == replies.NOOP


def test_client_reset_while_the_checks_run_is_logged_abandoned(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.transaction")
    assert gateway.front_end is not None
    pipeline = gateway.front_end.handler.pipeline
    real_run_phase = pipeline.run_phase

    async def slow_data(phase: Phase, tx: Any, final: bool = False) -> Any:
        if phase is Phase.DATA:
            await asyncio.sleep(0.5)
        return await real_run_phase(phase, tx, final)

    pipeline.run_phase = slow_data  # type: ignore[method-assign]
    with socket.create_connection((gateway.host, gateway.port), timeout=5) as sock:
        sock.sendall(ENVELOPE + MESSAGE + b".\r\n")
        time.sleep(0.2)
        # RST, not FIN: the connection is gone, not just half-closed.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    deadline = time.monotonic() + 5
    while not transaction_lines(caplog) and time.monotonic() < deadline:
        time.sleep(0.01)
    [line] = transaction_lines(caplog)
    assert line["outcome"] == "abandoned"
    assert gateway.spool.ids() == []


def test_client_that_resets_after_quit_keeps_its_message_and_logs_no_error(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    # Postfix's smtp-source (and other bulk senders) speak plain HELO, one step at a time, and
    # close with SO_LINGER 0 after QUIT: an RST right behind the 221.
    caplog.set_level(logging.INFO)
    with socket.create_connection((gateway.host, gateway.port), timeout=5) as sock:
        sock.settimeout(5)
        reader = sock.makefile("rb")
        steps = [b"", b"HELO client.sender.test\r\n", b"MAIL FROM:<a@sender.test>\r\n"]
        steps += [b"RCPT TO:<user@example.test>\r\n", b"DATA\r\n", MESSAGE + b".\r\n"]
        for step in steps:
            sock.sendall(step)
            reply = reader.readline()
            while reply[3:4] == b"-":
                reply = reader.readline()
            assert reply[:1] in (b"2", b"3"), reply
        sock.sendall(b"QUIT\r\n")
        assert reader.readline().startswith(b"221")
        reader.close()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    [msg_id] = gateway.spool.ids()
    assert gateway.spool.read_data(msg_id).endswith(MESSAGE)
    deadline = time.monotonic() + 5
    while not transaction_lines(caplog) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # the session's end, after the RST, has been handled meanwhile
    assert [line["outcome"] for line in transaction_lines(caplog)] == ["accept"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_client_that_never_reads_its_replies_is_dropped_not_kept_open(
    gateway_factory: GatewayFactory,
) -> None:
    # Commands pipelined without reading a reply: once the replies fill the socket buffers,
    # the gateway gives up after the idle timeout and must drop the connection (RST), not
    # close() it, which would wait for ever to hand over what is still buffered.
    gateway = gateway_factory({"smtp": {"idle_timeout_s": 1.0}})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.settimeout(5)
        sock.connect((gateway.host, gateway.port))
        sock.settimeout(0.2)
        flood = b"EHLO client.test\r\n" * 2000  # ~300 bytes of reply each
        deadline = time.monotonic() + 20
        state = TCP_ESTABLISHED
        while state == TCP_ESTABLISHED and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError, BlockingIOError, ConnectionError):
                sock.sendall(flood)  # blocks (times out) once the gateway stops reading
            state = tcp_state(sock)
        assert state == TCP_CLOSE  # reset by the gateway, well within the deadline
    finally:
        sock.close()


TCP_ESTABLISHED, TCP_CLOSE = 1, 7  # linux/tcp_states.h


def tcp_state(sock: socket.socket) -> int:
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0])


@pytest.mark.parametrize(
    ("content", "accepted"),
    [
        (b"." + b"x" * 997 + b"\r\n", True),  # 1000 octets as meant, 1001 on the wire
        (b"x" * 998 + b"\r\n", True),
        (b"." + b"x" * 998 + b"\r\n", False),
        (b"x" * 999 + b"\r\n", False),
    ],
)
def test_line_limit_does_not_count_the_transparency_dot(
    gateway_factory: GatewayFactory, content: bytes, accepted: bool
) -> None:
    gateway = gateway_factory({"smtp": {"max_line_bytes": 1000}})
    wire = b"." + content if content.startswith(b".") else content
    with socket.create_connection((gateway.host, gateway.port), timeout=5) as sock:
        sock.sendall(ENVELOPE + MESSAGE + wire + b".\r\nQUIT\r\n")
        received, _ = read_until_eof(sock)
    reply = received.decode().splitlines()[-2]
    if accepted:
        [msg_id] = gateway.spool.ids()
        assert reply == replies.queued(msg_id)
        assert gateway.spool.read_data(msg_id).endswith(MESSAGE + content)
    else:
        assert reply == replies.LINE_TOO_LONG
        assert gateway.spool.ids() == []


@pytest.mark.parametrize(
    "content",
    [
        b"just a body, no header section\r\n",
        b"\tfolded: would extend our Received field\r\n",
        b"From alice@sender.test Mon Jan  1 00:00:00 2024\r\nSubject: x\r\n\r\nbody\r\n",
    ],
)
def test_a_message_without_headers_keeps_its_body_a_body(
    gateway: RunningGateway, content: bytes
) -> None:
    with socket.create_connection((gateway.host, gateway.port), timeout=5) as sock:
        sock.sendall(ENVELOPE + content + b".\r\nQUIT\r\n")
        read_until_eof(sock)
    [msg_id] = gateway.spool.ids()
    stored = gateway.spool.read_data(msg_id)
    head, separator, body = stored.partition(b"\r\n\r\n")
    assert separator and body == content
    assert head.startswith(b"Authentication-Results: ")
    assert f" id {msg_id}".encode() in head


def test_a_message_with_headers_is_stamped_without_an_extra_line(gateway: RunningGateway) -> None:
    with socket.create_connection((gateway.host, gateway.port), timeout=5) as sock:
        sock.sendall(ENVELOPE + MESSAGE + b".\r\nQUIT\r\n")
        read_until_eof(sock)
    [msg_id] = gateway.spool.ids()
    assert gateway.spool.read_data(msg_id).partition(b"\r\n\r\n")[2] == b"body\r\n"


def test_control_characters_in_a_quoted_sender_are_refused(gateway: RunningGateway) -> None:
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        for sender in ('<"a\x01b"@ext.test>', '<"a\x7fb"@ext.test>', '<"a\x00b"@ext.test>'):
            assert client.command(f"MAIL FROM:{sender}") == replies.BAD_SENDER
        assert client.command('MAIL FROM:<"a b"@ext.test>') == replies.sender_ok()


def test_an_absurdly_long_size_is_too_big_not_an_internal_error(gateway: RunningGateway) -> None:
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        reply = client.command("MAIL FROM:<a@sender.test> SIZE=" + "9" * 5000)
        assert reply == replies.too_big(gateway.config.smtp.max_message_bytes)
        assert client.command("MAIL FROM:<a@sender.test>") == replies.sender_ok()


@pytest.mark.parametrize(
    "sender",
    [
        "a@outside.test>",  # no opening bracket: the ">" was taken into the domain
        "<a@outside.te:st>",
        "<a@outside..test>",
        "<a@b@outside.test>",
        "<a<b@outside.test>",
        "<a;b@outside.test>",
        "<a@outside.test)>",
        "<a@outside.test.>",
        "<a@x.test,y@z.test>",
    ],
)
def test_a_sender_the_internal_server_would_refuse_is_refused_at_mail_from(
    gateway: RunningGateway, sender: str
) -> None:
    # Accepted, such a message was refused by the internal server and its bounce to the
    # same path failed too: lost without anyone being told.
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        assert client.command(f"MAIL FROM:{sender}") == replies.BAD_SENDER
        assert client.command("MAIL FROM:<a%b!c@[192.0.2.1]>") == replies.sender_ok()
