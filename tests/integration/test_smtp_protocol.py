"""Protocol behaviour over loopback: relay gate, sequence, pipelining, failures, stop()."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import shutil
import time
from typing import Any

import pytest

from gateway.model import Phase
from gateway.smtp import replies
from tests.support.gateway_fixture import GatewayFactory, RunningGateway
from tests.support.smtp_client import RawSmtp

MESSAGE = b"From: a@sender.test\r\nTo: bob@example.test\r\nSubject: x\r\n\r\nbody\r\n"
GATE_TRICKS = [
    "<bob@elsewhere.test>",
    "<bob%elsewhere.test@example.test>",
    "<elsewhere.test!bob@example.test>",
    "<@example.test,@relay.test:bob@elsewhere.test>",
    "<@relay.test:bob@example.test>",
    '<"bob@elsewhere.test"@example.test>',
    '<"bob%elsewhere.test"@example.test>',
    "<bob@[127.0.0.1]>",
    "<bob@example.test.>",
    "<bob@>",
    "<bob@elsewhere.test@example.test>",
    "<postmaster.example.test>",
    "<>",
]


@pytest.mark.parametrize("path", GATE_TRICKS)
def test_relay_gate_refuses_tricks_over_smtp(gateway_factory: GatewayFactory, path: str) -> None:
    gateway = gateway_factory({"smtp": {"max_bad_commands": 50}})
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        client.command("MAIL FROM:<a@sender.test>")
        reply = client.command(f"RCPT TO:{path}")
        assert reply.startswith("550 5.7.1 Relay access denied: ")
        assert client.command("RCPT TO:<BOB@Example.Test>") == replies.recipient_ok()


def test_commands_out_of_sequence(gateway: RunningGateway) -> None:
    with RawSmtp(gateway.host, gateway.port) as client:
        assert client.reply().startswith("220 mx.gateway.test ")
        assert client.command("MAIL FROM:<a@sender.test>") == replies.NEED_HELO
        client.command("EHLO client.test")
        assert client.command("RCPT TO:<bob@example.test>") == replies.NEED_MAIL
        assert client.command("DATA") == replies.NEED_MAIL
        assert client.command("MAIL FROM:<>") == replies.sender_ok()  # bounces are welcome
        assert client.command("MAIL FROM:<a@sender.test>") == replies.NESTED_MAIL
        assert client.command("DATA") == replies.NEED_RCPT
        assert client.command("RSET") == replies.RESET
        assert client.command("MAIL FROM:<a@sender.test> FOO=1") == replies.UNKNOWN_PARAMETER
        # Given twice, the last one won: NOTIFY=NEVER NOTIFY=SUCCESS passed NEVER's rule.
        twice = "MAIL FROM:<a@sender.test> RET=FULL ret=HDRS"
        assert client.command(twice) == replies.DUPLICATE_PARAMETER
        assert client.command("MAIL FROM:<a@sender.test>") == replies.sender_ok()
        twice = "RCPT TO:<bob@example.test> NOTIFY=NEVER NOTIFY=SUCCESS"
        assert client.command(twice) == replies.DUPLICATE_PARAMETER
        assert client.command("RSET") == replies.RESET
        assert client.command("STARTTLS") == replies.NOT_IMPLEMENTED
        assert client.command("QUIT") == replies.CLOSING
        assert client.closed_by_server()


def test_pipelined_transaction(gateway: RunningGateway) -> None:
    with RawSmtp(gateway.host, gateway.port) as client:
        client.reply()
        client.send(
            b"EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\n"
            b"RCPT TO:<bob@example.test>\r\nRCPT TO:<eve@elsewhere.test>\r\nDATA\r\n"
        )
        assert client.reply().endswith("250 SMTPUTF8")
        assert client.reply() == replies.sender_ok()
        assert client.reply() == replies.recipient_ok()
        assert client.reply().startswith("550 5.7.1 ")
        assert client.reply() == replies.START_MAIL
        client.send(MESSAGE + b".\r\nQUIT\r\n")
        assert client.reply().startswith("250 2.0.0 Ok: queued as ")
        assert client.reply() == replies.CLOSING
    [msg_id] = gateway.spool.ids()
    assert [r.address for r in gateway.spool.load(msg_id).recipients] == ["bob@example.test"]


def test_rset_starts_a_new_transaction(gateway: RunningGateway) -> None:
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        for _ in range(2):
            client.command("MAIL FROM:<a@sender.test>")
            client.command("RCPT TO:<bob@example.test>")
            client.command("DATA")
            client.send(MESSAGE + b".\r\n")
            assert client.reply().startswith("250 ")
            client.command("RSET")
    assert len(set(gateway.spool.ids())) == 2


@pytest.mark.parametrize("broken", [Phase.HELO, Phase.MAIL, Phase.RCPT, Phase.DATA])
def test_exception_in_a_phase_becomes_451_with_the_transaction_id(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture, broken: Phase
) -> None:
    assert gateway.front_end is not None
    pipeline = gateway.front_end.handler.pipeline
    real_run_phase = pipeline.run_phase

    async def failing(phase: Phase, tx: Any, final: bool = False) -> Any:
        if phase is broken:
            raise RuntimeError("secret internal detail")
        return await real_run_phase(phase, tx, final)

    pipeline.run_phase = failing  # type: ignore[method-assign]
    steps = ["EHLO client.test", "MAIL FROM:<a@sender.test>", "RCPT TO:<bob@example.test>", "DATA"]
    with RawSmtp(gateway.host, gateway.port) as client:
        client.reply()
        for step in steps[: broken - 1]:
            reply = client.command(step)
        if broken is Phase.DATA:
            client.send(MESSAGE + b".\r\n")
            reply = client.reply()
        tx_id = reply.rpartition(" ")[2]
        assert reply == replies.internal_error(tx_id)
        assert client.command("NOOP") == replies.NOOP
    assert any("secret internal detail" in r.exc_text for r in caplog.records if r.exc_text)
    assert gateway.spool.ids() == []


def test_full_spool_is_a_temporary_failure(gateway: RunningGateway) -> None:
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        client.command("MAIL FROM:<a@sender.test>")
        client.command("RCPT TO:<bob@example.test>")
        gateway.spool.min_free_bytes = 2**62  # the disk "fills up" during the transaction
        client.command("DATA")
        client.send(MESSAGE + b".\r\n")
        assert client.reply() == replies.NO_STORAGE
        assert client.command("MAIL FROM:<a@sender.test>") == replies.NO_STORAGE
    assert gateway.spool.ids() == []
    assert gateway.recorder.notified == []


def test_broken_spool_is_451_and_nothing_is_announced(gateway: RunningGateway) -> None:
    shutil.rmtree(gateway.spool.active_dir)
    gateway.spool.active_dir.write_text("not a directory")
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        client.command("MAIL FROM:<a@sender.test>")
        client.command("RCPT TO:<bob@example.test>")
        client.command("DATA")
        client.send(MESSAGE + b".\r\n")
        reply = client.reply()
        assert reply == replies.storage_error(reply.rpartition(" ")[2])
    assert gateway.recorder.notified == []


def test_stop_lets_a_message_in_data_finish_and_closes_idle_sessions(
    gateway: RunningGateway,
) -> None:
    assert gateway.front_end is not None
    front_end = gateway.front_end
    with (
        RawSmtp(gateway.host, gateway.port) as idle,
        RawSmtp(gateway.host, gateway.port) as sending,
    ):
        idle.greet()
        sending.greet()
        sending.command("MAIL FROM:<a@sender.test>")
        sending.command("RCPT TO:<bob@example.test>")
        assert sending.command("DATA") == replies.START_MAIL
        sending.send(b"Subject: half\r\n")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            stopping = pool.submit(gateway.call, lambda: front_end.stop(drain_timeout_s=5.0))
            assert idle.reply() == replies.SHUTTING_DOWN
            assert idle.closed_by_server()
            sending.send(b"\r\nbody\r\n.\r\n")
            assert sending.reply().startswith("250 2.0.0 Ok: queued as ")
            assert sending.reply() == replies.SHUTTING_DOWN
            assert sending.closed_by_server()
            stopping.result(10)
    assert len(gateway.spool.ids()) == 1


def test_smtputf8_and_8bit_mail_pass_unchanged(gateway: RunningGateway) -> None:
    body = "Subject: héllo\r\n\r\nçà va\r\n".encode()
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        assert client.command("MAIL FROM:<ålice@sender.test>") == (
            replies.NON_ASCII_WITHOUT_SMTPUTF8
        )
        assert client.command("MAIL FROM:<ålice@sender.test> SMTPUTF8 BODY=8BITMIME") == (
            replies.sender_ok()
        )
        assert client.command("RCPT TO:<bøb@example.test>") == replies.recipient_ok()
        assert client.command("DATA") == replies.START_MAIL
        client.send(body + b".\r\n")
        assert client.reply().startswith("250 2.0.0 Ok: queued as ")
    [msg_id] = gateway.spool.ids()
    entry = gateway.spool.load(msg_id)
    assert (entry.mail_from, entry.recipients[0].address) == (
        "ålice@sender.test",
        "bøb@example.test",
    )
    stored = gateway.spool.read_data(msg_id)
    assert stored.endswith(body)
    assert f" with UTF8SMTP id {msg_id}\r\n\tfor <bøb@example.test>; ".encode() in stored


def test_binary_helo_and_sender_are_refused(gateway: RunningGateway) -> None:
    with RawSmtp(gateway.host, gateway.port) as client:
        client.reply()
        client.send(b"EHLO bad\xffname\r\n")
        assert client.reply() == replies.syntax("EHLO hostname")
        client.command("EHLO client.test")
        client.send(b"MAIL FROM:<a\xff@sender.test> SMTPUTF8\r\n")
        assert client.reply() == replies.BAD_SENDER


def test_client_vanishing_in_data_loses_nothing_accepted(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.transaction")
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        client.command("MAIL FROM:<a@sender.test>")
        client.command("RCPT TO:<bob@example.test>")
        client.command("DATA")
        client.send(MESSAGE)

    def transaction_lines() -> list[dict[str, Any]]:
        records = caplog.records
        return [json.loads(r.getMessage()) for r in records if r.name == "gateway.transaction"]

    deadline = time.monotonic() + 5
    while not transaction_lines() and time.monotonic() < deadline:
        time.sleep(0.01)
    [line] = transaction_lines()
    assert line["outcome"] == "abandoned"
    assert gateway.spool.ids() == []
    with gateway.client() as smtp:  # the front end is unharmed
        assert smtp.noop()[0] == 250


def test_bare_postmaster_is_accepted_for_our_first_domain(gateway: RunningGateway) -> None:
    with RawSmtp(gateway.host, gateway.port) as client:
        client.greet()
        client.command("MAIL FROM:<a@sender.test>")
        assert client.command("RCPT TO:<Postmaster>") == replies.recipient_ok()
        client.command("DATA")
        client.send(MESSAGE + b".\r\n")
        assert client.reply().startswith("250 ")
    [msg_id] = gateway.spool.ids()
    assert gateway.spool.load(msg_id).recipients[0].address == "postmaster@example.test"
