"""SPF, DKIM and ARC share a bounded pool of threads: a client that makes us wait on a silent
DNS server cannot take the threads another client's checks need, and a check that could not
run is a temporary error, never "no pass" (issue 31 item 3).

Real gateway, real DNS server on loopback that swallows every query for the tarpit sender
domains, SMTP clients bound to 127.0.0.2 and 127.0.0.3 (the attackers) and 127.0.0.4 (a
legitimate sender whose domain has SPF pass and DMARC p=reject).
"""

from __future__ import annotations

import smtplib
import threading
import time
from typing import Any

import pytest

from gateway.net.dns import Resolver
from gateway.pipeline.registry import Services
from tests.support.dns_server import DnsTestServer
from tests.support.gateway_fixture import GatewayFactory, only_checks

ATTACKERS = ("127.0.0.2", "127.0.0.3")
SESSIONS_PER_ATTACKER = 6
LEGIT_IP = "127.0.0.4"
ATTACK_S = 3.0
SMTP_TIMEOUT_S = 10.0

# Small on purpose: 4 threads, an SPF evaluation gives up on DNS after 1 s. Before the pool
# was fair, 12 tarpit sessions kept all 4 threads busy and the legitimate sender's SPF check
# timed out waiting for one (SPF_ERROR), which DMARC read as "no pass": 550 5.7.1.
DNS: dict[str, Any] = {
    "timeout_s": 0.3,
    "lifetime_s": 1.0,
    "cache_entries": 0,
    "blocking_threads": 4,
    "blocking_threads_per_client": 1,
    "blocking_thread_wait_s": 0.5,
}
CHECKS: dict[str, Any] = {
    **only_checks("headers", "spf", "dkim", "arc", "dmarc"),
    "spf": {"enabled": True, "timeout_s": 1.5, "dns_time_s": 1.0},
}


def _legit_message() -> bytes:
    return (
        b"From: Alice <alice@legit.test>\r\nTo: bob@example.test\r\nSubject: order 4711\r\n"
        b"Date: Tue, 08 Dec 2026 03:00:00 +0000\r\nMessage-ID: <4711@legit.test>\r\n\r\n"
        b"The order ships tomorrow.\r\n"
    )


def _serve_zones(dns_server: DnsTestServer) -> None:
    dns_server.set_zone(
        "legit.test",
        {
            "@": {"TXT": [f"v=spf1 ip4:{LEGIT_IP} -all"]},
            "_dmarc": {"TXT": ["v=DMARC1; p=reject"]},
        },
    )
    dns_server.set_zone("example.test", {"@": {"MX": ["10 mx"]}})


def _start(dns_server: DnsTestServer, gateway_factory: GatewayFactory) -> Any:
    resolver = Resolver(
        [dns_server.address],
        DNS["timeout_s"],
        DNS["lifetime_s"],
        DNS["cache_entries"],
        DNS["blocking_threads"],
        DNS["blocking_threads_per_client"],
        DNS["blocking_thread_wait_s"],
    )
    overrides = {
        "smtp": {"max_connections_per_ip": 50},
        "dns": {"nameservers": [dns_server.address], **DNS},
        "checks": CHECKS,
    }
    return gateway_factory(overrides, services=Services(resolver=resolver))


def _client(gw: Any, source_ip: str) -> smtplib.SMTP:
    return smtplib.SMTP(
        gw.host,
        gw.port,
        local_hostname="client.test",
        timeout=SMTP_TIMEOUT_S,
        source_address=(source_ip, 0),
    )


def _attack(
    gw: Any, dns_server: DnsTestServer, ip: str, session: int, until: float, codes: list[int]
) -> None:
    """MAIL FROM a tarpit domain, again and again, until `until`."""
    with _client(gw, ip) as smtp:
        smtp.ehlo()
        attempt = 0
        while time.monotonic() < until:
            domain = f"s{session}-{attempt}.{ip.replace('.', '-')}.tarpit.test"
            dns_server.drop.add((domain, "*"))
            code, _ = smtp.mail(f"x@{domain}")
            codes.append(code)
            if code == 421:
                return  # the gateway closed the session
            smtp.rset()
            attempt += 1


@pytest.mark.timeout(60)
def test_tarpit_senders_cannot_starve_a_legitimate_senders_checks(
    dns_server: DnsTestServer, gateway_factory: GatewayFactory
) -> None:
    _serve_zones(dns_server)
    gw = _start(dns_server, gateway_factory)
    until = time.monotonic() + ATTACK_S
    attack_codes: list[int] = []
    attackers = [
        threading.Thread(
            target=_attack, args=(gw, dns_server, ip, n, until, attack_codes), daemon=True
        )
        for ip in ATTACKERS
        for n in range(SESSIONS_PER_ATTACKER)
    ]
    for thread in attackers:
        thread.start()
    time.sleep(0.5)  # the tarpit sessions hold every thread they can get by now

    started = time.monotonic()
    with _client(gw, LEGIT_IP) as smtp:
        smtp.ehlo()
        assert smtp.mail("alice@legit.test")[0] == 250
        assert smtp.rcpt("bob@example.test")[0] == 250
        code, reply = smtp.data(_legit_message())
    legit_s = time.monotonic() - started
    for thread in attackers:
        thread.join(ATTACK_S + 2 * SMTP_TIMEOUT_S)

    assert (code, reply[:5]) == (250, b"2.0.0"), reply  # accepted, not 550 5.7.1 DMARC_REJECT
    assert legit_s < 3.0, legit_s  # its checks did not wait for the tarpit sessions
    # Every tarpit MAIL FROM is deferred (SPF_TEMPERROR: DNS gave up, or no thread in time),
    # none accepted with a silent SPF_ERROR. Once a session's lookup timed out its next ones
    # fail at once (the DNS breaker), so a session may run into the error limit (421).
    assert 451 in attack_codes and set(attack_codes) <= {421, 451}, sorted(set(attack_codes))
