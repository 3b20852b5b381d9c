"""Archives other than zip (tar, gz, bz2, xz, 7z, rar) and files in the message text
(uuencode, yEnc), through the attachment check on real messages (no sockets)."""

from __future__ import annotations

import asyncio
import binascii
import bz2
import dataclasses
import gzip
import io
import lzma
import os
import time

import pytest

from gateway.checks.archive import ArchiveLimits, Budget, Kind, archive_kind, list_archive
from gateway.checks.attachments import AttachmentLimits, AttachmentsCheck
from gateway.checks.filetypes import load_type_rules
from gateway.checks.textfiles import MAX_TEXT_FILES, text_files
from gateway.config import SHIPPED_RULES_DIR, config_from_dict
from gateway.errors import ConfigError
from gateway.pipeline import registry
from tests.support.attachments_mail import (
    message,
    rar_of,
    seven_zip_of,
    tar_of,
    transaction,
    zip_of,
)

RULES = load_type_rules(SHIPPED_RULES_DIR / "attachments.toml")
ARCHIVE = ArchiveLimits(
    max_depth=3,
    max_nested_bytes=10 * 1024 * 1024,
    max_ratio=1000.0,
    max_inflated_bytes=1 << 30,
    max_scan_file_bytes=100 * 1024 * 1024,
)
LIMITS = AttachmentLimits(
    max_parts=500, max_decoded_bytes=64 * 1024 * 1024, max_archive_entries=1000, archive=ARCHIVE
)
PE_FILE = b"MZ\x90\x00" + bytes(0x38) + (0x40).to_bytes(4, "little") + b"PE\0\0" + bytes(200)
LNK = bytes.fromhex("4c0000000114020000000000c000000000000046") + bytes(60)


def scan(raw: bytes, limits: AttachmentLimits = LIMITS) -> dict[str, str]:
    result = asyncio.run(AttachmentsCheck(RULES, limits).run(transaction(raw)))
    return {s.name: s.reason for s in result.symbols}


def with_archive(**changes: object) -> AttachmentLimits:
    return dataclasses.replace(LIMITS, archive=dataclasses.replace(ARCHIVE, **changes))


def incompressible(size: int) -> bytes:
    return os.urandom(size)


@pytest.mark.parametrize(
    ("name", "archive", "symbol", "inner"),
    [
        (
            "a.tar.gz",
            tar_of(("x/invoice.exe", b"hi"), compression="gz"),
            "EXECUTABLE",
            "x/invoice.exe",
        ),
        ("a.tgz", tar_of(("invoice.js", b"hi"), compression="gz"), "SCRIPT", "invoice.js"),
        ("a.tar", tar_of(("photo.lnk", b"hi")), "SHORTCUT", "photo.lnk"),
        ("a.tar.bz2", tar_of(("run.vbs", b"hi"), compression="bz2"), "SCRIPT", "run.vbs"),
        ("a.txz", tar_of(("disk.iso", b"hi"), compression="xz"), "DISK_IMAGE", "disk.iso"),
        ("a.tar.zst", tar_of(("setup.msi", b"hi"), compression="zst"), "EXECUTABLE", "setup.msi"),
        ("a.7z", seven_zip_of(("docs/setup.exe", b"hi")), "EXECUTABLE", "docs/setup.exe"),
        ("a.rar", rar_of("docs/setup.scr", b"hi"), "EXECUTABLE", "docs/setup.scr"),
        # Named as something harmless: the first bytes tell what it is.
        (
            "report.pdf",
            tar_of(("invoice.exe", b"hi"), compression="gz"),
            "EXECUTABLE",
            "invoice.exe",
        ),
        ("report.pdf", seven_zip_of(("a.js", b"hi")), "SCRIPT", "a.js"),
        ("report.pdf", rar_of("a.lnk", b"hi"), "SHORTCUT", "a.lnk"),
    ],
)
def test_blocked_name_inside_archive(name: str, archive: bytes, symbol: str, inner: str) -> None:
    found = scan(message((name, archive)))
    assert found[f"ATTACH_{symbol}"].startswith(f"file={name}/{inner} extension")


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_executable_compressed_alone_is_found_by_content(compress: object) -> None:
    assert callable(compress)
    found = scan(message(("statement.pdf.gz", compress(PE_FILE))))
    assert found["ATTACH_EXECUTABLE"] == (
        "file=statement.pdf.gz/statement.pdf content Windows executable (PE)"
    )


def test_entry_content_sniffed_in_tar() -> None:
    found = scan(message(("a.tar.gz", tar_of(("notes.txt", LNK), compression="gz"))))
    assert found["ATTACH_SHORTCUT"] == "file=a.tar.gz/notes.txt content Windows shortcut"


@pytest.mark.parametrize(
    ("outer_name", "build"),
    [
        ("a.tar.gz", lambda inner: tar_of(("in.zip", inner), compression="gz")),
        ("a.zip", lambda inner: zip_of(("in.tar.gz", tar_of(("b.zip", inner), compression="gz")))),
        ("a.7z", lambda inner: seven_zip_of(("in.zip", inner))),
        ("a.rar", lambda inner: rar_of("in.zip", inner)),
    ],
)
def test_nested_archives_are_listed(outer_name: str, build: object) -> None:
    assert callable(build)
    found = scan(message((outer_name, build(zip_of(("evil.hta", b"x"))))))
    assert "/evil.hta extension .hta" in found["ATTACH_SCRIPT"]


def test_nesting_deeper_than_the_limit() -> None:
    archive = tar_of(("x.exe", b"x"), compression="gz")
    for level in range(4):
        archive = tar_of((f"level{level}.tar.gz", archive), compression="gz")
    found = scan(message(("deep.tar.gz", archive)))
    assert "nested deeper than 3" in found["ATTACH_LIMIT"]
    assert "ATTACH_EXECUTABLE" not in found


def test_tar_gz_bomb_is_found_fast() -> None:
    bomb = tar_of(("zeros.bin", bytes(512 * 1024 * 1024)), compression="gz")  # 0.5 MB
    started = time.monotonic()
    found = scan(message(("a.tar.gz", bomb)))
    elapsed = time.monotonic() - started
    assert found["ATTACH_ARCHIVE_BOMB"].startswith("file=a.tar.gz/zeros.bin ratio ")
    assert elapsed < 1.0, elapsed


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_lone_compressed_bomb_is_found_fast(compress: object) -> None:
    assert callable(compress)
    bomb = compress(bytes(100 * 1024 * 1024))  # 100 KB (gz) down to 100 bytes (bz2)
    started = time.monotonic()
    found = scan(message(("log.txt.gz", bomb)))
    elapsed = time.monotonic() - started
    assert found["ATTACH_ARCHIVE_BOMB"].startswith("file=log.txt.gz"), found
    assert elapsed < 0.5, elapsed


def test_lone_compressed_file_costs_at_most_the_budget() -> None:
    # Text compressed by xz 1:6800, but not a bomb by the ratio set here: read (and decoded
    # to learn its size) no further than the message's decode budget.
    bomb = lzma.compress(b"all work and no play " * (5 * 1024 * 1024))
    limits = dataclasses.replace(with_archive(max_ratio=10_000.0), max_decoded_bytes=8 << 20)
    started = time.monotonic()
    found = scan(message(("log.txt.xz", bomb)), limits)
    elapsed = time.monotonic() - started
    assert found["ATTACH_LIMIT"].startswith("file=log.txt.xz decode budget exhausted after")
    assert elapsed < 1.0, elapsed


def test_declared_sizes_past_the_inflated_limit() -> None:
    archive = tar_of(*[(f"f{i}.bin", bytes(2000)) for i in range(10)])
    found = scan(message(("a.tar", archive)), with_archive(max_inflated_bytes=15_000))
    assert found["ATTACH_ARCHIVE_BOMB"].startswith("file=a.tar 8 entries declare 16000 bytes")


def test_entries_past_the_message_limit() -> None:
    archive = tar_of(*[(f"f{i}.txt", b"x") for i in range(20)], compression="gz")
    limits = dataclasses.replace(LIMITS, max_archive_entries=10)
    found = scan(message(("a.tgz", archive)), limits)
    assert "more than the 10 entries listed per message" in found["ATTACH_LIMIT"]


def test_encrypted_rar_entry() -> None:
    found = scan(message(("a.rar", rar_of("secret.pdf", b"x" * 100, encrypted=True))))
    assert found["ATTACH_ARCHIVE_ENCRYPTED"] == "file=a.rar/secret.pdf encrypted entry"


def test_rar_with_encrypted_names_is_encrypted_not_broken() -> None:
    found = scan(message(("a.rar", rar_of("setup.exe", b"x", encrypted_headers=True))))
    assert found == {"ATTACH_ARCHIVE_ENCRYPTED": "file=a.rar RAR encryption support unavailable."}


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("a.7z", seven_zip_of(("x.txt", b"x" * 5000))[:100]),
        ("a.rar", b"Rar!\x1a\x07\x00" + bytes(40)),
        ("a.tar.gz", tar_of(("x.txt", b"x" * 5000), compression="gz")[:60]),
        ("a.tar", b"not a tar at all" * 100),
    ],
)
def test_broken_archives(name: str, data: bytes) -> None:
    assert "ATTACH_ARCHIVE_BROKEN" in scan(message((name, data)))


def test_entry_larger_than_the_scanner_scans_is_unscannable() -> None:
    # The attacker's case at a small scale: clamd skips (and calls clean) an entry larger
    # than its MaxFileSize; the gateway compares the entry's declared size.
    big = incompressible(3 * 1024 * 1024)
    limits = with_archive(max_scan_file_bytes=2 * 1024 * 1024)
    for name, archive in [
        ("a.tar.gz", tar_of(("big.bin", big), compression="gz")),
        ("a.zip", zip_of(("big.bin", big))),
        ("a.7z", seven_zip_of(("big.bin", big))),
        ("big.bin.gz", gzip.compress(big)),
    ]:
        found = scan(message((name, archive)), limits)
        assert found["AV_UNSCANNABLE"].startswith(f"file={name}/big"), (name, found)
        assert "more than the virus scanner's max_file_bytes 2097152" in found["AV_UNSCANNABLE"]
    assert "AV_UNSCANNABLE" not in scan(
        message(("a.tar.gz", tar_of(("big.bin", big), compression="gz")))
    )


def test_archive_kind_by_magic_then_name() -> None:
    assert archive_kind(gzip.compress(b"x"), "a.pdf") == Kind.GZIP
    assert archive_kind(b"", "A.TGZ") == Kind.GZIP
    assert archive_kind(tar_of(("a", b"b")), "x") == Kind.TAR
    assert archive_kind(b"%PDF", "a.pdf") is None


def test_listing_reads_no_more_than_the_budget() -> None:
    archive = tar_of(
        *[(f"f{i}.bin", incompressible(1_000_000)) for i in range(6)], compression="gz"
    )
    budget = Budget(3_000_000, 1000)
    listing = list_archive(archive, "a.tgz", Kind.GZIP, ARCHIVE, budget)
    assert len(listing.names) == 3
    assert any("past the decode budget" in f.detail for f in listing.findings)
    assert budget.bytes_left >= 0


def uuencoded(name: str, data: bytes) -> str:
    lines = [
        binascii.b2a_uu(data[i : i + 45]).decode().rstrip("\n") for i in range(0, len(data), 45)
    ]
    return f"begin 644 {name}\n" + "\n".join(lines) + "\n`\nend\n"


def yencoded(name: str, data: bytes) -> str:
    out = bytearray()
    for byte in data:
        value = (byte + 42) % 256
        if value in (0, 10, 13, 61):
            out += bytes([61, (value + 64) % 256])
        else:
            out.append(value)
    body = b"\n".join(bytes(out[i : i + 128]) for i in range(0, len(out), 128))
    head = f"=ybegin line=128 size={len(data)} name={name}\n".encode()
    return (head + body + f"\n=yend size={len(data)}\n".encode()).decode("latin-1")


def test_text_decoders_round_trip() -> None:
    data = bytes(range(256)) * 5
    [uu] = text_files(f"Hello,\n\n{uuencoded('a.bin', data)}\nBye\n".encode()).files
    assert (uu.name, uu.data) == ("a.bin", data)
    [y] = text_files(f"Hi\r\n{yencoded('b.bin', data)}".encode("latin-1")).files
    assert (y.name, y.data) == ("b.bin", data)


@pytest.mark.parametrize("encode", [uuencoded, yencoded])
def test_file_in_message_text_is_inspected(encode: object) -> None:
    assert callable(encode)
    body = "Please find the invoice below.\n\n" + encode("invoice.exe", b"hello") + "\nRegards\n"
    found = scan(message(body=body, charset="latin-1"))
    assert found["ATTACH_EXECUTABLE"] == "file=invoice.exe extension .exe"
    # By content, and listed when it is an archive.
    found = scan(message(body=encode("photo.jpg", PE_FILE), charset="latin-1"))
    assert found["ATTACH_EXECUTABLE"] == "file=photo.jpg content Windows executable (PE)"
    tgz = tar_of(("a.js", b"x"), compression="gz")
    found = scan(message(body=encode("docs.tgz", tgz), charset="latin-1"))
    assert found["ATTACH_SCRIPT"] == "file=docs.tgz/a.js extension .js"


def test_million_begin_lines_are_fast_and_bounded() -> None:
    body = "begin 644 a.exe\n" * 1_000_000
    started = time.monotonic()
    found = text_files(body.encode())
    elapsed = time.monotonic() - started
    assert len(found.files) == MAX_TEXT_FILES and found.more
    assert elapsed < 2.0, elapsed
    # Blocks that run on to the end of the text are decoded once, not once per begin line.
    body = ("begin 644 a.exe\n" + "M" + "A" * 60 + "\n") * 50_000
    started = time.monotonic()
    text_files(body.encode())
    assert time.monotonic() - started < 2.0


def test_max_file_bytes_config() -> None:
    assert config_from_dict({}).checks.antivirus.max_file_bytes == 25 * 1024 * 1024
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"checks": {"antivirus": {"max_file_bytes": 0}}})
    assert caught.value.problems == ["checks.antivirus.max_file_bytes: must be greater than 0"]


def test_scanner_limit_reaches_the_check_only_with_the_scanner_on() -> None:
    def limit(antivirus_on: bool) -> int | None:
        checks = {"antivirus": {"enabled": antivirus_on, "max_file_bytes": 12345}}
        config = config_from_dict({"checks": checks})
        check = registry._attachments(config, registry.Services())
        assert isinstance(check, AttachmentsCheck)
        return check.limits.archive.max_scan_file_bytes

    assert (limit(True), limit(False)) == (12345, None)


def test_undecodable_entry_name_hides_nothing() -> None:
    # tarfile writes names as UTF-8; "f\xe9" + 9 bytes, same length, is the Latin-1 of old tools.
    archive = tar_of(("fé.exe", b"x")).replace("fé.exe".encode(), b"f\xe9.exe\0")
    found = scan(message(("a.tar", archive)))
    assert found["ATTACH_EXECUTABLE"] == "file=a.tar/f\ufffd.exe extension .exe"


def test_lone_gzip_size_is_measured_not_read_from_its_trailer() -> None:
    # ISIZE, the last 4 bytes, says 10 bytes: clamd inflates it all and skips it as too big.
    stream = gzip.compress(incompressible(3 * 1024 * 1024))
    lying = stream[:-4] + (10).to_bytes(4, "little")
    limits = with_archive(max_scan_file_bytes=2 * 1024 * 1024)
    found = scan(message(("backup.gz", lying)), limits)
    assert found["AV_UNSCANNABLE"].startswith("file=backup.gz/backup ")


def test_gzip_stored_file_name_is_checked() -> None:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="invoice.js", mode="wb", fileobj=buffer, mtime=0) as stream:
        stream.write(b"var x = 1;")
    found = scan(message(("notes.txt.gz", buffer.getvalue())))
    assert found["ATTACH_SCRIPT"] == "file=notes.txt.gz/invoice.js extension .js"


def test_small_message_with_an_archive_does_not_stall_the_event_loop() -> None:
    # A 1 KB message, 256 MiB of bz2 output: inflated off the event loop (before: a 0.64 s
    # stall of every other session, the work running inline as for any message < 64 KB).
    bomb = bz2.compress(bytes(300 * 1024 * 1024))
    raw = message(("notes.txt.bz2", bomb))
    limits = dataclasses.replace(
        with_archive(max_ratio=1e9, max_scan_file_bytes=1 << 30), max_decoded_bytes=256 << 20
    )
    gaps: list[float] = []

    async def main() -> dict[str, str]:
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.005)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        result = await AttachmentsCheck(RULES, limits).run(transaction(raw))
        done.set()
        await task
        return {s.name: s.reason for s in result.symbols}

    found = asyncio.run(main())
    assert "decode budget exhausted" in found["ATTACH_LIMIT"]
    assert max(gaps) < 0.25, max(gaps)
