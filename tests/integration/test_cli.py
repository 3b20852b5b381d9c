"""The `gateway` command as a user runs it: real process, real files, loopback DNS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tomli_w

from gateway.config import PROJECT_ROOT, SHIPPED_RULES_DIR
from tests.support.dns_server import DnsTestServer

EXAMPLES = PROJECT_ROOT / "examples"


def gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write_config(path: Path, data: dict) -> Path:
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


def test_check_config_accepts_the_shipped_example() -> None:
    result = gateway("check-config", "--config", str(SHIPPED_RULES_DIR / "gateway.example.toml"))
    assert result.returncode == 0, result.stderr
    assert ": ok (" in result.stdout


def test_check_config_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "bad.toml",
        {
            "smtp": {"listen": "127.0.0.1:2525", "max_recipients": "many", "colour": "blue"},
            "relay": {"domains": []},
        },
    )
    result = gateway("check-config", "--config", str(config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith("gateway: smtp.colour: unknown key") for line in lines)
    assert any(
        line.startswith("gateway: smtp.max_recipients: expected an integer") for line in lines
    )
    assert any("relay.domains: at least one recipient domain is required" in line for line in lines)


def test_check_config_reports_a_missing_file(tmp_path: Path) -> None:
    result = gateway("check-config", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "no such file" in result.stderr


def test_scan_json_explains_every_symbol(tmp_path: Path, dns_server: DnsTestServer) -> None:
    dns_server.set_zone(".", {})
    config = write_config(
        tmp_path / "gw.toml",
        {
            "relay": {"domains": ["example.test"]},
            "dns": {"nameservers": [dns_server.address], "timeout_s": 0.5, "lifetime_s": 1.0},
            "pipeline": {"rules_dir": str(SHIPPED_RULES_DIR)},
            "checks": {"antivirus": {"enabled": False}},
        },
    )
    files = [str(EXAMPLES / "ham-meeting.eml"), str(EXAMPLES / "spam-broken.eml")]
    result = gateway(
        "scan",
        "--config",
        str(config),
        "--client-ip",
        "203.0.113.9",
        "--mail-from",
        "someone@outside.test",
        "--json",
        *files,
    )
    assert result.returncode == 0, result.stderr
    ham, spam = (json.loads(line) for line in result.stdout.splitlines())
    assert ham["action"] == "accept"
    assert spam["action"] == "reject"
    assert {"HDR_MULTIPLE_FROM", "ML_SPAM"} <= {s["name"] for s in spam["symbols"]}
    assert all(s["reason"] for s in spam["symbols"])
    assert spam["score"] == round(sum(s["score"] for s in spam["symbols"]), 4)


def test_scan_reports_an_unreadable_file_and_goes_on(
    tmp_path: Path, dns_server: DnsTestServer
) -> None:
    dns_server.set_zone(".", {})
    config = write_config(
        tmp_path / "gw.toml",
        {
            "relay": {"domains": ["example.test"]},
            "dns": {"nameservers": [dns_server.address], "timeout_s": 0.5, "lifetime_s": 1.0},
            "pipeline": {"rules_dir": str(SHIPPED_RULES_DIR)},
            "checks": {"antivirus": {"enabled": False}, "classifier": {"enabled": False}},
        },
    )
    result = gateway(
        "scan",
        "--config",
        str(config),
        str(tmp_path / "missing.eml"),
        str(EXAMPLES / "ham-meeting.eml"),
    )
    assert result.returncode == 1
    assert "missing.eml: No such file or directory" in result.stderr
    assert "ham-meeting.eml: ACCEPT" in result.stdout


def test_learn_says_which_files_it_skipped(tmp_path: Path) -> None:
    source = tmp_path / "mail"
    source.mkdir()
    (source / "empty.eml").write_bytes(b"")
    (source / "good.eml").write_bytes((EXAMPLES / "ham-meeting.eml").read_bytes())
    config = write_config(
        tmp_path / "gw.toml",
        {
            "relay": {"domains": ["example.test"]},
            "storage": {"dir": str(tmp_path / "var")},
        },
    )
    result = gateway("learn", "--ham", str(source), "--config", str(config))
    assert result.returncode == 1
    assert "skipped" in result.stderr and "empty.eml" in result.stderr
    assert "recorded 1 message(s) as ham" in result.stdout
    assert len(list((tmp_path / "var" / "feedback" / "ham").iterdir())) == 1


def test_scan_check_exits_with_the_strongest_verdict(
    tmp_path: Path, dns_server: DnsTestServer
) -> None:
    """`gateway scan --check` for scripts (as `spamc -c`): 0 ham, 6 reject (issue 32)."""
    dns_server.set_zone(".", {})
    config = write_config(
        tmp_path / "gw.toml",
        {
            "relay": {"domains": ["example.test"]},
            "dns": {"nameservers": [dns_server.address], "timeout_s": 0.5, "lifetime_s": 1.0},
            "checks": {"antivirus": {"enabled": False}, "classifier": {"enabled": False}},
        },
    )
    quarantine = tmp_path / "gtube-quarantine.eml"
    quarantine.write_bytes(
        b"From: a@b.test\r\nSubject: t\r\n\r\n"
        b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-QUARANTINE*C.34X\r\n"
    )
    ham, spam = str(EXAMPLES / "ham-meeting.eml"), str(EXAMPLES / "spam-broken.eml")
    assert gateway("scan", "--config", str(config), "--check", ham).returncode == 0
    assert gateway("scan", "--config", str(config), "-c", str(quarantine)).returncode == 4
    assert gateway("scan", "--config", str(config), "-c", ham, spam).returncode == 6
    assert gateway("scan", "--config", str(config), ham, spam).returncode == 0  # no --check
