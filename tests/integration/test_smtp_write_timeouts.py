"""Writes to the client are bounded by the current (stress-aware) timeout: a client that never
reads its replies, or never completes a STARTTLS handshake, does not keep its session slot for
idle_timeout_s once the worker is under stress."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from tests.support.downstream import make_self_signed_cert
from tests.support.gateway_fixture import GatewayFactory, RunningGateway
from tests.support.gateway_process import wait_until
from tests.support.smtp_client import RawSmtp

# idle_timeout_s is long: what ends these sessions quickly must be the stress or TLS timeout.
CALM = {"idle_timeout_s": 60.0, "stress_idle_timeout_s": 0.5}
ALWAYS_STRESSED = {**CALM, "max_connections": 10, "stress_at": 0.1}  # one session is stress


def stall_with_unread_replies(gateway: RunningGateway) -> socket.socket:
    """A client with a tiny receive window that sends EHLO after EHLO and reads nothing, until
    the gateway stops reading (it waits to hand over its replies) or drops the connection.
    Returns its socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect((gateway.host, gateway.port))
    sock.settimeout(0.05)
    commands = b"EHLO client.test\r\n" * 200
    last_progress = time.monotonic()
    deadline = last_progress + 30.0
    while time.monotonic() - last_progress < 1.0:  # 1 s without taking a byte: stalled
        assert time.monotonic() < deadline, "the gateway went on reading"
        try:
            sock.send(commands)
            last_progress = time.monotonic()
        except TimeoutError:
            pass
        except ConnectionError:
            break  # dropped already: the stress timeout is shorter than our 1 s
    return sock


def ended_within(gateway: RunningGateway, limit_s: float) -> float | None:
    started = time.monotonic()
    if wait_until(lambda: not gateway.front_end or not gateway.front_end.sessions, limit_s):
        return time.monotonic() - started
    return None


def test_under_stress_a_client_that_never_reads_its_replies_loses_its_slot(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory({"smtp": ALWAYS_STRESSED})
    sock = stall_with_unread_replies(gateway)
    try:
        # Stalled for 1 s already (the stress timeout is 0.5 s); before: 60 s more.
        assert ended_within(gateway, 5.0) is not None
    finally:
        sock.close()


def test_a_reply_waiting_when_the_stress_begins_gets_the_stress_timeout(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory({"smtp": {**CALM, "max_connections": 4, "stress_at": 0.5}})
    sock = stall_with_unread_replies(gateway)
    try:
        assert gateway.front_end is not None and len(gateway.front_end.sessions) == 1  # calm
        with RawSmtp(gateway.host, gateway.port) as second:  # two of four: stress
            second.reply()
            elapsed = ended_within(gateway, 5.0)
        assert elapsed is not None and elapsed < 3.0
    finally:
        sock.close()


def tls_overrides(tmp_path: Path, **smtp: Any) -> dict[str, Any]:
    cert, key = make_self_signed_cert(tmp_path)
    return {"smtp": {"tls_cert": str(cert), "tls_key": str(key), **smtp}}


def stall_in_handshake(gateway: RunningGateway) -> RawSmtp:
    client = RawSmtp(gateway.host, gateway.port)
    client.greet()
    assert client.command("STARTTLS").startswith("220 ")
    return client  # and never sends a ClientHello


def test_a_stalled_starttls_handshake_is_bounded_by_tls_handshake_timeout_s(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gateway = gateway_factory(tls_overrides(tmp_path, **CALM, tls_handshake_timeout_s=0.5))
    with stall_in_handshake(gateway) as client:
        elapsed = ended_within(gateway, 5.0)
        assert elapsed is not None and elapsed < 3.0
        assert client.closed_by_server()


def test_under_stress_a_stalled_starttls_handshake_gets_the_stress_timeout(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gateway = gateway_factory(tls_overrides(tmp_path, **ALWAYS_STRESSED))
    with stall_in_handshake(gateway):
        elapsed = ended_within(gateway, 5.0)
        assert elapsed is not None and elapsed < 3.0
