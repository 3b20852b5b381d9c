"""[smtp] workers: front ends bound with SO_REUSEPORT share one port and both take mail."""

from __future__ import annotations

import pytest

from gateway.smtp.server import bind_listener
from tests.support.gateway_fixture import GatewayFactory

MESSAGE = b"From: a@sender.test\r\nTo: bob@example.test\r\nSubject: x\r\n\r\nbody\r\n"


def test_two_front_ends_share_a_port(gateway_factory: GatewayFactory) -> None:
    first_sock = bind_listener("127.0.0.1:0", reuse_port=True)
    port = first_sock.getsockname()[1]
    second_sock = bind_listener(f"127.0.0.1:{port}", reuse_port=True)
    first = gateway_factory(sock=first_sock)
    second = gateway_factory(sock=second_sock)
    assert first.port == second.port == port
    for _ in range(24):  # the kernel hashes each connection to one of the two listeners
        with first.client() as smtp:
            smtp.sendmail("a@sender.test", ["bob@example.test"], MESSAGE)
    counts = [len(first.spool.ids()), len(second.spool.ids())]
    assert sum(counts) == 24
    assert min(counts) > 0, counts


def test_without_reuse_port_the_port_is_exclusive() -> None:
    sock = bind_listener("127.0.0.1:0", reuse_port=False)
    try:
        with pytest.raises(OSError):
            bind_listener(f"127.0.0.1:{sock.getsockname()[1]}", reuse_port=True)
    finally:
        sock.close()
