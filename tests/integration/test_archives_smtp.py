"""Attachments that hid from the checks (tar, gz, bz2, xz, 7z, rar; uuencode and yEnc in the
text; an archive entry larger than clamd scans), sent over SMTP to the real gateway with a
real clamd."""

from __future__ import annotations

import binascii
import bz2
import gzip
import lzma
import os
from collections.abc import Iterator

import pytest

from gateway.quarantine.store import Filter
from gateway.smtp import replies
from tests.support.attachments_mail import message, rar_of, seven_zip_of, tar_of, zip_of
from tests.support.clamd_fixture import EICAR, ClamdServer, start_clamd, stop_clamd
from tests.support.gateway_fixture import GatewayFactory, RunningGateway, only_checks

PE_FILE = b"MZ\x90\x00" + bytes(0x38) + (0x40).to_bytes(4, "little") + b"PE\0\0" + bytes(200)
NOT_ALLOWED = "554 5.7.1 Attachment type not allowed: file="
STOCK_MAX_FILE_BYTES = 1024 * 1024  # the stock clamd's MaxFileSize here (100M by default)


def start(factory: GatewayFactory, address: str, **antivirus: object) -> RunningGateway:
    checks = only_checks("headers", "antivirus", "attachments")
    checks["antivirus"].update({"address": address, "timeout_s": 5.0, **antivirus})
    return factory({"checks": checks})


def send(gateway: RunningGateway, raw: bytes) -> str:
    with gateway.client() as smtp:
        smtp.ehlo()
        assert smtp.mail("sender@origin.test")[0] == 250
        assert smtp.rcpt("user@example.test")[0] == 250
        code, text = smtp.data(raw)
    return f"{code} {text.decode()}"


def uuencoded(name: str, data: bytes) -> str:
    lines = [binascii.b2a_uu(data[i : i + 45]).decode() for i in range(0, len(data), 45)]
    return f"begin 644 {name}\n{''.join(lines)}`\nend\n"


def yencoded(name: str, data: bytes) -> str:
    out = bytearray()
    for byte in data:
        value = (byte + 42) % 256
        out += bytes([61, (value + 64) % 256]) if value in (0, 10, 13, 61) else bytes([value])
    head = f"=ybegin line=128 size={len(data)} name={name}\n".encode()
    return (head + bytes(out) + f"\n=yend size={len(data)}\n".encode()).decode("latin-1")


@pytest.fixture
def gateway(gateway_factory: GatewayFactory, clamd_server: ClamdServer) -> RunningGateway:
    return start(gateway_factory, clamd_server.address)


@pytest.mark.parametrize(
    ("raw", "file"),
    [
        pytest.param(
            message(body="Invoice attached.\n\n" + uuencoded("invoice.exe", b"hello") + "\nBye\n"),
            "invoice.exe extension .exe",
            id="uuencode-in-text",
        ),
        pytest.param(
            message(body="Hi\n" + yencoded("x.exe", bytes(range(256))), charset="latin-1"),
            "x.exe extension .exe",
            id="yenc-in-text",
        ),
        pytest.param(
            message(("a.tar.gz", tar_of(("invoice.exe", b"x"), compression="gz"))),
            "a.tar.gz/invoice.exe extension .exe",
            id="exe-in-tar.gz",
        ),
        pytest.param(
            message(("a.tgz", tar_of(("invoice.js", b"x"), compression="gz"))),
            "a.tgz/invoice.js extension .js",
            id="js-in-tgz",
        ),
        pytest.param(
            message(("a.tar", tar_of(("photo.lnk", b"x")))),
            "a.tar/photo.lnk extension .lnk",
            id="lnk-in-tar",
        ),
        pytest.param(
            message(("scan.pdf.gz", gzip.compress(PE_FILE))),
            "scan.pdf.gz/scan.pdf content Windows executable (PE)",
            id="pe-in-gz",
        ),
        pytest.param(
            message(("scan.pdf.xz", lzma.compress(PE_FILE))),
            "scan.pdf.xz/scan.pdf content Windows executable (PE)",
            id="pe-in-xz",
        ),
        pytest.param(
            message(("scan.pdf.bz2", bz2.compress(PE_FILE))),
            "scan.pdf.bz2/scan.pdf content Windows executable (PE)",
            id="pe-in-bz2",
        ),
        pytest.param(
            message(("a.tar.zst", tar_of(("setup.exe", b"x"), compression="zst"))),
            "a.tar.zst/setup.exe extension .exe",
            id="exe-in-tar.zst",
        ),
        pytest.param(
            message(("a.7z", seven_zip_of(("setup.exe", b"x")))),
            "a.7z/setup.exe extension .exe",
            id="exe-in-7z",
        ),
        pytest.param(
            message(("a.rar", rar_of("setup.scr", b"x"))),
            "a.rar/setup.scr extension .scr",
            id="scr-in-rar",
        ),
        pytest.param(
            message(("a.tar.gz", tar_of(("in.zip", zip_of(("run.hta", b"x"))), compression="gz"))),
            "a.tar.gz/in.zip/run.hta extension .hta",
            id="zip-in-tar.gz",
        ),
    ],
)
def test_hidden_attachment_is_rejected(gateway: RunningGateway, raw: bytes, file: str) -> None:
    assert send(gateway, raw) == NOT_ALLOWED + file
    assert gateway.spool.ids() == []


@pytest.fixture(scope="module")
def stock_clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    """clamd as shipped: no AlertExceedsMax, so a file over MaxFileSize is "OK" unscanned."""
    server, process = start_clamd(
        tmp_path_factory.mktemp("stock-clamd"),
        alert_exceeds_max=False,
        max_file_bytes=STOCK_MAX_FILE_BYTES,
    )
    try:
        yield server
    finally:
        stop_clamd(process)


def test_entry_larger_than_clamd_scans_is_held(
    gateway_factory: GatewayFactory, stock_clamd: ClamdServer
) -> None:
    # The attacker's 110 MB entry in a 1.9 MB message, scaled down: EICAR at the end of an
    # entry larger than MaxFileSize, which this clamd skips and calls clean.
    log = b"".join(b"2026-12-08 04:%05d GET /index.html 200\n" % i for i in range(30_000))
    entry = log + EICAR  # 1.2 MB of log lines: the message stays under MaxFileSize itself
    raw = message(("logs.tar.gz", tar_of(("big.log", entry), compression="gz")))
    assert len(raw) < STOCK_MAX_FILE_BYTES
    gateway = start(gateway_factory, stock_clamd.address, max_file_bytes=STOCK_MAX_FILE_BYTES)
    reply = send(gateway, raw)
    [held] = gateway.quarantine.find(Filter())
    assert reply == replies.held(held.id)
    assert gateway.spool.ids() == []
    [symbol] = [s for s in held.symbols if s.name == "AV_UNSCANNABLE"]
    assert symbol.check == "attachments"
    assert symbol.reason.startswith(f"file=logs.tar.gz/big.log {len(entry)} bytes, more than")
    # Below the limit this clamd finds the same virus: it is the size that hid it.
    small = message(("logs.tar.gz", tar_of(("big.log", EICAR), compression="gz")))
    assert send(gateway, small) == "554 5.7.0 Virus found: Eicar-Test-Signature.UNOFFICIAL"


def test_message_larger_than_clamd_scans_is_held(
    gateway_factory: GatewayFactory, stock_clamd: ClamdServer
) -> None:
    # MaxFileSize applies to the stream itself: a message over it is skipped whole ("OK").
    raw = message(("data.bin", os.urandom(STOCK_MAX_FILE_BYTES) + EICAR))
    gateway = start(gateway_factory, stock_clamd.address, max_file_bytes=STOCK_MAX_FILE_BYTES)
    reply = send(gateway, raw)
    [held] = gateway.quarantine.find(Filter())
    assert reply == replies.held(held.id)
    [symbol] = [s for s in held.symbols if s.name == "AV_UNSCANNABLE"]
    assert (symbol.check, symbol.reason) == ("antivirus", f"size={len(raw)} max_file_bytes=1048576")
