"""deploy/systemd/mailgate.service: accepted by `systemd-analyze verify` without a single
complaint, hardened as issue 23 asks, and reload = SIGHUP (the gateway's rule reload)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import INSTALLED_CONFIG, PROJECT_ROOT

UNIT = PROJECT_ROOT / "deploy" / "systemd" / "mailgate.service"
INSTALLED_GATEWAY = "/opt/mailgate/bin/gateway"


def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.geteuid() != 0:
            pytest.skip("systemd-analyze is missing (Debian package systemd; make system-deps)")
        pytest.fail("systemd-analyze is missing: make system-deps installs it (as root)")
    return tool


def verify(unit_text: str, directory: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of the unit, with the gateway command of this checkout's venv
    in place of the installed one (verify checks that the command exists)."""
    gateway = Path(sys.executable).parent / "gateway"
    path = directory / "mailgate.service"
    path.write_text(unit_text.replace(INSTALLED_GATEWAY, str(gateway)))
    return subprocess.run(
        [analyze(), "verify", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_verifies_without_any_complaint(tmp_path: Path) -> None:
    result = verify(UNIT.read_text(), tmp_path)
    assert result.returncode == 0, result.stderr
    complaints = [line for line in result.stderr.splitlines() if "mailgate.service" in line]
    assert complaints == [], complaints


def test_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive is reported."""
    broken = UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    result = verify(broken, tmp_path)
    assert "Unknown key 'NoNewPrivilege'" in result.stderr


def test_hardening_storage_and_reload() -> None:
    found = directives(UNIT.read_text())
    assert found["NoNewPrivileges"] == ["yes"]
    assert found["ProtectSystem"] == ["strict"]
    assert found["PrivateTmp"] == ["yes"]
    assert found["ReadWritePaths"] == ["/var/lib/mailgate"]
    assert found["StateDirectory"] == ["mailgate"]
    capabilities = set(found["CapabilityBoundingSet"][0].split())
    assert "CAP_NET_BIND_SERVICE" in capabilities and "CAP_SYS_ADMIN" not in capabilities
    assert found["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert found["ExecStart"] == [f"{INSTALLED_GATEWAY} serve --config {INSTALLED_CONFIG}"]
    assert "User" not in found  # started as root: serve binds port 25, then drops itself
