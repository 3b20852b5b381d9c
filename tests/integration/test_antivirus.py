"""The antivirus check against a real clamd, a stopped one, and misbehaving fake servers."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.checks.antivirus import AntivirusCheck
from gateway.config import SHIPPED_RULES_DIR
from gateway.errors import ScannerError
from gateway.model import Action, Phase
from gateway.net.clamd import ClamdClient, parse_address
from gateway.pipeline.engine import Pipeline
from gateway.pipeline.scoring import load_policy
from tests.support.attachments_mail import message, nested_zip, transaction, zip_of
from tests.support.clamd_fixture import (
    EICAR,
    EICAR_SIGNATURE,
    MAX_RECURSION,
    STREAM_MAX_BYTES,
    ClamdServer,
    start_clamd,
    stop_clamd,
)

FOUND = f"{EICAR_SIGNATURE}.UNOFFICIAL"  # clamd marks signatures outside the official DBs
MAX_SCAN_BYTES = 10 * 1024 * 1024


def check_for(
    address: str, timeout_s: float = 5.0, max_scan: int = MAX_SCAN_BYTES
) -> AntivirusCheck:
    return AntivirusCheck(ClamdClient(parse_address(address), timeout_s), max_scan)


def symbols(check: AntivirusCheck, raw: bytes) -> dict[str, str]:
    result = asyncio.run(check.run(transaction(raw)))
    return {s.name: s.reason for s in result.symbols}


def verdict(check: AntivirusCheck, raw: bytes) -> tuple[Action, str | None, dict[str, str]]:
    """Through the pipeline (runner + shipped scores/actions) as the SMTP layer runs it."""
    pipeline = Pipeline([check], load_policy(SHIPPED_RULES_DIR), deadline_s=30.0)
    outcome = asyncio.run(pipeline.run_phase(Phase.DATA, transaction(raw), final=True))
    named = {s.name: s.reason for s in outcome.verdict.symbols}
    return outcome.verdict.action, outcome.verdict.reply, named


# --- the real clamd ----------------------------------------------------------------------------


def test_clamd_starts_quickly(clamd_server: ClamdServer) -> None:
    assert clamd_server.start_s < 10.0


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"From: a@origin.test\r\nSubject: t\r\n\r\n" + EICAR + b"\r\n", id="body"),
        pytest.param(message(("eicar.com", EICAR)), id="base64-attachment"),
        pytest.param(message(("eicar.zip", zip_of(("eicar.com", EICAR)))), id="zip"),
        pytest.param(message(("outer.zip", nested_zip("eicar.com", EICAR, 2))), id="zip-in-zip"),
    ],
)
def test_eicar_is_found_and_rejected(clamd_server: ClamdServer, raw: bytes) -> None:
    check = check_for(clamd_server.address)
    assert symbols(check, raw) == {"AV_VIRUS": FOUND}
    action, reply, _ = verdict(check, raw)
    assert (action, reply) == (Action.REJECT, f"554 5.7.0 Virus found: {FOUND}")


def test_clean_attachment_passes(clamd_server: ClamdServer) -> None:
    raw = message(("report.pdf", b"%PDF-1.7\n" + bytes(4000)), ("a.zip", zip_of(("x.txt", b"hi"))))
    assert symbols(check_for(clamd_server.address), raw) == {}
    assert verdict(check_for(clamd_server.address), raw)[0] == Action.ACCEPT


def test_unix_socket_address(clamd_server: ClamdServer) -> None:
    check = check_for(clamd_server.unix_socket)
    assert symbols(check, message(("eicar.com", EICAR))) == {"AV_VIRUS": FOUND}


def test_nesting_beyond_clamd_limits_is_unscannable_and_quarantined(
    clamd_server: ClamdServer,
) -> None:
    raw = message(("deep.zip", nested_zip("eicar.com", EICAR, MAX_RECURSION + 2)))
    check = check_for(clamd_server.address)
    assert symbols(check, raw) == {"AV_UNSCANNABLE": "Heuristics.Limits.Exceeded.MaxRecursion"}
    assert verdict(check, raw)[0] == Action.QUARANTINE


def test_message_over_max_scan_bytes_is_not_sent_and_follows_the_policy(
    clamd_server: ClamdServer,
) -> None:
    raw = message(("eicar.com", EICAR))
    check = check_for(clamd_server.address, max_scan=len(raw) - 1)
    assert symbols(check, raw) == {"AV_OVERSIZE": f"size={len(raw)} max_scan_bytes={len(raw) - 1}"}
    assert verdict(check, raw)[0] == Action.QUARANTINE


def test_message_over_clamd_stream_limit_is_oversize_not_clean(clamd_server: ClamdServer) -> None:
    raw = message(("big.bin", bytes(STREAM_MAX_BYTES)))  # base64 makes it a third larger
    found = symbols(check_for(clamd_server.address), raw)
    assert list(found) == ["AV_OVERSIZE"]
    assert "exceeds clamd StreamMaxLength" in found["AV_OVERSIZE"]


# --- clamd unavailable or misbehaving: AV_ERROR and 451, never a pass ---------------------------


def assert_tempfails(check: AntivirusCheck, expected_reason: str) -> None:
    action, _, named = verdict(check, message(("eicar.com", EICAR)))
    assert action == Action.TEMPFAIL
    assert list(named) == ["AV_ERROR"]
    assert expected_reason in named["AV_ERROR"]


def test_clamd_stopped() -> None:
    with tempfile.TemporaryDirectory() as directory:
        server, process = start_clamd(Path(directory))
        stop_clamd(process)
        assert_tempfails(
            check_for(server.address), f"clamd at {server.address}: Connection refused"
        )
        assert_tempfails(check_for(server.unix_socket), f"clamd at {server.unix_socket}")


DEAF = "deaf"  # accept, then neither read nor answer


class _FakeClamd(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, reply: bytes | str | None) -> None:
        self.reply = reply  # None: accept, read, never answer
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", 0), _FakeHandler)

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.server_address[1]}"


class _FakeHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        assert isinstance(self.server, _FakeClamd)
        conn: socket.socket = self.request
        conn.settimeout(10.0)
        if self.server.reply == DEAF:
            self.server.stopping.wait(10.0)
            return
        try:
            conn.recv(65536)
            if isinstance(self.server.reply, bytes):
                conn.sendall(self.server.reply)
                if not self.server.reply.endswith(b"\0"):
                    conn.shutdown(socket.SHUT_WR)  # an unterminated reply, then clamd hangs up
            while conn.recv(65536):  # drain, so closing sends FIN rather than RST
                pass
        except OSError:
            pass


@pytest.fixture
def fake_clamd(request: pytest.FixtureRequest) -> Iterator[_FakeClamd]:
    server = _FakeClamd(request.param)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("fake_clamd", [None], indirect=True)
def test_socket_that_never_answers_times_out(fake_clamd: _FakeClamd) -> None:
    assert_tempfails(check_for(fake_clamd.address, timeout_s=0.5), "did not answer within 0.5s")


@pytest.mark.parametrize("fake_clamd", [DEAF], indirect=True)
def test_socket_that_never_reads_times_out_with_a_large_message(fake_clamd: _FakeClamd) -> None:
    check = check_for(fake_clamd.address, timeout_s=0.5)
    raw = message(("big.bin", bytes(6 * 1024 * 1024)))  # far more than the socket buffers
    assert len(raw) < MAX_SCAN_BYTES
    started = time.monotonic()
    with pytest.raises(ScannerError, match=r"did not answer within 0\.5s"):
        asyncio.run(check.run(transaction(raw)))
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    ("fake_clamd", "reason"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n\0", "unexpected clamd reply"),
        (b"stream: OK and more\0", "unexpected clamd reply"),
        (b"stream:  FOUND\0", "unexpected clamd reply"),
        (b"stream: Can't allocate memory ERROR\0", "clamd error: stream: Can't allocate memory"),
        (b"stream: OK", "closed the connection without a complete reply"),
        (b"A" * 10000, "sent an over-long reply"),
    ],
    indirect=["fake_clamd"],
)
def test_garbage_replies_are_errors(fake_clamd: _FakeClamd, reason: str) -> None:
    assert_tempfails(check_for(fake_clamd.address), reason)


@pytest.mark.parametrize("fake_clamd", [b"stream: Heuristics.Encrypted.Zip FOUND\0"], indirect=True)
def test_encrypted_archive_report_is_unscannable(fake_clamd: _FakeClamd) -> None:
    raw = message(("locked.zip", b"PK"))
    assert symbols(check_for(fake_clamd.address), raw) == {
        "AV_UNSCANNABLE": "Heuristics.Encrypted.Zip"
    }
