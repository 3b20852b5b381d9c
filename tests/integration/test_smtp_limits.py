"""Every [smtp] limit, enforced against a real client over loopback."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.model import Transaction
from gateway.pipeline import engine
from gateway.smtp import replies
from tests.support.gateway_fixture import GatewayFactory, RunningGateway
from tests.support.smtp_client import RawSmtp

MESSAGE = b"From: a@sender.test\r\nTo: bob@example.test\r\nSubject: x\r\n\r\nbody\r\n"


def log_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.transaction"]


def open_transaction(client: RawSmtp) -> None:
    client.greet()
    assert client.command("MAIL FROM:<a@sender.test>") == replies.sender_ok()
    assert client.command("RCPT TO:<bob@example.test>") == replies.recipient_ok()


def test_ehlo_advertises_the_extensions(gateway: RunningGateway) -> None:
    with RawSmtp(gateway.host, gateway.port) as client:
        lines = client.greet().split("\n")
    assert lines[0] == "250-mx.gateway.test"
    keywords = [line[4:] for line in lines[1:]]
    size = gateway.config.smtp.max_message_bytes
    assert keywords == [
        f"SIZE {size}",
        "8BITMIME",
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
        "DSN",
        "SMTPUTF8",
    ]  # no STARTTLS without a certificate
    assert lines[-1].startswith("250 ")


def test_message_too_big_is_refused_and_the_session_stays_in_step(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory({"smtp": {"max_message_bytes": 2000}})
    with RawSmtp(gateway.host, gateway.port) as client:
        open_transaction(client)
        assert client.command("DATA") == replies.START_MAIL
        client.send(MESSAGE + (b"x" * 70 + b"\r\n") * 40 + b".\r\n")
        assert client.reply() == replies.too_big(2000)
        assert client.command("NOOP") == replies.NOOP
        assert client.pending() == b""
    assert gateway.spool.ids() == []


def test_declared_size_too_big_is_refused_at_mail(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory({"smtp": {"max_message_bytes": 2000}})
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        assert client.command("MAIL FROM:<a@sender.test> SIZE=2001") == replies.too_big(2000)
        assert client.command("MAIL FROM:<a@sender.test> SIZE=2000") == replies.sender_ok()


def test_long_command_line_is_refused(gateway: RunningGateway) -> None:
    limit = gateway.config.smtp.max_line_bytes
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        assert client.command("NOOP " + "x" * limit) == replies.LINE_TOO_LONG
        # Longer than the stream buffer too: still consumed up to the LF.
        assert client.command("NOOP " + "x" * (3 * limit)) == replies.LINE_TOO_LONG
        assert client.command("NOOP " + "x" * (limit - 7)) == replies.NOOP  # exactly the limit


def test_long_data_line_is_refused_after_the_end_of_data(gateway: RunningGateway) -> None:
    limit = gateway.config.smtp.max_line_bytes
    with RawSmtp(gateway.host, gateway.port) as client:
        open_transaction(client)
        assert client.command("DATA") == replies.START_MAIL
        client.send(MESSAGE + b"y" * (3 * limit) + b"\r\n.\r\n")
        assert client.reply() == replies.LINE_TOO_LONG
        assert client.command("NOOP") == replies.NOOP
        assert client.pending() == b""
    assert gateway.spool.ids() == []


def test_recipient_limit(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory({"smtp": {"max_recipients": 2}})
    with RawSmtp(gateway.host, gateway.port) as client:
        open_transaction(client)
        assert client.command("RCPT TO:<carol@example.test>") == replies.recipient_ok()
        assert client.command("RCPT TO:<dave@example.test>") == replies.TOO_MANY_RECIPIENTS


def test_recipients_past_the_overshoot_limit_count_as_bad_commands(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Each RCPT over the limit got a 452 for ever: 400,000 of them in one session grew the
    # memory and made one 30 MB log line. Past the overshoot each is an error, and the log
    # line lists a bounded number of refusals.
    caplog.set_level(logging.INFO, logger="gateway.transaction")
    limits = {"max_recipients": 2, "max_recipient_overshoot": 150, "max_bad_commands": 3}
    gateway = gateway_factory({"smtp": limits})
    with RawSmtp(gateway.host, gateway.port) as client:
        open_transaction(client)
        assert client.command("RCPT TO:<carol@example.test>") == replies.recipient_ok()
        for number in range(150 + 3):  # the overshoot, then as many bad commands as allowed
            reply = client.command(f"RCPT TO:<u{number}@example.test>")
            assert reply == replies.TOO_MANY_RECIPIENTS, number
        assert client.command("RCPT TO:<last@example.test>") == replies.TOO_MANY_ERRORS
    deadline = time.monotonic() + 5
    while not log_lines(caplog) and time.monotonic() < deadline:
        time.sleep(0.01)
    [line] = log_lines(caplog)
    assert len(line["refused_recipients"]) == 100
    assert line["refused_recipients_omitted"] == 150 + 3 + 1 - 100


def test_total_connection_limit(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory({"smtp": {"max_connections": 2}})
    with RawSmtp(gateway.host, gateway.port) as one, RawSmtp(gateway.host, gateway.port) as two:
        assert one.reply().startswith("220 ")
        assert two.reply().startswith("220 ")
        with RawSmtp(gateway.host, gateway.port, source_ip="127.0.0.2") as three:
            assert three.reply() == replies.TOO_MANY_CONNECTIONS
            assert three.closed_by_server()
    # Both sessions ended: there is room again.
    deadline = time.monotonic() + 5
    while (
        gateway.front_end is not None
        and gateway.front_end.limiter.active
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    with RawSmtp(gateway.host, gateway.port) as again:
        assert again.reply().startswith("220 ")


def test_per_ip_connection_limit(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.transaction")
    gateway = gateway_factory({"smtp": {"max_connections_per_ip": 1}})
    with RawSmtp(gateway.host, gateway.port) as one:
        assert one.reply().startswith("220 ")
        with RawSmtp(gateway.host, gateway.port) as two:
            assert two.reply() == replies.TOO_MANY_CONNECTIONS_FROM_IP
            assert two.closed_by_server()
        with RawSmtp(gateway.host, gateway.port, source_ip="127.0.0.2") as other_ip:
            assert other_ip.reply().startswith("220 ")
    [refusal] = log_lines(caplog)
    assert (refusal["outcome"], refusal["reply"]) == (
        "tempfail",
        replies.TOO_MANY_CONNECTIONS_FROM_IP,
    )


def test_idle_timeout(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory({"smtp": {"idle_timeout_s": 0.3}})
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        started = time.monotonic()
        assert client.reply() == replies.IDLE_TIMEOUT
        assert 0.2 < time.monotonic() - started < 2.0
        assert client.closed_by_server()


def test_idle_timeout_inside_data(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.transaction")
    gateway = gateway_factory({"smtp": {"idle_timeout_s": 0.3}})
    with RawSmtp(gateway.host, gateway.port) as client:
        open_transaction(client)
        assert client.command("DATA") == replies.START_MAIL
        client.send(b"Subject: half a message\r\n")
        assert client.reply() == replies.IDLE_TIMEOUT
        assert client.closed_by_server()
    assert gateway.spool.ids() == []
    [line] = log_lines(caplog)
    assert (line["outcome"], line["reply"]) == ("abandoned", replies.IDLE_TIMEOUT)


def drip(client: RawSmtp, piece: bytes) -> str:
    """Send `piece` every 0.25 s until the server answers (10 s at most); its answer."""
    answer = b""
    for _ in range(40):
        try:
            client.send(piece)
        except OSError:
            break
        answer = client.pending(0.25)
        if answer:
            break
    return answer.decode().rstrip("\r\n")


def test_data_dripping_slower_than_min_data_rate_is_cut_off(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Each line comes well within the idle timeout, but the message as a whole at 400 B/s:
    # DATA may take idle_timeout_s (1 s) plus size / min_data_rate (1000 B/s), about 1.7 s.
    caplog.set_level(logging.INFO, logger="gateway.transaction")
    gateway = gateway_factory({"smtp": {"idle_timeout_s": 1.0, "min_data_rate": 1000}})
    with RawSmtp(gateway.host, gateway.port) as client:
        open_transaction(client)
        assert client.command("DATA") == replies.START_MAIL
        started = time.monotonic()
        assert drip(client, b"x" * 98 + b"\r\n") == replies.DATA_TOO_SLOW
        assert 1.3 < time.monotonic() - started < 4.0
    [line] = log_lines(caplog)
    assert (line["outcome"], line["reply"]) == ("abandoned", replies.DATA_TOO_SLOW)
    # The same limits let a message through that comes at the speed of any real client.
    with RawSmtp(gateway.host, gateway.port) as client:
        open_transaction(client)
        assert client.command("DATA") == replies.START_MAIL
        client.send(MESSAGE + (b"y" * 98 + b"\r\n") * 5000 + b".\r\n")  # 500 KB
        assert client.reply().startswith("250 ")


def test_the_data_rate_counts_bytes_as_they_came(gateway_factory: GatewayFactory) -> None:
    # With bare_lf = "normalize" each bare LF is stored as CRLF: counted as stored, 400 B/s
    # of them passed for 800 B/s, over a min_data_rate of 600.
    smtp = {"idle_timeout_s": 1.0, "min_data_rate": 600, "bare_lf": "normalize"}
    gateway = gateway_factory({"smtp": smtp})
    with RawSmtp(gateway.host, gateway.port) as client:
        open_transaction(client)
        assert client.command("DATA") == replies.START_MAIL
        assert drip(client, b"\n" * 100) == replies.DATA_TOO_SLOW


def test_session_timeout(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory({"smtp": {"session_timeout_s": 0.5, "idle_timeout_s": 5.0}})
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        started = time.monotonic()
        reply = replies.NOOP
        while reply == replies.NOOP and time.monotonic() - started < 3:
            time.sleep(0.05)
            reply = client.command("NOOP")
        assert reply == replies.SESSION_TIMEOUT
        assert 0.4 < time.monotonic() - started < 2.0
        assert client.closed_by_server()


def test_too_many_bad_commands(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory({"smtp": {"max_bad_commands": 4}})
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        assert client.command("BOGUS") == replies.UNKNOWN_COMMAND
        assert client.command("RCPT TO:<bob@example.test>") == replies.NEED_MAIL
        assert client.command("DATA") == replies.NEED_MAIL
        assert client.command("NOOP") == replies.NOOP  # good commands do not reset the count
        assert client.command("MAIL FROM:<bad address>") == replies.BAD_SENDER
        assert client.command("EXPN staff") == replies.TOO_MANY_ERRORS
        assert client.closed_by_server()


@contextlib.contextmanager
def memory_nearly_full(gateway_factory: GatewayFactory, **smtp: Any) -> Iterator[RawSmtp]:
    """A client of a gateway whose 60 KB of message memory another session, still in DATA,
    holds 50 KB of: a MAIL with SIZE=20000 gets 452."""
    limits = {"max_message_bytes": 60_000, "max_inflight_bytes": 60_000}
    gateway = gateway_factory({"smtp": {**limits, "max_inflight_bytes_per_ip": 60_000, **smtp}})
    with (
        RawSmtp(gateway.host, gateway.port) as first,
        RawSmtp(gateway.host, gateway.port) as client,
    ):
        open_transaction(first)
        assert first.command("DATA") == replies.START_MAIL
        first.send(MESSAGE + (b"x" * 98 + b"\r\n") * 500)  # 50 KB held
        wait_until_held(gateway, 50_000)
        yield client


def test_pipelined_commands_behind_a_refused_mail_are_not_bad_commands(
    gateway_factory: GatewayFactory,
) -> None:
    # MAIL deferred (452: not enough memory free for its SIZE), and the client has already
    # sent its 15 RCPTs and DATA: their 503s are the deferral's, not the client's errors.
    with memory_nearly_full(gateway_factory, max_bad_commands=3) as client:
        client.greet()
        rcpts = b"".join(b"RCPT TO:<user%d@example.test>\r\n" % n for n in range(15))
        client.send(b"MAIL FROM:<a@sender.test> SIZE=20000\r\n" + rcpts + b"DATA\r\n")
        assert client.reply() == replies.NO_STORAGE
        assert [client.reply() for _ in range(16)] == [replies.NEED_MAIL] * 16
        assert client.command("NOOP") == replies.NOOP
        # A refused recipient excuses the DATA behind it too.
        client.send(b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\n")
        assert client.reply() == replies.sender_ok()
        assert client.reply().startswith("550 5.7.1")  # relaying denied: one bad command
        assert client.reply() == replies.NEED_RCPT
        assert client.command("RSET") == replies.RESET
        # Once MAIL succeeded or the client reset, a stray RCPT is its own error again: with
        # the deferred MAIL and the refused recipient, the third error of three.
        assert client.command("RCPT TO:<bob@example.test>") == replies.NEED_MAIL
        assert client.command("DATA") == replies.TOO_MANY_ERRORS


def test_a_sender_deferred_again_and_again_is_hung_up_on(gateway_factory: GatewayFactory) -> None:
    # 452 at MAIL (no memory free for its SIZE) did not count: a client retrying at once
    # could go on for the whole session timeout.
    with memory_nearly_full(gateway_factory, max_bad_commands=2) as client:
        client.greet()
        for _ in range(2):
            assert client.command("MAIL FROM:<a@sender.test> SIZE=20000") == replies.NO_STORAGE
        assert client.command("MAIL FROM:<a@sender.test> SIZE=20000") == replies.TOO_MANY_ERRORS


def test_a_nested_mail_excuses_nothing(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory({"smtp": {"max_bad_commands": 1}})
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        assert client.command("MAIL FROM:<a@sender.test>") == replies.sender_ok()
        assert client.command("MAIL FROM:<a@sender.test>") == replies.NESTED_MAIL
        assert client.command("DATA") == replies.TOO_MANY_ERRORS  # NEED_RCPT, counted


def test_junk_commands_past_the_limit_count_as_bad_commands(
    gateway_factory: GatewayFactory,
) -> None:
    # NOOP, RSET, VRFY and HELP move no mail; unlimited, they kept a session for ever.
    gateway = gateway_factory({"smtp": {"max_junk_commands": 5, "max_bad_commands": 2}})
    with RawSmtp(gateway.host, gateway.port) as client:
        open_transaction(client)
        assert client.command("DATA") == replies.START_MAIL
        client.send(MESSAGE + b".\r\n")
        assert client.reply().startswith("250 ")
        for command in ("NOOP", "RSET", "HELP", "VRFY x", "NOOP"):  # five are free
            assert not client.command(command).startswith("421")
        # A message taken starts the count again.
        assert client.command("MAIL FROM:<a@sender.test>") == replies.sender_ok()
        assert client.command("RCPT TO:<bob@example.test>") == replies.recipient_ok()
        assert client.command("DATA") == replies.START_MAIL
        client.send(MESSAGE + b".\r\n")
        assert client.reply().startswith("250 ")
        for _ in range(5 + 2):
            assert client.command("NOOP") == replies.NOOP  # 5 free, then 2 bad ones
        assert client.command("NOOP") == replies.TOO_MANY_ERRORS
        assert client.closed_by_server()


def test_refused_messages_are_not_bad_commands(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory({"smtp": {"max_bad_commands": 1}})
    gtube = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        for _ in range(3):
            client.command("MAIL FROM:<a@sender.test>")
            client.command("RCPT TO:<bob@example.test>")
            client.command("DATA")
            client.send(MESSAGE + gtube + b".\r\n")
            assert client.reply().startswith("554 5.7.1 ")
        assert client.command("NOOP") == replies.NOOP


def wait_until_held(gateway: RunningGateway, at_least: int) -> None:
    assert gateway.front_end is not None
    memory = gateway.front_end.message_memory
    deadline = time.monotonic() + 5
    while memory.held_bytes < at_least and time.monotonic() < deadline:
        time.sleep(0.01)
    assert memory.held_bytes >= at_least


def test_message_memory_of_all_sessions_is_bounded_and_a_message_past_it_is_deferred(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Each session may send max_message_bytes, but all of them together may not hold more
    # than max_inflight_bytes: past it a message gets 452 (retried later), never a crash.
    caplog.set_level(logging.INFO, logger="gateway.transaction")
    limits = {"max_message_bytes": 60_000, "max_inflight_bytes": 100_000}
    gateway = gateway_factory({"smtp": {**limits, "max_inflight_bytes_per_ip": 100_000}})
    body = (b"x" * 98 + b"\r\n") * 500  # 50,000 bytes
    with (
        RawSmtp(gateway.host, gateway.port) as first,
        RawSmtp(gateway.host, gateway.port) as second,
    ):
        open_transaction(first)
        assert first.command("DATA") == replies.START_MAIL
        first.send(MESSAGE + body)  # still in DATA: its 50 KB are held
        wait_until_held(gateway, 50_000)

        open_transaction(second)
        assert second.command("DATA") == replies.START_MAIL
        second.send(MESSAGE + body + b".\r\n")
        assert second.reply() == replies.NO_STORAGE
        assert second.command("NOOP") == replies.NOOP  # in step after it
        # A declared size that does not fit now is deferred at once.
        assert second.command("MAIL FROM:<a@sender.test> SIZE=55000") == replies.NO_STORAGE

        first.send(b".\r\n")
        assert first.reply().startswith("250 ")
        # The first message's memory is given back with its reply: the retry fits.
        assert second.command("MAIL FROM:<a@sender.test> SIZE=55000") == replies.sender_ok()
        assert second.command("RCPT TO:<bob@example.test>") == replies.recipient_ok()
        assert second.command("DATA") == replies.START_MAIL
        second.send(MESSAGE + body + b".\r\n")
        assert second.reply().startswith("250 ")
    assert gateway.front_end is not None
    assert gateway.front_end.message_memory.held_bytes == 0
    assert len(gateway.spool.ids()) == 2
    outcomes = [(line["outcome"], line.get("reason")) for line in log_lines(caplog)]
    # Both deferrals are logged: at the end of DATA and at MAIL (its SIZE did not fit).
    assert outcomes.count(("tempfail", "too much mail in progress")) == 2


def test_message_memory_is_given_back_when_the_client_vanishes_in_data(
    gateway_factory: GatewayFactory,
) -> None:
    limits = {"max_message_bytes": 60_000, "max_inflight_bytes": 60_000}
    gateway = gateway_factory({"smtp": {**limits, "max_inflight_bytes_per_ip": 60_000}})
    with RawSmtp(gateway.host, gateway.port) as client:
        open_transaction(client)
        assert client.command("DATA") == replies.START_MAIL
        client.send(MESSAGE + (b"y" * 98 + b"\r\n") * 500)
        wait_until_held(gateway, 50_000)
    assert gateway.front_end is not None
    memory = gateway.front_end.message_memory
    deadline = time.monotonic() + 5
    while memory.held_bytes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert memory.held_bytes == 0
    with RawSmtp(gateway.host, gateway.port) as client:
        open_transaction(client)
        assert client.command("DATA") == replies.START_MAIL
        client.send(MESSAGE + (b"z" * 98 + b"\r\n") * 500 + b".\r\n")
        assert client.reply().startswith("250 ")


def test_message_memory_stays_counted_while_a_thread_still_checks_a_vanished_clients_message(
    gateway_factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A thread cannot be cancelled: the parse of a message whose client has gone on goes on
    # reading it, so its memory must stay counted until the thread is done.
    parsing, go_on = threading.Event(), threading.Event()
    real_parse = engine._parse_and_decode

    def gated_parse(tx: Transaction) -> None:
        parsing.set()
        go_on.wait(10)
        real_parse(tx)

    monkeypatch.setattr(engine, "_parse_and_decode", gated_parse)
    limits = {"max_message_bytes": 200_000, "max_inflight_bytes": 200_000}
    gateway = gateway_factory({"smtp": {**limits, "max_inflight_bytes_per_ip": 200_000}})
    assert gateway.front_end is not None
    memory, sessions = gateway.front_end.message_memory, gateway.front_end.limiter
    try:
        with RawSmtp(gateway.host, gateway.port) as client:
            open_transaction(client)
            assert client.command("DATA") == replies.START_MAIL
            client.send(MESSAGE + (b"p" * 98 + b"\r\n") * 1000 + b".\r\n")  # 100 KB: a thread
            assert parsing.wait(5)
            client.abort()
        deadline = time.monotonic() + 5
        while sessions.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sessions.active == 0  # the session has ended ...
        assert memory.held_bytes >= 100_000  # ... but the parse still holds the message
    finally:
        go_on.set()
    deadline = time.monotonic() + 5
    while memory.held_bytes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert memory.held_bytes == 0
    assert gateway.spool.ids() == []


def test_one_client_ip_cannot_take_all_the_message_memory(gateway_factory: GatewayFactory) -> None:
    limits = {"max_message_bytes": 60_000, "max_inflight_bytes_per_ip": 100_000}
    gateway = gateway_factory({"smtp": {**limits, "max_inflight_bytes": 200_000}})
    body = (b"x" * 98 + b"\r\n") * 500  # 50,000 bytes
    with (
        RawSmtp(gateway.host, gateway.port, "127.0.0.1") as first,
        RawSmtp(gateway.host, gateway.port, "127.0.0.1") as same_ip,
        RawSmtp(gateway.host, gateway.port, "127.0.0.2") as other_ip,
    ):
        open_transaction(first)
        assert first.command("DATA") == replies.START_MAIL
        first.send(MESSAGE + body)
        wait_until_held(gateway, 50_000)
        for client, code in ((same_ip, "452 4.3.1 "), (other_ip, "250 ")):
            open_transaction(client)
            assert client.command("DATA") == replies.START_MAIL
            client.send(MESSAGE + body + b".\r\n")
            assert client.reply().startswith(code)
        first.send(b".\r\n")
        assert first.reply().startswith("250 ")
    assert len(gateway.spool.ids()) == 2


def test_a_message_with_too_many_received_fields_is_refused_as_a_mail_loop(
    gateway_factory: GatewayFactory,
) -> None:
    # An internal server forwarding back to its MX: each round adds Received fields.
    gateway = gateway_factory({"smtp": {"max_received_headers": 3}})
    hop = (
        b"Received: from mx.example.test by inside.example.test; Tue, 1 Dec 2026 10:00:00 +0000\r\n"
    )
    folded = b"RECEIVED : from a\r\n\tby b; Tue, 1 Dec 2026 10:00:00 +0000\r\n"
    not_hops = b"X-Received: by c\r\nSubject: Received: d\r\n"
    body = b"\r\nReceived: in the body does not count\r\n"
    for headers, reply in (
        (hop * 2 + folded + not_hops, "250 "),
        (hop * 3 + folded, replies.too_many_hops(4, 3)),
    ):
        with RawSmtp(gateway.host, gateway.port) as client:
            open_transaction(client)
            assert client.command("DATA") == replies.START_MAIL
            client.send(headers + MESSAGE.replace(b"\r\n\r\n", b"\r\n" + body) + b".\r\n")
            assert client.reply().startswith(reply)
    assert len(gateway.spool.ids()) == 1


def test_under_stress_idle_sessions_get_the_short_timeout(gateway_factory: GatewayFactory) -> None:
    # A slowloris holding every slot: with most sessions taken, each read waits only
    # stress_idle_timeout_s (Postfix's ${stress?10}{300}); below that, idle_timeout_s.
    stress = {"max_connections": 4, "stress_at": 0.5, "stress_idle_timeout_s": 0.3}
    gateway = gateway_factory({"smtp": {**stress, "idle_timeout_s": 30.0}})
    with RawSmtp(gateway.host, gateway.port) as calm:
        calm.greet()
        assert calm.pending(wait_s=0.8) == b""  # one session of four: not under stress
        with RawSmtp(gateway.host, gateway.port) as second:
            second.greet()
            started = time.monotonic()
            assert second.reply() == replies.IDLE_TIMEOUT
            assert time.monotonic() - started < 3.0
        # Its wait began before the stress, and is cut short too: a slowloris that opened its
        # connections first kept every one of them for the whole idle timeout.
        assert calm.reply() == replies.IDLE_TIMEOUT
