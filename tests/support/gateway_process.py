"""The real `gateway serve` as a separate process, for tests that kill, restart or signal it.

    def test_x(gateway_process: GatewayProcessFactory, downstream: Downstream) -> None:
        gw = gateway_process({"relay": {"port": downstream.port}})
        smtplib.SMTP(gw.host, gw.port, timeout=10) ...
        gw.kill()        # SIGKILL, no cleanup
        gw.start()       # same config and storage, same port

The config given is merged over test defaults (port 0 on 127.0.0.1, storage in tmp_path,
the shipped rules, antivirus and classifier off unless asked, DNS answered by the loopback
test server: NXDOMAIN for every name no test zone covers). Everything started is stopped by pid.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from gateway.config import SHIPPED_RULES_DIR
from tests.support.dns_server import DnsTestServer
from tests.support.gateway_fixture import merge

# CI runs as root: `serve` then refuses without [process] user; "root" stays root knowingly.
STAY_AS_WE_ARE: dict[str, Any] = {"process": {"user": "root"}} if os.geteuid() == 0 else {}
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 45.0
READY_PREFIX = "gateway: listening on "


def default_config(storage: Path, nameserver: str) -> dict[str, Any]:
    return {
        "dns": {"nameservers": [nameserver], "timeout_s": 0.5, "lifetime_s": 1.0},
        "smtp": {"listen": "127.0.0.1:0", "hostname": "mx.gateway.test"},
        "relay": {"host": "127.0.0.1", "domains": ["example.test"], "tls": "none"},
        "queue": {
            "retry_initial_s": 0.2,
            "retry_max_s": 1.0,
            "scan_interval_s": 0.2,
            "min_free_bytes": 1,
        },
        "storage": {"dir": str(storage)},
        "pipeline": {"rules_dir": str(SHIPPED_RULES_DIR)},
        "checks": {"antivirus": {"enabled": False}, "classifier": {"enabled": False}},
        **STAY_AS_WE_ARE,
    }


class GatewayProcess:
    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.host = "127.0.0.1"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (again); after the first start the same port is reused."""
        if self.port:
            self._pin_port()
        log = self.log_path.open("a", encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(self.config_path)],
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        self._wait_ready()

    def _pin_port(self) -> None:
        import tomllib

        data = tomllib.loads(self.config_path.read_text(encoding="utf-8"))
        data["smtp"]["listen"] = f"{self.host}:{self.port}"
        self.config_path.write_text(tomli_w.dumps(data), encoding="utf-8")

    def _wait_ready(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + START_TIMEOUT_S
        buffer = ""
        while time.monotonic() < deadline:
            readable, _, _ = select.select([fd], [], [], 0.1)
            chunk = os.read(fd, 4096).decode(errors="replace") if readable else ""
            if chunk:
                buffer += chunk
                for line in buffer.splitlines():
                    if line.startswith(READY_PREFIX):
                        address = line[len(READY_PREFIX) :].strip()
                        host, _, port = address.rpartition(":")
                        self.host, self.port = host.strip("[]"), int(port)
                        return
            if self.process.poll() is not None:
                raise AssertionError(
                    f"gateway exited with {self.process.returncode}: {self.log_tail()}"
                )
        self.kill()
        raise AssertionError(f"gateway not ready within {START_TIMEOUT_S}s: {self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL: the crash case, nothing is flushed or cleaned up."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def terminate(self) -> int:
        """SIGTERM and wait for the clean exit; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.terminate()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()


GatewayProcessFactory = Callable[..., GatewayProcess]


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `predicate` every 0.1 s until it holds (True) or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def gateway_process(tmp_path: Path, dns_server: DnsTestServer) -> Iterator[GatewayProcessFactory]:
    dns_server.set_zone(".", {})
    started: list[GatewayProcess] = []

    def factory(config: dict[str, Any], name: str = "gw") -> GatewayProcess:
        directory = tmp_path / name
        directory.mkdir()
        data = merge(default_config(directory / "var", dns_server.address), config)
        config_path = directory / "gateway.toml"
        config_path.write_text(tomli_w.dumps(data), encoding="utf-8")
        gateway = GatewayProcess(config_path, directory / "gateway.log")
        started.append(gateway)
        gateway.start()
        return gateway

    yield factory
    for gateway in started:
        gateway.stop()
