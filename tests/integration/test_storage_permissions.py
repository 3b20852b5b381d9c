"""Everything the gateway writes under [storage] dir is private to its user, whatever the umask:
files 0600, directories 0700 (spool, quarantine with its SQLite index and WAL, feedback)."""

from __future__ import annotations

import os
import smtplib
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.downstream import Downstream
from tests.support.gateway_process import GatewayProcessFactory, wait_until

GTUBE_QUARANTINE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-QUARANTINE*C.34X"


def message(subject: str, body: str) -> bytes:
    return (
        f"From: a@sender.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@sender.test>\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)  # the usual default: what we must not depend on
    try:
        yield
    finally:
        os.umask(previous)


def test_storage_files_are_0600_and_directories_0700_under_a_022_umask(
    umask_022: None, gateway_process: GatewayProcessFactory, downstream: Downstream, tmp_path: Path
) -> None:
    downstream.fail_data("451 4.3.0 try later")  # the accepted message stays in the spool
    gw = gateway_process({"relay": {"port": downstream.port}, "verify": {"enabled": False}})
    with smtplib.SMTP(gw.host, gw.port, timeout=10) as client:
        client.sendmail("a@sender.test", ["bob@example.test"], message("queued", "Hello"))
        client.sendmail("a@sender.test", ["bob@example.test"], message("held", GTUBE_QUARANTINE))
    sample = tmp_path / "spam.eml"
    sample.write_bytes(message("learned", "buy now"))
    learn = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "learn",
            "--spam",
            str(sample),
            "--config",
            str(gw.config_path),
        ],
        capture_output=True,
        timeout=60,
    )
    assert learn.returncode == 0, learn.stderr
    storage = gw.config_path.parent / "var"
    assert wait_until(lambda: (storage / "quarantine" / "index.sqlite3-wal").exists(), 10.0)
    assert any((storage / "feedback" / "spam").iterdir())

    seen: dict[str, int] = {}
    for path in [storage, *storage.rglob("*")]:
        seen[str(path.relative_to(storage))] = stat.S_IMODE(path.stat().st_mode)
    wrong = {
        name: oct(mode)
        for name, mode in seen.items()
        if mode != (0o700 if (storage / name).is_dir() else 0o600)
    }
    assert wrong == {}
    names = set(seen)
    assert {"quarantine/index.sqlite3", "quarantine/index.sqlite3-wal"} <= names
    assert any(name.startswith("queue/active/") for name in names)
    assert any(name.startswith("quarantine/messages/") and name.endswith(".eml") for name in names)
