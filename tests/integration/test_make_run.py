"""`make run` stops when make alone gets SIGINT or SIGTERM from a script or supervisor (issue
32): make passes SIGTERM on but only waits for its children after a SIGINT."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
STAMP = ".venv/.installed"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def read_line_until(proc: subprocess.Popen[str], prefix: str, timeout_s: float) -> str:
    """The first output line starting with `prefix` (read in a thread: a select() on the pipe
    would miss lines already in the reader's buffer)."""
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    deadline = time.monotonic() + timeout_s
    seen = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        seen.append(line)
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no {prefix!r} within {timeout_s} s: {''.join(seen)}")


@pytest.mark.parametrize(
    ("sig", "in_background"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGTERM, True)],
)
def test_make_run_stops_on_a_signal_to_make_alone(
    tmp_path: Path, sig: signal.Signals, in_background: bool
) -> None:
    """`in_background`: started as `make run &` from a script, make ignores SIGINT from the
    start; the recipe took that for "make got a SIGINT" and stopped the gateway at once."""
    if not (PROJECT / STAMP).exists():
        pytest.skip("make install first")
    gateway_port, sink_port = free_port(), free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[smtp]\nlisten = "127.0.0.1:{gateway_port}"\n'
        f'[relay]\nhost = "127.0.0.1"\nport = {sink_port}\ndomains = ["example.test"]\n'
        f'[storage]\ndir = "{tmp_path / "var"}"\n'
        "[checks.antivirus]\nenabled = false\n"
    )
    make = subprocess.Popen(
        # -o: never reinstall from inside a test, whatever the stamp's age.
        ["make", "-s", "-o", STAMP, "run", f"CONFIG={config}", f"SINK=127.0.0.1:{sink_port}"],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own group, so that a failed test can stop what it started
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        if in_background
        else None,
    )
    try:
        read_line_until(make, "gateway: listening on", 30.0)
        time.sleep(1.5)  # past the recipe's first looks at make
        assert listening(gateway_port) and listening(sink_port)
        make.send_signal(sig)  # to make only, as a script's `kill` does; not its group
        make.wait(timeout=20)
        assert not listening(gateway_port), "the gateway outlived make"
        assert not listening(sink_port), "the test sink outlived make"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(make.pid, signal.SIGKILL)
        make.wait(timeout=10)
