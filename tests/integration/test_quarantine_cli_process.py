"""`gateway quarantine` as an admin runs it: a separate process, --config before or after."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.quarantine.store import QuarantineStore
from tests.support.quarantine import hold

PROCESS_TIMEOUT_S = 30.0


def gateway(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *argv],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )


def test_list_and_exit_codes_in_a_real_process(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[storage]\ndir = "{tmp_path / "var"}"\n')

    missing = gateway("quarantine", "list", "--config", str(config))
    assert missing.returncode == 2 and "no quarantine store at" in missing.stderr

    store = QuarantineStore(tmp_path / "var" / "quarantine")
    qid = hold(store, subject="held for review")
    store.close()
    listed = gateway("quarantine", "--config", str(config), "list")
    assert listed.returncode == 0, listed.stderr
    assert qid in listed.stdout and "held for review" in listed.stdout

    unknown = gateway("quarantine", "show", "0123456789abcdef", "--config", str(config))
    assert unknown.returncode == 1
    assert "0123456789abcdef: no such quarantined message" in unknown.stderr
