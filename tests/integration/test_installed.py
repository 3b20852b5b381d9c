"""Issue 23's "done when": the wheel, installed into a fresh venv in a temp dir, run from
outside the checkout as an admin would: `gateway init`, `check-config`, `serve` started as root
on 127.0.0.1:25 (a free high port when 25 is taken; the uid checks are the same), dropping to
`nobody`; every process that handles mail runs as nobody, a message reaches the internal server,
metrics are scraped. Each bad input is one line on stderr and exit 2, never a traceback.

The venv is fresh but not downloaded into: the wheel is installed with --no-deps --no-index,
and its dependencies come from the project venv's site-packages through a .pth line (a path
added so does not run that venv's own .pth files: the checkout's editable install stays out).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import select
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import PROJECT_ROOT
from tests.support.clamd_fixture import free_port
from tests.support.dns_server import DnsTestServer
from tests.support.downstream import Downstream, make_self_signed_cert

START_TIMEOUT_S = 40.0
SOURCE_FILES = ("pyproject.toml", "setup.py", "README.md", "gateway", "training", "rules", "models")
READY_PREFIX = "gateway: listening on "

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="serve must be started as root to test the privilege drop (CI is)"
)


@dataclass
class Installed:
    root: Path  # the temp dir: venv, config dir, storage; outside the checkout
    gateway: Path  # the venv's `gateway` command
    etc: Path

    def run(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.gateway), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env=_clean_env(),
        )


def _clean_env() -> dict[str, str]:
    # No PYTHONPATH or the like pointing back into the checkout.
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def _traversable_by_all(path: Path) -> bool:
    return all(os.stat(p).st_mode & 0o005 == 0o005 for p in [path, *path.parents])


def _stdlib(python: str) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['stdlib'])"
    return Path(subprocess.check_output([python, "-c", code], text=True, timeout=30).strip())


def _interpreter_for_nobody() -> str | None:
    """A Python of the same version whose library `nobody` can read: this one, or Debian's
    (a pyenv Python under /root, as on the CI machine, is not; `serve` refuses it: tested)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, f"/usr/bin/{version}"):
        if Path(python).exists() and _traversable_by_all(_stdlib(python)):
            return python
    return None


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    site_packages = Path(sysconfig.get_paths()["purelib"])
    if not _traversable_by_all(site_packages):
        pytest.skip(f"{site_packages} is not readable by nobody: the dropped gateway needs it")
    python = _interpreter_for_nobody()
    if python is None:
        pytest.skip("no Python readable by nobody (install Debian's python3) to drop to it")
    root = Path(tempfile.mkdtemp(prefix="mailgate-installed-", dir="/tmp"))
    root.chmod(0o755)  # nobody reads the venv and the rules below it
    try:
        # Built from a copy of what the wheel is made of: `make test` writes nothing into the
        # checkout (setuptools would leave build/ there, whose stale files later wheels take).
        source = root / "source"
        source.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for name in SOURCE_FILES:
            if (PROJECT_ROOT / name).is_dir():
                shutil.copytree(PROJECT_ROOT / name, source / name, ignore=ignore)
            else:
                shutil.copy2(PROJECT_ROOT / name, source / name)
        dist = root / "dist"
        subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(dist)],
            cwd=source,
            check=True,
            capture_output=True,
            timeout=120,
        )
        (wheel,) = dist.glob("mailgate-*.whl")
        venv = root / "venv"
        subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
        fresh_site = next((venv / "lib").glob("python3*/site-packages"))
        (fresh_site / "project-deps.pth").write_text(f"{site_packages}\n")
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")),
                *("install", "--quiet", "--no-deps", "--no-index", str(wheel)),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield Installed(root, venv / "bin" / "gateway", root / "etc")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_wheel_carries_rules_and_model_and_imports_nothing_from_the_checkout(
    installed: Installed,
) -> None:
    probe = (
        "import gateway.config as c; print(c.INSTALLED, c.SHIPPED_RULES_DIR, c.SHIPPED_MODEL, "
        "c.StorageConfig().dir)"
    )
    python = installed.gateway.parent / "python"
    out = subprocess.run(
        [str(python), "-c", probe],
        cwd=installed.root,
        capture_output=True,
        text=True,
        check=True,
        env=_clean_env(),
    ).stdout.split()
    assert out[0] == "True"
    assert out[1].startswith(str(installed.root)) and out[1].endswith("gateway/_shipped/rules")
    assert Path(out[2]).is_file() and out[2].startswith(str(installed.root))
    assert out[3] == "/var/lib/mailgate"


def test_init_writes_config_and_rules_and_refuses_to_overwrite(installed: Installed) -> None:
    target = installed.root / "init-once"
    first = installed.run("init", str(target))
    assert first.returncode == 0, first.stderr
    assert "next:" in first.stdout and "check-config" in first.stdout
    assert {"gateway.toml", "scores.toml", "actions.toml"} <= {p.name for p in target.iterdir()}
    assert 'dir = "/var/lib/mailgate"' in (target / "gateway.toml").read_text()
    # The config as written is valid, with its rules found beside it (a warning: no storage).
    check = installed.run("check-config", "--config", str(target / "gateway.toml"))
    assert check.returncode == 0, check.stderr
    assert ": ok (" in check.stdout
    again = installed.run("init", str(target))
    assert again.returncode == 2 and "--force" in again.stderr
    assert len(again.stderr.splitlines()) == 1
    assert installed.run("init", str(target), "--force").returncode == 0


def _port_25_free() -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", 25))
        except OSError:
            return False
    return True


def _write_config(
    installed: Installed, name: str, smtp_port: int, changes: dict[str, dict[str, object]]
) -> Path:
    """`gateway init` into its own dir, then the site's values, as an admin edits them."""
    etc = installed.root / name
    assert installed.run("init", str(etc)).returncode == 0
    config_path = etc / "gateway.toml"
    data = tomllib.loads(config_path.read_text())
    data["smtp"]["listen"] = f"127.0.0.1:{smtp_port}"
    data["storage"]["dir"] = str(installed.root / f"var-{name}")
    data["process"]["user"] = "nobody"
    data["checks"]["antivirus"] = {"enabled": False}
    for table, values in changes.items():
        data.setdefault(table, {}).update(values)
    config_path.write_text(tomli_w.dumps(data))
    return config_path


def _uids(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return {int(v) for v in line.split()[1:]}
    raise AssertionError(f"no Uid line for {pid}")


def _workers(pid: int) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    children = [int(p) for p in path.read_text().split()] if path.exists() else []
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@contextlib.contextmanager
def _serving(installed: Installed, config: Path) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [str(installed.gateway), "serve", "--config", str(config)],
        cwd=installed.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_clean_env(),
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        line = ""
        while time.monotonic() < deadline and not line.startswith(READY_PREFIX):
            if select.select([process.stdout], [], [], 0.5)[0]:
                line = process.stdout.readline()
            if process.poll() is not None:
                raise AssertionError(f"serve exited {process.returncode}: {process.stderr.read()}")
        assert line.startswith(READY_PREFIX), "serve not ready in time"
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=45)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_as_root_on_port_25_drops_to_nobody_delivers_and_is_scraped(
    installed: Installed, dns_server: DnsTestServer, downstream: Downstream, workers: int
) -> None:
    dns_server.set_zone(".", {})
    # 127.0.0.1:25 when free (CI): the privileged port is the point; else a high port, with
    # the same uid checks (the bind as root happens either way).
    smtp_port = 25 if workers == 1 and _port_25_free() else free_port()
    metrics_listen = f"127.0.0.1:{free_port()}"
    config = _write_config(
        installed,
        f"etc-{workers}",
        smtp_port,
        {
            "smtp": {"workers": workers},
            "relay": {"port": downstream.port, "domains": ["example.test"], "tls": "none"},
            "dns": {"nameservers": [dns_server.address], "timeout_s": 0.5, "lifetime_s": 1.0},
            "queue": {"min_free_bytes": 1},
            "metrics": {"listen": metrics_listen},
        },
    )
    check = installed.run("check-config", "--config", str(config))
    assert check.returncode == 0, check.stderr
    nobody = pwd.getpwnam("nobody")
    with _serving(installed, config) as process:
        mail_handlers = _workers(process.pid) if workers > 1 else [process.pid]
        assert len(mail_handlers) == workers
        for pid in mail_handlers:
            assert _uids(pid) == {nobody.pw_uid}, f"pid {pid} runs as {_uids(pid)}"
        storage = Path(tomllib.loads(config.read_text())["storage"]["dir"])
        assert storage.stat().st_uid == nobody.pw_uid  # created for the user
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
            client.sendmail(
                "a@sender.test",
                ["b@example.test"],
                "From: a@sender.test\r\nTo: b@example.test\r\nSubject: installed\r\n\r\nhi\r\n",
            )
        (message,) = downstream.wait_for(1, timeout_s=20)
        assert b"Subject: installed" in message.data
        with urllib.request.urlopen(f"http://{metrics_listen}/metrics", timeout=10) as response:
            text = response.read().decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("mailgate_transactions_total", (("action", "accept"),))] == 1
        model = next(dict(k[1])["model"] for k in samples if k[0] == "mailgate_build_info")
        assert model.startswith("classifier.skops@")  # the shipped model, read as nobody


def test_admin_commands_run_by_root_leave_the_storage_to_the_user(
    installed: Installed, dns_server: DnsTestServer, downstream: Downstream
) -> None:
    """quarantine, queue and learn as root work as [process] user: a file they create in the
    storage as root (the quarantine's SQLite journal) would lock the gateway out of it."""
    dns_server.set_zone(".", {})
    smtp_port = free_port()
    config = _write_config(
        installed,
        "admin",
        smtp_port,
        {
            "relay": {"port": downstream.port, "domains": ["example.test"], "tls": "none"},
            "dns": {"nameservers": [dns_server.address], "timeout_s": 0.5, "lifetime_s": 1.0},
            "queue": {"min_free_bytes": 1},
        },
    )
    with _serving(installed, config), smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
        client.sendmail(
            "a@sender.test",
            ["b@example.test"],
            "From: a@sender.test\r\nSubject: held\r\n\r\n"
            "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-QUARANTINE*C.34X\r\n",
        )
    message = installed.root / "spam.eml"
    message.write_text("From: a@sender.test\nSubject: x\n\nbuy now\n")
    message.chmod(0o644)
    for command in (["quarantine", "list"], ["queue", "list"], ["learn", "--spam", str(message)]):
        result = installed.run(*command, "--config", str(config))
        assert result.returncode == 0, (command, result.stderr)
    storage = Path(tomllib.loads(config.read_text())["storage"]["dir"])
    nobody = pwd.getpwnam("nobody").pw_uid
    files = list(storage.rglob("*"))
    assert any("quarantine" in p.parts for p in files), files
    assert any("feedback" in p.parts and p.suffix == ".eml" for p in files), files
    # serve.lock is root's: serve, started as root, takes the lock before the drop.
    not_nobody = [str(p) for p in files if p.stat().st_uid != nobody and p.name != "serve.lock"]
    assert not_nobody == []


def _one_line_exit_2(result: subprocess.CompletedProcess[str], expected: str) -> None:
    """One line of error (warnings may come before it), exit 2, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip()
        and not line.startswith("gateway: warning: ")
        and " WARNING " not in line  # a log line in [log] format "text"
        and '"level":"WARNING"' not in line  # in "json", the default off a terminal
    ]
    assert len(lines) == 1 and lines[0].startswith("gateway: "), result.stderr
    assert expected.lower() in lines[0].lower(), lines[0]


def test_each_bad_input_is_one_line_and_exit_2(installed: Installed, tmp_path: Path) -> None:
    def serve(config: Path) -> subprocess.CompletedProcess[str]:
        return installed.run("serve", "--config", str(config), timeout_s=30)

    unknown = _write_config(installed, "bad-user", free_port(), {"process": {"user": "nosuch"}})
    _one_line_exit_2(serve(unknown), "no such user 'nosuch'")
    _one_line_exit_2(installed.run("check-config", "--config", str(unknown)), "no such user")

    no_user = _write_config(installed, "no-user", free_port(), {"process": {"user": ""}})
    _one_line_exit_2(serve(no_user), "started as root without [process] user")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        in_use = _write_config(installed, "in-use", port, {})
        _one_line_exit_2(serve(in_use), f"cannot listen on 127.0.0.1:{port}")
        metrics_in_use = _write_config(
            installed, "metrics-in-use", free_port(), {"metrics": {"listen": f"127.0.0.1:{port}"}}
        )
        _one_line_exit_2(serve(metrics_in_use), f"cannot listen on 127.0.0.1:{port}")

    # Storage owned by root while the gateway runs as nobody; then world-writable.
    not_ours = _write_config(installed, "not-ours", free_port(), {})
    storage = Path(tomllib.loads(not_ours.read_text())["storage"]["dir"])
    storage.mkdir(mode=0o700)
    _one_line_exit_2(serve(not_ours), "owned by root, not by nobody")
    _one_line_exit_2(installed.run("check-config", "--config", str(not_ours)), "owned by root")
    os.chown(storage, pwd.getpwnam("nobody").pw_uid, -1)
    storage.chmod(0o777)
    _one_line_exit_2(serve(not_ours), "writable by every user")

    if not _traversable_by_all(_stdlib(sys.executable)):
        # The test's own Python (pyenv under /root here): nobody could import nothing more.
        unreadable = _write_config(installed, "unreadable-python", free_port(), {})
        own_gateway = Path(sys.executable).parent / "gateway"
        result = subprocess.run(
            [str(own_gateway), "serve", "--config", str(unreadable)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        _one_line_exit_2(result, "is not readable by [process] user nobody")

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    cert, key = make_self_signed_cert(tmp_path / "a")
    other_cert, _ = make_self_signed_cert(tmp_path / "b")
    for name, pair, expected in [
        ("cert-missing", (tmp_path / "none.pem", key), "No such file"),
        ("cert-mismatch", (other_cert, key), "KEY_VALUES_MISMATCH"),
        ("cert-garbage", (key, key), "tls_cert"),
    ]:
        smtp = {"tls_cert": str(pair[0]), "tls_key": str(pair[1])}
        broken = _write_config(installed, name, free_port(), {"smtp": smtp})
        _one_line_exit_2(serve(broken), expected)
        _one_line_exit_2(installed.run("check-config", "--config", str(broken)), expected)
    # A good pair the user could not read again on SIGHUP (pytest's tmp dirs are root's, 0700).
    smtp = {"tls_cert": str(cert), "tls_key": str(key)}
    hidden = _write_config(installed, "cert-hidden", free_port(), {"smtp": smtp})
    _one_line_exit_2(serve(hidden), "is not readable by [process] user nobody")
