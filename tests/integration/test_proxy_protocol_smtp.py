"""The real client behind HAProxy (issue 32): a PROXY header from a trusted proxy names the
client every check and the log see; nobody else can claim an address."""

from __future__ import annotations

import ipaddress
import json
import logging
import smtplib
import socket
import struct

import pytest

from gateway.net.dns import Resolver
from gateway.pipeline.registry import Services
from gateway.smtp.proxy import V2_SIGNATURE
from tests.support.dns_server import DnsTestServer
from tests.support.gateway_fixture import GatewayFactory, RunningGateway, only_checks

MESSAGE = b"From: <a@sender.test>\r\nSubject: hi\r\n\r\nHello.\r\n"


def behind_proxy(factory: GatewayFactory, trusted: str = "127.0.0.0/8") -> RunningGateway:
    return factory({"smtp": {"proxy_protocol": True, "trusted_proxies": [trusted]}})


def send_after(gateway: RunningGateway, preamble: bytes) -> tuple[int, bytes]:
    """One message over a connection that starts with `preamble`; the DATA reply."""
    sock = socket.create_connection((gateway.host, gateway.port), timeout=10)
    sock.sendall(preamble)
    smtp = smtplib.SMTP(local_hostname="client.test", timeout=10)
    smtp.sock = sock  # smtplib speaks on the connection that carried the header
    try:
        smtp.getreply()
        smtp.ehlo()
        smtp.mail("a@sender.test")
        smtp.rcpt("bob@example.test")
        return smtp.data(MESSAGE)
    finally:
        smtp.close()


def logged_clients(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.transaction"]
    return [line["client_ip"] for line in lines]


def v2_header(client: str, port: int) -> bytes:
    address = ipaddress.ip_address(client)
    if address.version == 4:
        body = struct.pack("!4s4sHH", address.packed, bytes([192, 0, 2, 1]), port, 25)
        family = 0x11
    else:
        body = struct.pack("!16s16sHH", address.packed, bytes(16), port, 25)
        family = 0x21
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, family, len(body)) + body


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n", "203.0.113.7"),
        (b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n", "2001:db8::7"),
        (v2_header("198.51.100.9", 40001), "198.51.100.9"),
        (v2_header("2001:db8::9", 40002), "2001:db8::9"),
        # The proxy's own health checks (v1 UNKNOWN, v2 LOCAL) keep the proxy's address.
        (b"PROXY UNKNOWN\r\n", "127.0.0.1"),
        (V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, 0), "127.0.0.1"),
    ],
)
def test_trusted_proxy_header_names_the_client(
    gateway_factory: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
    header: bytes,
    client: str,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.transaction")
    gateway = behind_proxy(gateway_factory)
    code, _ = send_after(gateway, header)
    assert code == 250
    assert logged_clients(caplog) == [client]
    [msg_id] = gateway.spool.ids()
    received = gateway.spool.read_data(msg_id)
    assert (
        f"Received: from client.test ([{'IPv6:' if ':' in client else ''}{client}])".encode()
        in (received)
    )


def test_an_untrusted_peer_cannot_claim_an_address(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.transaction")
    gateway = behind_proxy(gateway_factory, trusted="192.0.2.0/24")  # not loopback
    with socket.create_connection((gateway.host, gateway.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220 ")
        sock.sendall(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n")
        assert reader.readline().startswith(b"500 ")  # an unknown command, nothing more
    code, _ = send_after(gateway, b"")
    assert code == 250
    assert logged_clients(caplog) == ["127.0.0.1"]


def test_a_trusted_peer_without_a_valid_header_is_closed(gateway_factory: GatewayFactory) -> None:
    gateway = behind_proxy(gateway_factory)
    for preamble in (b"EHLO client.test\r\n", b"PROXY TCP4 not-an-ip 192.0.2.1 1 25\r\n"):
        with socket.create_connection((gateway.host, gateway.port), timeout=10) as sock:
            sock.sendall(preamble)
            assert sock.recv(100) == b""  # closed, no greeting
    assert gateway.spool.ids() == []


def test_proxy_protocol_needs_trusted_proxies() -> None:
    from gateway.config import config_from_dict
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        config_from_dict({"smtp": {"proxy_protocol": True}})
    assert info.value.problems == [
        "smtp.proxy_protocol: needs trusted_proxies (the proxies' networks)"
    ]


# -- Postfix XCLIENT ----------------------------------------------------------------------------


def xclient_gateway(factory: GatewayFactory, networks: str) -> RunningGateway:
    return factory({"smtp": {"xclient_networks": [networks]}})


def test_xclient_from_a_trusted_front_end_names_the_client(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.transaction")
    gateway = xclient_gateway(gateway_factory, "127.0.0.0/8")
    with gateway.client() as smtp:
        code, text = smtp.ehlo()
        assert b"XCLIENT ADDR" in text
        # As Postfix sends it: xtext values, IPv6 with its prefix, an unknown NAME.
        smtp.putcmd("XCLIENT", "ADDR=IPV6:2001:db8::5 PORT=4711 NAME=[UNAVAILABLE]")
        code, text = smtp.getreply()
        assert (code, text) == (220, b"mx.gateway.test ESMTP ready")
        smtp.ehlo_resp = None
        smtp.ehlo("client.example")
        assert smtp.sendmail("a@sender.test", ["bob@example.test"], MESSAGE) == {}
    assert logged_clients(caplog) == ["2001:db8::5"]
    [msg_id] = gateway.spool.ids()
    assert b"Received: from client.example ([IPv6:2001:db8::5])" in gateway.spool.read_data(msg_id)


def test_xclient_from_anyone_else_is_refused(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.transaction")
    gateway = xclient_gateway(gateway_factory, "192.0.2.0/24")
    with gateway.client() as smtp:
        _, text = smtp.ehlo()
        assert b"XCLIENT" not in text
        assert smtp.docmd("XCLIENT", "ADDR=203.0.113.7") == (
            550,
            b"5.7.0 Error: insufficient authorization",
        )
        assert smtp.sendmail("a@sender.test", ["bob@example.test"], MESSAGE) == {}
    assert logged_clients(caplog) == ["127.0.0.1"]


def test_xclient_not_inside_a_transaction(gateway_factory: GatewayFactory) -> None:
    gateway = xclient_gateway(gateway_factory, "127.0.0.0/8")
    with gateway.client() as smtp:
        smtp.ehlo()
        smtp.mail("a@sender.test")
        assert smtp.docmd("XCLIENT", "ADDR=203.0.113.7")[0] == 503
        assert smtp.docmd("XCLIENT", "ADDR=not-an-ip")[0] == 503
        smtp.rset()
        assert smtp.docmd("XCLIENT", "ADDR=not-an-ip")[0] == 501


# -- Postfix XFORWARD ---------------------------------------------------------------------------


def test_xforward_names_the_client_of_the_next_transaction_only(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.transaction")
    gateway = gateway_factory({"smtp": {"xforward_networks": ["127.0.0.0/8"]}})
    with gateway.client() as smtp:
        _, text = smtp.ehlo()
        assert b"XFORWARD NAME ADDR" in text
        # As Postfix's smtp client sends it before each MAIL.
        assert smtp.docmd("XFORWARD", "NAME=mail.outside.test ADDR=203.0.113.7 PORT=4711") == (
            250,
            b"2.0.0 Ok",
        )
        assert smtp.docmd("XFORWARD", "HELO=mail.outside.test PROTO=ESMTP SOURCE=REMOTE")[0] == 250
        assert smtp.sendmail("a@sender.test", ["bob@example.test"], MESSAGE) == {}
        assert smtp.sendmail("a@sender.test", ["bob@example.test"], MESSAGE) == {}  # no XFORWARD
    assert logged_clients(caplog) == ["203.0.113.7", "127.0.0.1"]
    received = sorted(gateway.spool.read_data(i) for i in gateway.spool.ids())
    assert any(b"Received: from mail.outside.test ([203.0.113.7])" in r for r in received)


def test_xforward_from_anyone_else_is_refused(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory({"smtp": {"xforward_networks": ["192.0.2.0/24"]}})
    with gateway.client() as smtp:
        _, text = smtp.ehlo()
        assert b"XFORWARD" not in text
        assert smtp.docmd("XFORWARD", "ADDR=203.0.113.7")[0] == 550


# -- the organisation's own backup MX -----------------------------------------------------------


def relayed_message(client_ip: str) -> bytes:
    return (
        f"Received: from mail.legit.test (mail.legit.test [{client_ip}])\r\n"
        "\tby backup.example.test (Postfix) with ESMTPS id 4Yx;\r\n"
        "\tTue, 08 Dec 2026 04:00:00 +0000\r\n"
        "From: <alice@legit.test>\r\nTo: <bob@example.test>\r\nSubject: via backup MX\r\n"
        "Date: Tue, 08 Dec 2026 04:00:00 +0000\r\nMessage-ID: <1@legit.test>\r\n\r\nHello.\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("trusted_relays", "client", "spf"),
    [
        (["127.0.0.0/8"], "192.0.2.7", "SPF_PASS"),  # the client the backup MX saw: allowed
        (["127.0.0.0/8"], "203.0.113.9", "SPF_FAIL"),  # ... and one that is not
        ([], "192.0.2.7", "SPF_FAIL"),  # not a trusted relay: the relay itself is judged
    ],
)
def test_mail_from_a_trusted_backup_mx_is_judged_by_its_received_client(
    gateway_factory: GatewayFactory,
    dns_server: DnsTestServer,
    caplog: pytest.LogCaptureFixture,
    trusted_relays: list[str],
    client: str,
    spf: str,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.transaction")
    dns_server.set_zone("legit.test", {"@": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]}})
    resolver = Resolver([dns_server.address], timeout_s=0.5, lifetime_s=1.0, cache_entries=0)
    gateway = gateway_factory(
        {
            "smtp": {"trusted_relays": trusted_relays},
            "dns": {"nameservers": [dns_server.address]},
            "checks": only_checks("headers", "spf"),
        },
        services=Services(resolver=resolver),
    )
    with gateway.client() as smtp:
        assert (
            smtp.sendmail("alice@legit.test", ["bob@example.test"], relayed_message(client)) == {}
        )
    [line] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.transaction"]
    assert spf in [s["name"] for s in line["symbols"]]
    assert line["client_ip"] == (client if trusted_relays else "127.0.0.1")
    [msg_id] = gateway.spool.ids()
    # Our own Received names who connected: the backup MX.
    assert b"Received: from client.test ([127.0.0.1])" in gateway.spool.read_data(msg_id)
