"""A second `gateway serve` refuses to start (one line, exit 2) instead of quietly sharing the
port through SO_REUSEPORT and taking part of the traffic into its own spool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

from tests.support.downstream import Downstream
from tests.support.gateway_process import GatewayProcess, GatewayProcessFactory


def second_instance(first: GatewayProcess, tmp_path: Path, **changes: dict[str, object]) -> Path:
    """The first one's config with `changes` (per table), written to a file of its own."""
    data = tomllib.loads(first.config_path.read_text(encoding="utf-8"))
    for table, values in changes.items():
        data[table].update(values)
    path = tmp_path / "second.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


def run_serve(config: Path) -> tuple[int, str]:
    """Exit code and stderr of a `gateway serve` expected to refuse; one that starts instead
    is stopped with its workers (its own process group) and fails the test."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate(timeout=10)
        raise AssertionError(f"the second instance started: {stderr!r}") from None
    return process.returncode, stderr


@pytest.mark.timeout(120)
def test_second_instance_on_the_same_port_with_workers_refuses_to_start(
    gateway_process: GatewayProcessFactory, downstream: Downstream, tmp_path: Path
) -> None:
    first = gateway_process({"relay": {"port": downstream.port}, "smtp": {"workers": 2}})
    other_storage = tmp_path / "other-var"
    config = second_instance(
        first,
        tmp_path,
        smtp={"listen": f"{first.host}:{first.port}"},
        storage={"dir": str(other_storage)},
    )
    code, stderr = run_serve(config)
    assert code == 2
    lines = stderr.splitlines()
    assert lines == [f"gateway: cannot listen on {first.host}:{first.port}: Address already in use"]
    assert not (other_storage / "queue").exists()  # nothing was started


@pytest.mark.timeout(120)
def test_second_instance_on_the_same_storage_refuses_to_start(
    gateway_process: GatewayProcessFactory, downstream: Downstream, tmp_path: Path
) -> None:
    first = gateway_process({"relay": {"port": downstream.port}})
    assert first.process is not None
    config = second_instance(first, tmp_path, smtp={"listen": "127.0.0.1:0"})
    code, stderr = run_serve(config)
    assert code == 2
    storage = first.config_path.parent / "var"
    assert stderr.strip() == (
        f"gateway: another gateway serve (pid {first.process.pid}) is running on"
        f" [storage] dir {storage}"
    )
