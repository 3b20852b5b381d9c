"""clamd addresses and replies (no sockets), and the [checks.antivirus] config."""

from __future__ import annotations

import pytest

from gateway.config import config_from_dict
from gateway.errors import ConfigError, ScannerError
from gateway.net.clamd import (
    ScanResult,
    ScanStatus,
    TcpAddress,
    UnixAddress,
    parse_address,
    parse_reply,
)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("tcp://127.0.0.1:3310", TcpAddress("127.0.0.1", 3310)),
        ("tcp://localhost", TcpAddress("localhost", 3310)),
        ("tcp://[::1]:3311", TcpAddress("::1", 3311)),
        ("/run/clamav/clamd.ctl", UnixAddress("/run/clamav/clamd.ctl")),
    ],
)
def test_addresses(text: str, address: TcpAddress | UnixAddress) -> None:
    assert parse_address(text) == address
    assert str(address) == text.replace("tcp://localhost", "tcp://localhost:3310")


@pytest.mark.parametrize("text", ["127.0.0.1:3310", "tcp://:3310", "tcp://h:0", "clamd.sock"])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


@pytest.mark.parametrize(
    ("reply", "result"),
    [
        ("stream: OK", ScanResult(ScanStatus.CLEAN)),
        (
            "stream: Win.Test.EICAR_HDB-1 FOUND",
            ScanResult(ScanStatus.FOUND, "Win.Test.EICAR_HDB-1"),
        ),
        ("INSTREAM size limit exceeded. ERROR", ScanResult(ScanStatus.TOO_LARGE)),
    ],
)
def test_replies(reply: str, result: ScanResult) -> None:
    assert parse_reply(reply) == result


@pytest.mark.parametrize(
    "reply", ["", "PONG", "stream: FOUND", "stream: \x1b[31mx FOUND", "stream: OK OK", "OK"]
)
def test_unexpected_replies_raise(reply: str) -> None:
    with pytest.raises(ScannerError, match="unexpected clamd reply"):
        parse_reply(reply)


def test_error_reply_raises_with_clamd_text() -> None:
    with pytest.raises(ScannerError, match="clamd error: stream: Can't allocate memory ERROR"):
        parse_reply("stream: Can't allocate memory ERROR")


def test_antivirus_config_defaults_and_errors() -> None:
    default = config_from_dict({}).checks.antivirus
    assert (default.enabled, default.on_error.value) == (True, "tempfail")
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"checks": {"antivirus": {"address": "clamd:3310", "max_scan_bytes": 0}}})
    assert caught.value.problems == [
        "checks.antivirus.address: 'clamd:3310' is neither tcp://host:port nor an absolute "
        "unix socket path",
        "checks.antivirus.max_scan_bytes: must be greater than 0",
    ]


def test_attachments_config_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"checks": {"attachments": {"max_archive_entries": 70000}}})
    assert caught.value.problems == ["checks.attachments.max_archive_entries: must be below 65535"]
