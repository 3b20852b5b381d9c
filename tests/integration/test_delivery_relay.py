"""Delivery workers against the real recording downstream: relay, retry, fail, resume, TLS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import pytest

from gateway.config import QueueConfig, RelayConfig
from gateway.queue.delivery import DeliveryService
from gateway.queue.spool import QueueEntry, Spool
from tests.support.downstream import Downstream

FAST_QUEUE = QueueConfig(
    retry_initial_s=0.05, retry_max_s=0.2, lifetime_s=60.0, min_free_bytes=0, scan_interval_s=0.05
)


def message(n: int = 0) -> bytes:
    # 8-bit bytes, a leading dot and a long line: all must arrive byte-for-byte.
    return (
        (
            f"From: a@example.org\r\nTo: b@example.test\r\nSubject: test {n}\r\n"
            f"Message-ID: <{n}@example.org>\r\n\r\nh\xe9llo {n}\r\n.leading dot\r\n"
        ).encode()
        + b"x" * 990
        + b"\r\n"
    )


def relay_to(
    server: Downstream,
    tls: Literal["opportunistic", "required", "none"] = "none",
    connections: int = 2,
) -> RelayConfig:
    return RelayConfig(
        host=server.host,
        port=server.port,
        domains=("example.test",),
        tls=tls,
        timeout_s=5.0,
        connections=connections,
    )


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "queue", min_free_bytes=0)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def attempts(spool: Spool) -> list[int]:
    return [e.attempts for e in spool.entries()]


def failed(spool: Spool) -> list[QueueEntry]:
    return list(spool.entries(failed=True))


def test_relays_byte_for_byte_and_removes(spool: Spool, downstream: Downstream) -> None:
    spool.enqueue("m1", "a@example.org", ["b@example.test", "c@example.test"], message())

    async def scenario() -> None:
        service = DeliveryService(spool, relay_to(downstream), FAST_QUEUE, "mx.gateway.test")
        await service.start()
        service.notify("m1")
        [got] = await downstream.wait_for_async(1)
        await until(lambda: spool.ids() == [])
        await service.stop()
        assert got.data == message()
        assert got.mail_from == "a@example.org"
        assert got.rcpt_tos == ("b@example.test", "c@example.test")
        assert "BODY=8BITMIME" in got.mail_options

    run(scenario())
    assert list(spool.active_dir.iterdir()) == []


def test_connections_are_reused(spool: Spool, downstream: Downstream) -> None:
    for n in range(10):
        spool.enqueue(f"m{n}", "a@example.org", ["b@example.test"], message(n))

    async def scenario() -> None:
        service = DeliveryService(
            spool, relay_to(downstream, connections=1), FAST_QUEUE, "mx.gateway.test"
        )
        await service.start()
        await downstream.wait_for_async(10)
        await service.stop()

    run(scenario())
    assert downstream.connections_made == 1


def test_4xx_is_retried_until_accepted(spool: Spool, downstream: Downstream) -> None:
    downstream.fail_rcpt("451 4.3.0 Try again later")
    spool.enqueue("m1", "a@example.org", ["b@example.test"], message())

    async def scenario() -> None:
        service = DeliveryService(spool, relay_to(downstream), FAST_QUEUE, "mx.gateway.test")
        await service.start()
        await until(lambda: attempts(spool) and attempts(spool)[0] >= 2)
        [entry] = spool.entries()
        assert entry.last_error == "451 4.3.0 Try again later"
        assert entry.recipients[0].status == "pending"
        downstream.behave()
        await downstream.wait_for_async(1)
        await until(lambda: spool.ids() == [])
        await service.stop()

    run(scenario())
    assert len(downstream.messages) == 1 and failed(spool) == []


def test_5xx_fails_permanently_with_the_reason(spool: Spool, downstream: Downstream) -> None:
    downstream.fail_data("554 5.6.0 Content refused")
    spool.enqueue("m1", "a@example.org", ["b@example.test"], message())

    async def scenario() -> None:
        service = DeliveryService(spool, relay_to(downstream), FAST_QUEUE, "mx.gateway.test")
        await service.start()
        await until(lambda: spool.ids(failed=True) == ["m1"])
        await service.stop()

    run(scenario())
    [entry] = failed(spool)
    assert entry.recipients[0].status == "failed"
    assert entry.recipients[0].reply == "554 5.6.0 Content refused"
    assert spool.read_data("m1", failed=True) == message()
    assert spool.ids() == [] and downstream.messages == []


def test_mixed_recipients_only_the_refused_one_fails(spool: Spool, downstream: Downstream) -> None:
    downstream.fail_rcpt("550 5.1.1 No such user", rcpt="nobody@example.test")
    rcpts = ["b@example.test", "nobody@example.test", "c@example.test"]
    spool.enqueue("m1", "a@example.org", rcpts, message())

    async def scenario() -> None:
        service = DeliveryService(spool, relay_to(downstream), FAST_QUEUE, "mx.gateway.test")
        await service.start()
        await until(lambda: spool.ids(failed=True) == ["m1"])
        await service.stop()

    run(scenario())
    [got] = downstream.messages
    assert got.rcpt_tos == ("b@example.test", "c@example.test")
    statuses = {r.address: r.status for r in failed(spool)[0].recipients}
    assert statuses == {
        "b@example.test": "delivered",
        "nobody@example.test": "failed",
        "c@example.test": "delivered",
    }


def test_mixed_temporary_recipient_is_retried_alone(spool: Spool, downstream: Downstream) -> None:
    downstream.fail_rcpt("452 4.2.2 Mailbox full", rcpt="full@example.test")
    spool.enqueue("m1", "a@example.org", ["b@example.test", "full@example.test"], message())

    async def scenario() -> None:
        service = DeliveryService(spool, relay_to(downstream), FAST_QUEUE, "mx.gateway.test")
        await service.start()
        await downstream.wait_for_async(1)
        await until(lambda: attempts(spool) and attempts(spool)[0] >= 2)
        downstream.behave()
        await downstream.wait_for_async(2)
        await until(lambda: spool.ids() == [])
        await service.stop()

    run(scenario())
    assert [m.rcpt_tos for m in downstream.messages] == [
        ("b@example.test",),
        ("full@example.test",),
    ]


def test_downstream_down_then_back_delivers_each_once(spool: Spool, downstream: Downstream) -> None:
    downstream.stop()
    for n in range(20):
        spool.enqueue(f"m{n:02d}", "a@example.org", ["b@example.test"], message(n))

    async def scenario() -> None:
        service = DeliveryService(spool, relay_to(downstream), FAST_QUEUE, "mx.gateway.test")
        await service.start()
        await until(lambda: len(attempts(spool)) == 20 and min(attempts(spool)) >= 1)
        assert "connection to" in next(iter(spool.entries())).last_error
        downstream.start()
        await downstream.wait_for_async(20)
        await until(lambda: spool.ids() == [])
        await asyncio.sleep(0.3)  # several scan intervals: nothing may arrive twice
        await service.stop()

    run(scenario())
    subjects = [m.data.split(b"Subject: ")[1].split(b"\r\n")[0] for m in downstream.messages]
    assert sorted(subjects) == sorted(f"test {n}".encode() for n in range(20))


def test_downstream_restart_between_messages_reconnects(
    spool: Spool, downstream: Downstream
) -> None:
    async def scenario() -> None:
        service = DeliveryService(
            spool, relay_to(downstream, connections=1), FAST_QUEUE, "mx.gateway.test"
        )
        await service.start()
        spool.enqueue("m1", "a@example.org", ["b@example.test"], message(1))
        service.notify("m1")
        await downstream.wait_for_async(1)
        await asyncio.to_thread(downstream.restart)  # drops our pooled connection
        spool.enqueue("m2", "a@example.org", ["b@example.test"], message(2))
        service.notify("m2")
        await downstream.wait_for_async(2)
        await service.stop()

    run(scenario())
    assert downstream.connections_made == 2


def test_restart_resumes_the_queue(spool: Spool, downstream: Downstream) -> None:
    downstream.fail_rcpt("421 4.3.2 Shutting down")
    for n in range(5):
        spool.enqueue(f"m{n}", "a@example.org", ["b@example.test"], message(n))

    async def first_life() -> None:
        service = DeliveryService(spool, relay_to(downstream), FAST_QUEUE, "mx.gateway.test")
        await service.start()
        await until(lambda: min(attempts(spool)) >= 1)
        await service.stop()

    async def second_life() -> None:
        reopened = Spool(spool.root, min_free_bytes=0)
        service = DeliveryService(reopened, relay_to(downstream), FAST_QUEUE, "mx.gateway.test")
        await service.start()  # no notify: the start-up scan must find them
        await downstream.wait_for_async(5)
        await until(lambda: reopened.ids() == [])
        await service.stop()

    run(first_life())
    assert len(spool.ids()) == 5 and downstream.messages == []
    downstream.behave()
    run(second_life())
    assert len(downstream.messages) == 5


def test_two_services_on_one_spool_deliver_each_message_once(
    spool: Spool, downstream: Downstream
) -> None:
    count = 60
    for n in range(count):
        spool.enqueue(f"m{n:03d}", "a@example.org", ["b@example.test"], message(n))

    async def scenario() -> None:
        # Two Spool objects: separate open file descriptions, as two processes would have.
        services = [
            DeliveryService(
                Spool(spool.root, min_free_bytes=0),
                relay_to(downstream, connections=3),
                FAST_QUEUE,
                "mx.gateway.test",
            )
            for _ in range(2)
        ]
        for service in services:
            await service.start()
        for n in range(count):  # both are told about every message
            for service in services:
                service.notify(f"m{n:03d}")
        await downstream.wait_for_async(count)
        await until(lambda: spool.ids() == [])
        await asyncio.sleep(0.3)
        for service in services:
            await service.stop()

    run(scenario())
    subjects = [m.data.split(b"Subject: ")[1].split(b"\r\n")[0] for m in downstream.messages]
    assert len(subjects) == count == len(set(subjects))


def test_lifetime_expiry_fails_permanently(spool: Spool, downstream: Downstream) -> None:
    downstream.fail_rcpt("451 4.3.0 Try again later")
    spool.enqueue("m1", "a@example.org", ["b@example.test"], message())
    short_life = QueueConfig(
        retry_initial_s=0.05, retry_max_s=0.1, lifetime_s=0.3, min_free_bytes=0,
        scan_interval_s=0.05,
    )  # fmt: skip

    async def scenario() -> None:
        service = DeliveryService(spool, relay_to(downstream), short_life, "mx.gateway.test")
        await service.start()
        await until(lambda: spool.ids(failed=True) == ["m1"])
        await service.stop()

    run(scenario())
    reply = failed(spool)[0].recipients[0].reply
    assert reply.startswith("expired in the queue after")
    assert "451 4.3.0 Try again later" in reply


def test_smtputf8_envelope_to_a_server_without_it_fails_clearly(spool: Spool) -> None:
    server = Downstream(smtputf8=False)
    server.start()
    try:
        spool.enqueue("m1", "jos\u00e9@example.org", ["b@example.test"], message())

        async def scenario() -> None:
            service = DeliveryService(spool, relay_to(server), FAST_QUEUE, "mx.gateway.test")
            await service.start()
            await until(lambda: spool.ids(failed=True) == ["m1"])
            await service.stop()

        run(scenario())
    finally:
        server.stop()
    assert "does not offer SMTPUTF8" in failed(spool)[0].recipients[0].reply
    assert server.messages == []


def test_smtputf8_envelope_is_relayed_when_offered(spool: Spool, downstream: Downstream) -> None:
    spool.enqueue("m1", "jos\u00e9@example.org", ["b@example.test"], message())

    async def scenario() -> None:
        service = DeliveryService(spool, relay_to(downstream), FAST_QUEUE, "mx.gateway.test")
        await service.start()
        await downstream.wait_for_async(1)
        await service.stop()

    run(scenario())
    [got] = downstream.messages
    assert got.mail_from == "jos\u00e9@example.org" and "SMTPUTF8" in got.mail_options


@pytest.mark.parametrize("mode", ["opportunistic", "required"])
def test_starttls_to_the_downstream(
    spool: Spool, downstream_tls: Downstream, mode: Literal["opportunistic", "required"]
) -> None:
    spool.enqueue("m1", "a@example.org", ["b@example.test"], message())

    async def scenario() -> None:
        relay = relay_to(downstream_tls, tls=mode)
        service = DeliveryService(spool, relay, FAST_QUEUE, "mx.gateway.test")
        await service.start()
        await downstream_tls.wait_for_async(1)
        await service.stop()

    run(scenario())
    [got] = downstream_tls.messages
    assert got.tls and got.data == message()


def test_required_tls_without_starttls_defers(spool: Spool, downstream: Downstream) -> None:
    spool.enqueue("m1", "a@example.org", ["b@example.test"], message())

    async def scenario() -> None:
        relay = relay_to(downstream, tls="required")
        service = DeliveryService(spool, relay, FAST_QUEUE, "mx.gateway.test")
        await service.start()
        await until(lambda: attempts(spool)[0] >= 1)
        await service.stop()

    run(scenario())
    [entry] = spool.entries()
    assert "STARTTLS" in entry.last_error
    assert downstream.messages == []


def test_pooled_connection_timed_out_by_the_server_is_replaced_at_once(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    """No RSET before reuse: a 421 to MAIL on a reused connection (the server timed it out)
    is met by MAIL on a new connection, not by deferring the message."""
    connections: list[int] = []
    delivered: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        number = len(connections)
        writer.write(b"220 fake ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250 fake\r\n")
            elif verb == b"MAIL" and number == 1 and delivered:
                writer.write(b"421 4.4.2 idle too long\r\n")
                await writer.drain()
                break
            elif verb == b"DATA":
                writer.write(b"354 go\r\n")
                body = b""
                while (chunk := await reader.readline()) != b".\r\n":
                    body += chunk
                delivered.append(body)
                writer.write(b"250 2.0.0 ok\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        relay = RelayConfig(
            host="127.0.0.1", port=port, domains=("example.test",), tls="none", connections=1
        )
        service = DeliveryService(spool, relay, FAST_QUEUE, "mx.gateway.test")
        await service.start()
        for n in (1, 2):
            spool.enqueue(f"m{n}", "a@example.org", ["b@example.test"], message(n))
            service.notify(f"m{n}")
            await until(lambda n=n: len(delivered) == n)  # type: ignore[misc]
        await until(lambda: not spool.ids())
        await service.stop()
        server.close()

    caplog.set_level("INFO", logger="gateway.queue")
    run(scenario())
    assert len(connections) == 2
    assert "deferred" not in caplog.text
    assert not spool.ids(failed=True)
