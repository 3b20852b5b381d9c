"""`gateway scan` and `gateway check-config` on odd input: each test failed before its fix."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

from gateway import cli
from gateway.config import SHIPPED_RULES_DIR
from tests.support.gateway_fixture import only_checks
from tests.support.gateway_process import STAY_AS_WE_ARE

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
MBOX = (
    b"From alice@sender.test Mon Jan  1 00:00:00 2024\n"
    b"From: alice@sender.test\nSubject: one\n\nclean\n>From the quoted line\n\n"
    b"From bob@sender.test Mon Jan  1 00:00:01 2024\n"
    b"From: bob@sender.test\nSubject: two\n\n" + GTUBE + b"\n"
)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    config = {
        "relay": {"domains": ["example.test"]},
        "storage": {"dir": str(tmp_path / "var")},
        "pipeline": {"rules_dir": str(SHIPPED_RULES_DIR)},
        **STAY_AS_WE_ARE,
        "checks": only_checks("headers", "gtube"),
    }
    path.write_bytes(tomli_w.dumps(config).encode())
    return path


def scan_json(
    config_path: Path, capsys: pytest.CaptureFixture[str], *files: Path
) -> tuple[int, list[dict[str, object]], str]:
    code = cli.main(["scan", "--config", str(config_path), "--json", *map(str, files)])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def serve(config_path: Path) -> subprocess.CompletedProcess[str]:
    """`gateway serve` expected to fail at start-up (so it returns on its own)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_scan_gives_each_message_of_an_mbox_its_own_verdict(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mbox = tmp_path / "box.mbox"
    mbox.write_bytes(MBOX)
    code, results, _ = scan_json(config_path, capsys, mbox)
    assert code == 0
    assert [(r["file"], r["action"]) for r in results] == [
        (f"{mbox}#1", "accept"),
        (f"{mbox}#2", "reject"),
    ]


def test_scan_of_a_directory_scans_the_messages_in_it(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mail"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "spam.eml").write_bytes(b"From: x@sender.test\r\n\r\n" + GTUBE + b"\r\n")
    (folder / "empty").write_bytes(b"")
    code, results, err = scan_json(config_path, capsys, folder)
    assert [(r["file"], r["action"]) for r in results] == [(f"{folder}/sub/spam.eml", "reject")]
    assert f"{folder}/empty: skipped: empty" in err
    assert code == 1


def test_scan_of_odd_single_files_still_gives_verdicts(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty, garbage = tmp_path / "empty.eml", tmp_path / "garbage.bin"
    empty.write_bytes(b"")
    garbage.write_bytes(bytes(range(256)) * 40)
    code, results, _ = scan_json(config_path, capsys, empty, garbage)
    assert code == 0
    assert [r["file"] for r in results] == [str(empty), str(garbage)]


def test_check_config_on_a_file_that_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[smtp]\nbanner = "caf\xe9"\n')
    assert cli.main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"gateway: {path}: invalid TOML: not UTF-8 (byte 20: invalid continuation byte)"
    ]


def test_check_config_on_a_rules_file_that_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(SHIPPED_RULES_DIR, rules)
    (rules / "scores.toml").write_bytes(b'[symbol.X]\ndescription = "caf\xe9"\n')
    path = tmp_path / "gateway.toml"
    path.write_text(f'[relay]\ndomains = ["example.test"]\n[pipeline]\nrules_dir = "{rules}"\n')
    assert cli.main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "scores.toml: invalid TOML: not UTF-8" in err and "Traceback" not in err


def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path: Path, config_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = tomllib.loads(config_path.read_text())
        config["smtp"] = {"listen": f"127.0.0.1:{port}"}
        config_path.write_text(tomli_w.dumps(config))
        done = serve(config_path)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"gateway: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "Traceback" not in done.stderr


def test_serve_with_an_unusable_storage_dir_says_so_in_one_line(
    tmp_path: Path, config_path: Path
) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    config = tomllib.loads(config_path.read_text())
    config["storage"] = {"dir": str(tmp_path / "a-file" / "var")}
    config["smtp"] = {"listen": "127.0.0.1:0"}
    config_path.write_text(tomli_w.dumps(config))
    done = serve(config_path)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"gateway: cannot use [storage] dir {tmp_path}/a-file/var: Not a directory"
    )
