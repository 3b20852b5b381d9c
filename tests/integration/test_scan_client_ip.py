"""`gateway scan` without --client-ip (issue 22 item 3c): each verdict says that the client
was taken to be 127.0.0.1, which SPF then judged: a legitimate message saved from a mailbox
comes out SPF_FAIL, and DMARC_REJECT under p=reject, for a reason the output must give."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.config import SHIPPED_RULES_DIR
from tests.integration.test_cli import gateway, write_config
from tests.support.dns_server import DnsTestServer

MESSAGE = (
    b"From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: minutes\r\n"
    b"Date: Tue, 08 Dec 2026 04:00:00 +0000\r\nMessage-ID: <1@sender.test>\r\n\r\n"
    b"The minutes of today's meeting are attached.\r\n"
)
NOTE = "no --client-ip: the client was taken to be 127.0.0.1; SPF (and DMARC through it)"


def scan(tmp_path: Path, dns_server: DnsTestServer, *args: str) -> str:
    dns_server.set_zone(".", {"sender.test": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]}})
    config = write_config(
        tmp_path / "gw.toml",
        {
            "relay": {"domains": ["example.test"]},
            "storage": {"dir": str(tmp_path / "var")},
            "dns": {"nameservers": [dns_server.address], "timeout_s": 0.5, "lifetime_s": 1.0},
            "pipeline": {"rules_dir": str(SHIPPED_RULES_DIR)},
            "checks": {"antivirus": {"enabled": False}},
        },
    )
    message = tmp_path / "saved.eml"
    message.write_bytes(MESSAGE)
    result = gateway(
        "scan", "--config", str(config), "--mail-from", "alice@sender.test", *args, str(message)
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_without_client_ip_each_verdict_says_what_was_assumed(
    tmp_path: Path, dns_server: DnsTestServer
) -> None:
    text = scan(tmp_path, dns_server)
    assert "SPF_FAIL" in text and "ip=127.0.0.1" in text
    assert f"  note: {NOTE}" in text
    [verdict] = [json.loads(line) for line in scan(tmp_path, dns_server, "--json").splitlines()]
    assert (verdict["client_ip"], verdict["client_ip_assumed"]) == ("127.0.0.1", True)
    assert verdict["note"].startswith(NOTE)


def test_with_client_ip_there_is_nothing_to_say(tmp_path: Path, dns_server: DnsTestServer) -> None:
    text = scan(tmp_path, dns_server, "--client-ip", "192.0.2.1")
    assert "note:" not in text and "SPF_FAIL" not in text
    [verdict] = [
        json.loads(line)
        for line in scan(tmp_path, dns_server, "--client-ip", "192.0.2.1", "--json").splitlines()
    ]
    assert (verdict["client_ip"], verdict["client_ip_assumed"], verdict["note"]) == (
        "192.0.2.1",
        False,
        "",
    )
