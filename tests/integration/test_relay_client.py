"""The relay's SMTP client: pipelining, plain servers, dot-stuffing, and internal servers that
misbehave (a scripted raw server on loopback answers what each test needs)."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import pytest

from gateway.config import RelayConfig
from gateway.queue.relay import DsnParameters, RelayConnection
from gateway.queue.retry import RecipientOutcome
from tests.support.downstream import Downstream, make_self_signed_cert

STUFFED = b"Subject: dots\r\n\r\n.\r\n..two\r\n.three\r\nlast line without a dot\r\n"

SCRIPT_FINISH_S = 5.0
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def relay_config(port: int, timeout_s: float = 5.0) -> RelayConfig:
    return RelayConfig(port=port, domains=("example.test",), tls="none", timeout_s=timeout_s)


async def with_script(script: Script, use: Callable[[int], Awaitable[None]]) -> list[bytes]:
    """Run `use(port)` against a raw server running `script` per connection; what it read.
    A failed assertion inside the script fails the test (a server task's exception would
    otherwise only be logged)."""
    received: list[bytes] = []
    sessions: set[asyncio.Task[None]] = set()
    failures: list[Exception] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        sessions.add(task)
        recording = _Recording(reader, received)
        try:
            await script(recording, writer)  # type: ignore[arg-type]
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:
            failures.append(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    try:
        await asyncio.wait_for(use(server.sockets[0].getsockname()[1]), 20)
        if sessions:  # let each script finish what it checks after the client is done
            _, late = await asyncio.wait(sessions, timeout=SCRIPT_FINISH_S)
            for task in late:
                task.cancel()
    finally:
        server.close()
    if failures:
        raise failures[0]
    return received


class _Recording:
    def __init__(self, reader: asyncio.StreamReader, received: list[bytes]) -> None:
        self.reader, self.received = reader, received

    async def readline(self) -> bytes:
        """The next line; IncompleteReadError once the client has closed (ends the script)."""
        line = await asyncio.wait_for(self.reader.readline(), 5)
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        self.received.append(line)
        return line


async def greet(writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 internal.test ESMTP\r\n")
    await writer.drain()


async def ehlo(reader: _Recording, writer: asyncio.StreamWriter, *extensions: str) -> None:
    await reader.readline()
    lines = ["internal.test", *extensions, "HELP"]
    text = "".join(f"250-{line}\r\n" for line in lines[:-1]) + f"250 {lines[-1]}\r\n"
    writer.write(text.encode())
    await writer.drain()


async def plain_delivery(
    reader: _Recording, writer: asyncio.StreamWriter, recipients: int = 1
) -> None:
    """The rest of a pipelined session after EHLO: one message accepted, then QUIT."""
    for _ in range(recipients + 2):
        await reader.readline()
    writer.write(b"250 ok\r\n" * (recipients + 1) + b"354 go\r\n")
    while (await reader.readline()) != b".\r\n":
        pass
    writer.write(b"250 2.0.0 queued\r\n")
    await reader.readline()


def run(coro: Awaitable[object]) -> object:
    return asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


def test_with_pipelining_the_envelope_goes_out_before_any_reply() -> None:
    # This server answers nothing until it has MAIL, both RCPTs and DATA: a client waiting
    # for each reply would hang here until its timeout.
    async def script(reader: _Recording, writer: asyncio.StreamWriter) -> None:
        await greet(writer)
        await ehlo(reader, writer, "PIPELINING", "SIZE 1000000")
        commands = [await reader.readline() for _ in range(4)]
        assert commands[0].startswith(b"MAIL FROM:<a@example.org> SIZE=")
        assert commands[3] == b"DATA\r\n"
        writer.write(b"250 ok\r\n250 ok\r\n550 5.1.1 no such user\r\n354 go\r\n")
        while (await reader.readline()) != b".\r\n":
            pass
        writer.write(b"250 2.0.0 queued as X\r\n")
        await reader.readline()  # QUIT

    outcomes: list[RecipientOutcome] = []

    async def use(port: int) -> None:
        connection = RelayConnection(relay_config(port, timeout_s=2.0), "gw.test")
        outcomes.extend(
            await connection.send("a@example.org", ["b@example.test", "c@example.test"], STUFFED)
        )
        await connection.close()

    received = run(with_script(script, use))
    assert [o.kind for o in outcomes] == ["delivered", "permanent"]
    assert outcomes[0].reply == "250 2.0.0 queued as X"
    assert outcomes[1].reply == "550 5.1.1 no such user"
    assert b"..\r\n" in received and b"...two\r\n" in received  # type: ignore[operator]


def test_a_server_opening_data_without_recipients_gets_an_empty_message_ended() -> None:
    async def script(reader: _Recording, writer: asyncio.StreamWriter) -> None:
        await greet(writer)
        await ehlo(reader, writer, "PIPELINING")
        for _ in range(3):
            await reader.readline()
        writer.write(b"250 ok\r\n450 4.2.1 try later\r\n354 go ahead anyway\r\n")
        assert await reader.readline() == b".\r\n"  # not the message
        writer.write(b"554 5.5.1 no valid recipients\r\n")
        await reader.readline()

    outcomes: list[RecipientOutcome] = []

    async def use(port: int) -> None:
        connection = RelayConnection(relay_config(port), "gw.test")
        outcomes.extend(await connection.send("a@example.org", ["b@example.test"], STUFFED))
        await connection.close()

    run(with_script(script, use))
    assert [(o.kind, o.reply) for o in outcomes] == [("temporary", "450 4.2.1 try later")]


@pytest.mark.parametrize(
    "answer, expected",
    [
        (b"hello there\r\n", "not an SMTP reply"),
        (b"250-ok\r\n354 go\r\n", "reply lines with codes 250 and 354"),
        (b"250-more\r\n" * 200, "longer than 100 lines"),
        (b"250 " + b"x" * 10_000 + b"\r\n", "reading a reply"),
        (b"", "connection closed by the server"),
        (None, "reading a reply: TimeoutError"),
    ],
)
def test_a_misbehaving_internal_server_defers_the_message(
    answer: bytes | None, expected: str
) -> None:
    async def script(reader: _Recording, writer: asyncio.StreamWriter) -> None:
        await greet(writer)
        await ehlo(reader, writer, "PIPELINING")
        for _ in range(3):
            await reader.readline()
        if answer is None:
            await asyncio.sleep(2.5)  # longer than the client's timeout
            return
        writer.write(answer)
        await writer.drain()

    outcomes: list[RecipientOutcome] = []

    async def use(port: int) -> None:
        connection = RelayConnection(relay_config(port, timeout_s=1.0), "gw.test")
        outcomes.extend(await connection.send("a@example.org", ["b@example.test"], STUFFED))
        await connection.close()

    run(with_script(script, use))
    [outcome] = outcomes
    assert outcome.kind == "temporary" and expected in outcome.reply


def test_rset_after_a_refused_message_and_a_new_session_after_a_503_to_mail() -> None:
    # aiosmtpd keeps the envelope when its DATA handler fails: the next MAIL got "503 nested
    # MAIL" on the reused connection and that message bounced.
    connections: list[int] = []

    async def transaction(reader: _Recording, writer: asyncio.StreamWriter, final: bytes) -> None:
        for reply in (b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):
            await reader.readline()
            writer.write(reply)
            await writer.drain()
        while (await reader.readline()) != b".\r\n":
            pass
        writer.write(final)
        await writer.drain()

    async def script(reader: _Recording, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await greet(writer)
        await ehlo(reader, writer)
        if len(connections) == 1:
            await transaction(reader, writer, b"554 5.6.0 refused\r\n")
            assert await reader.readline() == b"RSET\r\n"
            writer.write(b"250 reset\r\n")
            await transaction(reader, writer, b"250 2.0.0 queued\r\n")
            assert (await reader.readline()).startswith(b"MAIL FROM:")
            writer.write(b"503 5.5.1 Error: nested MAIL command\r\n")
            await writer.drain()
            await reader.readline()  # the client gives up on this session
        else:
            await transaction(reader, writer, b"250 2.0.0 queued\r\n")
            await reader.readline()

    kinds: list[str] = []

    async def use(port: int) -> None:
        connection = RelayConnection(relay_config(port), "gw.test")
        for _ in range(3):
            sent = await connection.send("a@example.org", ["b@example.test"], STUFFED)
            kinds.extend(outcome.kind for outcome in sent)
        await connection.close()

    run(with_script(script, use))
    assert kinds == ["permanent", "delivered", "delivered"]
    assert len(connections) == 2


def test_a_refused_session_defers_every_recipient() -> None:
    # A 5xx greeting says nothing about the recipients: bouncing accepted mail because the
    # internal server is misconfigured or overloaded would lose it (Postfix skips such hosts).
    async def script(reader: _Recording, writer: asyncio.StreamWriter) -> None:
        writer.write(b"554 5.3.2 not accepting mail from you\r\n")
        await writer.drain()
        await reader.readline()

    outcomes: list[RecipientOutcome] = []

    async def use(port: int) -> None:
        connection = RelayConnection(relay_config(port), "gw.test")
        rcpts = ["b@example.test", "c@example.test"]
        outcomes.extend(await connection.send("a@x.test", rcpts, b""))

    run(with_script(script, use))
    assert [o.kind for o in outcomes] == ["temporary"] * 2
    assert outcomes[0].reply.endswith("refused the session: 554 5.3.2 not accepting mail from you")


@pytest.mark.parametrize("tls, delivered", [("opportunistic", True), ("required", False)])
def test_starttls_refused_with_454(
    tls: Literal["opportunistic", "required"], delivered: bool
) -> None:
    async def script(reader: _Recording, writer: asyncio.StreamWriter) -> None:
        await greet(writer)
        await ehlo(reader, writer, "PIPELINING", "STARTTLS")
        assert await reader.readline() == b"STARTTLS\r\n"
        writer.write(b"454 4.7.0 TLS not available due to local problem\r\n")
        await plain_delivery(reader, writer)

    outcomes: list[RecipientOutcome] = []

    async def use(port: int) -> None:
        config = dataclasses.replace(relay_config(port, timeout_s=1.0), tls=tls)
        connection = RelayConnection(config, "gw.test")
        outcomes.extend(await connection.send("a@x.test", ["b@example.test"], STUFFED))
        await connection.close()

    run(with_script(script, use))
    [outcome] = outcomes
    assert outcome.kind == ("delivered" if delivered else "temporary")


def test_a_failed_tls_handshake_falls_back_to_plain_text_when_opportunistic() -> None:
    connections = 0

    async def script(reader: _Recording, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await greet(writer)
        await ehlo(reader, writer, "PIPELINING", "STARTTLS")
        if connections == 1:
            assert await reader.readline() == b"STARTTLS\r\n"
            writer.write(b"220 go ahead\r\nthis is not a TLS server hello\r\n")
            await writer.drain()
            return  # and close
        await plain_delivery(reader, writer)

    outcomes: list[RecipientOutcome] = []

    async def use(port: int) -> None:
        config = dataclasses.replace(relay_config(port, timeout_s=2.0), tls="opportunistic")
        connection = RelayConnection(config, "gw.test")
        outcomes.extend(await connection.send("a@x.test", ["b@example.test"], STUFFED))
        await connection.close()

    received = run(with_script(script, use))
    assert [o.kind for o in outcomes] == ["delivered"] and connections == 2
    assert received.count(b"STARTTLS\r\n") == 1  # type: ignore[union-attr]


@pytest.mark.parametrize("pipelining", [True, False])
def test_real_server_with_and_without_pipelining(pipelining: bool) -> None:
    downstream = Downstream(pipelining=pipelining)
    downstream.start()
    try:
        downstream.fail_rcpt("550 5.1.1 unknown", rcpt="nobody@example.test")
        outcomes: list[list[RecipientOutcome]] = []

        async def use() -> None:
            connection = RelayConnection(relay_config(downstream.port), "gw.test")
            for rcpts in (["b@example.test", "nobody@example.test"], ["nobody@example.test"]):
                outcomes.append(await connection.send("a@example.org", rcpts, STUFFED))
            outcomes.append(await connection.send("a@example.org", ["c@example.test"], STUFFED))
            await connection.close()

        run(use())
        kinds = [[o.kind for o in attempt] for attempt in outcomes]
        assert kinds == [["delivered", "permanent"], ["permanent"], ["delivered"]]
        received = downstream.wait_for(2)
        assert [m.data for m in received] == [STUFFED, STUFFED]  # dots un-stuffed intact
        assert [m.rcpt_tos for m in received] == [("b@example.test",), ("c@example.test",)]
        assert downstream.connections_made == 1
    finally:
        downstream.stop()


def test_bare_line_ends_are_never_relayed() -> None:
    async def script(reader: _Recording, writer: asyncio.StreamWriter) -> None:
        await greet(writer)
        await ehlo(reader, writer, "PIPELINING")
        await plain_delivery(reader, writer)

    async def use(port: int) -> None:
        connection = RelayConnection(relay_config(port), "gw.test")
        data = b"Subject: x\r\n\r\nbare\nLF\rCR\r\n.\n"
        [outcome] = await connection.send("a@example.org", ["b@example.test"], data)
        assert outcome.kind == "delivered"
        await connection.close()

    received = run(with_script(script, use))
    body = received[received.index(b"DATA\r\n") + 1 :]  # type: ignore[union-attr]
    assert body[:7] == [
        b"Subject: x\r\n",
        b"\r\n",
        b"bare\r\n",
        b"LF\r\n",
        b"CR\r\n",
        b"..\r\n",
        b".\r\n",
    ]


DSN = DsnParameters(
    mail=("RET=HDRS", "ENVID=QQ+2B314"),
    rcpts=(("NOTIFY=SUCCESS,DELAY", "ORCPT=utf-8;j\\x{F6}rg@example.test"), ()),
)


@pytest.mark.parametrize("offered", [True, False])
def test_dsn_parameters_go_only_to_a_server_offering_dsn(offered: bool) -> None:
    async def script(reader: _Recording, writer: asyncio.StreamWriter) -> None:
        await greet(writer)
        await ehlo(reader, writer, "PIPELINING", *(["DSN"] if offered else []))
        await plain_delivery(reader, writer, recipients=2)

    outcomes: list[RecipientOutcome] = []

    async def use(port: int) -> None:
        connection = RelayConnection(relay_config(port), "gw.test")
        rcpts = ["b@example.test", "c@example.test"]
        outcomes.extend(await connection.send("a@example.org", rcpts, STUFFED, dsn=DSN))
        await connection.close()

    received = run(with_script(script, use))
    envelope = received[1:4]  # type: ignore[index]
    if offered:
        assert envelope == [
            b"MAIL FROM:<a@example.org> RET=HDRS ENVID=QQ+2B314\r\n",
            b"RCPT TO:<b@example.test> NOTIFY=SUCCESS,DELAY"
            b" ORCPT=utf-8;j\\x{F6}rg@example.test\r\n",
            b"RCPT TO:<c@example.test>\r\n",
        ]
    else:
        assert envelope == [
            b"MAIL FROM:<a@example.org>\r\n",
            b"RCPT TO:<b@example.test>\r\n",
            b"RCPT TO:<c@example.test>\r\n",
        ]
    # Whether success notices became the internal server's job.
    assert [(o.kind, o.dsn_passed) for o in outcomes] == [("delivered", offered)] * 2


def test_plaintext_injected_after_the_starttls_reply_is_discarded(tmp_path: Path) -> None:
    # A man in the middle (or a broken server) appends a reply after "220": read after the
    # handshake, it would answer the encrypted EHLO and put every later reply out of step.
    cert, key = make_self_signed_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def script(reader: _Recording, writer: asyncio.StreamWriter) -> None:
        await greet(writer)
        await ehlo(reader, writer, "PIPELINING", "STARTTLS")
        assert await reader.readline() == b"STARTTLS\r\n"
        writer.write(b"220 go ahead\r\n250 injected\r\n")
        await writer.drain()
        await writer.start_tls(context)
        await ehlo(reader, writer, "PIPELINING")
        await plain_delivery(reader, writer)

    outcomes: list[RecipientOutcome] = []

    async def use(port: int) -> None:
        config = dataclasses.replace(relay_config(port, timeout_s=1.0), tls="required")
        connection = RelayConnection(config, "gw.test")
        outcomes.extend(await connection.send("a@x.test", ["b@example.test"], STUFFED))
        await connection.close()

    run(with_script(script, use))
    assert [(o.kind, o.reply) for o in outcomes] == [("delivered", "250 2.0.0 queued")]


def test_a_message_that_timed_out_while_being_sent_is_not_sent_on_after() -> None:
    # The server stops reading in the middle of the message (back-pressure) longer than the
    # timeout: the attempt is deferred, so the rest and the final dot must never reach the
    # server afterwards; it would deliver the message the next attempt delivers again.
    big = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n" + (b"y" * 78 + b"\r\n") * 400_000
    seen_end: list[bool] = []
    done = asyncio.Event()

    async def script(reader: _Recording, writer: asyncio.StreamWriter) -> None:
        try:
            await greet(writer)
            await ehlo(reader, writer, "PIPELINING")
            for _ in range(3):
                await reader.readline()
            writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
            await writer.drain()
            await asyncio.sleep(3.0)  # not reading: the client's timeout runs out
            while True:
                line = await reader.reader.readline()
                if line in (b"", b".\r\n"):
                    seen_end.append(line == b".\r\n")
                    break
        finally:
            done.set()

    outcomes: list[RecipientOutcome] = []

    async def use(port: int) -> None:
        connection = RelayConnection(relay_config(port, timeout_s=1.0), "gw.test")
        outcomes.extend(await connection.send("a@x.test", ["b@example.test"], big))
        await connection.close()
        await asyncio.wait_for(done.wait(), 15)

    run(with_script(script, use))
    assert [o.kind for o in outcomes] == ["temporary"]
    assert seen_end == [False]


def test_the_reply_to_the_final_dot_may_take_longer_than_a_command() -> None:
    # An internal server filtering the message before it answers: giving up after the
    # per-command timeout would defer a message the server then delivers (twice, later).
    async def script(reader: _Recording, writer: asyncio.StreamWriter) -> None:
        await greet(writer)
        await ehlo(reader, writer, "PIPELINING")
        for _ in range(3):
            await reader.readline()
        writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
        while (await reader.readline()) != b".\r\n":
            pass
        await asyncio.sleep(2.0)  # longer than timeout_s, shorter than data_timeout_s
        writer.write(b"250 2.0.0 filtered and queued\r\n")
        await reader.readline()

    outcomes: list[RecipientOutcome] = []

    async def use(port: int) -> None:
        config = dataclasses.replace(relay_config(port, timeout_s=1.0), data_timeout_s=6.0)
        connection = RelayConnection(config, "gw.test")
        outcomes.extend(await connection.send("a@x.test", ["b@example.test"], STUFFED))
        await connection.close()

    run(with_script(script, use))
    assert [(o.kind, o.reply) for o in outcomes] == [("delivered", "250 2.0.0 filtered and queued")]


def test_ehlo_421_is_not_followed_by_helo() -> None:
    async def script(reader: _Recording, writer: asyncio.StreamWriter) -> None:
        await greet(writer)
        await reader.readline()
        writer.write(b"421 4.3.2 shutting down\r\n")
        await writer.drain()
        await reader.readline()  # what the client sends next, if anything

    outcomes: list[RecipientOutcome] = []

    async def use(port: int) -> None:
        connection = RelayConnection(relay_config(port, timeout_s=1.0), "gw.test")
        outcomes.extend(await connection.send("a@x.test", ["b@example.test"], STUFFED))

    received = run(with_script(script, use))
    assert [o.kind for o in outcomes] == ["temporary"]
    assert "421 4.3.2 shutting down" in outcomes[0].reply
    assert not any(line.startswith(b"HELO") for line in received)  # type: ignore[union-attr]


def test_many_recipients_are_pipelined_in_batches() -> None:
    downstream = Downstream()
    downstream.start()
    try:
        rcpts = [f"user{n}@example.test" for n in range(250)]

        async def use() -> list[RecipientOutcome]:
            connection = RelayConnection(relay_config(downstream.port), "gw.test")
            try:
                return await connection.send("a@example.org", rcpts, STUFFED)
            finally:
                await connection.close()

        outcomes = run(use())
        assert [o.kind for o in outcomes] == ["delivered"] * 250  # type: ignore[union-attr]
        [message] = downstream.wait_for(1)
        assert list(message.rcpt_tos) == rcpts
    finally:
        downstream.stop()
