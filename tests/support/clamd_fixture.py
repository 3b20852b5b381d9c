"""A real clamd on loopback with a signature database the tests write (the EICAR test file).

freshclam is never run and no official database is used: ClamAV's own EICAR detection lives in
main.cvd, so the fixture writes an equivalent body signature (.ndb) of its own.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# The EICAR anti-virus test file, split so that this source file is not itself "infected".
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_SIGNATURE = "Eicar-Test-Signature"
STREAM_MAX_BYTES = 4 * 1024 * 1024  # clamd's StreamMaxLength in the tests
MAX_RECURSION = 10  # archive/MIME nesting clamd follows before Heuristics.Limits.Exceeded
_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ClamdServer:
    port: int
    pid: int
    start_s: float  # from exec to the first PONG
    directory: Path

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def unix_socket(self) -> str:
        return str(self.directory / "clamd.sock")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def ping(port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as conn:
            conn.sendall(b"zPING\0")
            return conn.recv(16) == b"PONG\0"
    except OSError:
        return False


def write_config(
    directory: Path, port: int, alert_exceeds_max: bool = True, max_file_bytes: int | None = None
) -> Path:
    """clamd.conf for the tests; `alert_exceeds_max=False` is a stock clamd, which calls a file
    over its limits (MaxFileSize: `max_file_bytes`, else clamd's default) clean unscanned."""
    database = directory / "db"
    database.mkdir(exist_ok=True)
    # Type 0 (any file), offset * (anywhere): matches EICAR in a body, an attachment or a zip.
    (database / "test.ndb").write_text(f"{EICAR_SIGNATURE}:0:*:{EICAR.hex()}\n")
    lines = [
        "Foreground yes",
        f"TCPSocket {port}",
        "TCPAddr 127.0.0.1",
        f"LocalSocket {directory / 'clamd.sock'}",
        f"DatabaseDirectory {database}",
        f"LogFile {directory / 'clamd.log'}",
        f"TemporaryDirectory {directory}",
        f"StreamMaxLength {STREAM_MAX_BYTES}",
        f"MaxRecursion {MAX_RECURSION}",
        # limits reached -> Heuristics.Limits.Exceeded.* (AV_UNSCANNABLE); see docs/clamd.md
        f"AlertExceedsMax {'yes' if alert_exceeds_max else 'no'}",
        "AlertEncrypted yes",  # encrypted archives -> Heuristics.Encrypted.* (AV_UNSCANNABLE)
        "Bytecode no",
    ]
    if max_file_bytes is not None:
        lines.append(f"MaxFileSize {max_file_bytes}")
    if os.geteuid() == 0:
        lines.append("User root")  # CI runs as root; clamd would otherwise try another user
    else:
        lines.append(f"User {getpass.getuser()}")
    config = directory / "clamd.conf"
    config.write_text("\n".join(lines) + "\n")
    return config


def start_clamd(
    directory: Path, alert_exceeds_max: bool = True, max_file_bytes: int | None = None
) -> tuple[ClamdServer, subprocess.Popen[bytes]]:
    binary = shutil.which("clamd") or "/usr/sbin/clamd"
    if not Path(binary).exists():
        pytest.fail("clamd is not installed: run .ci/install-clamav.sh (as root)")
    port = free_port()
    config = write_config(directory, port, alert_exceeds_max, max_file_bytes)
    output = (directory / "clamd.out").open("wb")
    started = time.monotonic()
    process = subprocess.Popen([binary, "-c", str(config)], stdout=output, stderr=output)
    output.close()
    while time.monotonic() - started < _START_TIMEOUT_S:
        if ping(port):
            server = ClamdServer(port, process.pid, time.monotonic() - started, directory)
            return server, process
        if process.poll() is not None:
            break
        time.sleep(0.05)
    stop_clamd(process)
    log = (directory / "clamd.out").read_text(errors="replace")[-2000:]
    pytest.fail(f"clamd did not answer PING on port {port}:\n{log}")


def stop_clamd(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, 15)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, 9)
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def clamd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    """One clamd for the whole session (start costs seconds: see ClamdServer.start_s)."""
    server, process = start_clamd(tmp_path_factory.mktemp("clamd"))
    try:
        yield server
    finally:
        stop_clamd(process)
