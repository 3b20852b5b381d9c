"""The attachment policy on real MIME messages and real zip archives (no sockets)."""

from __future__ import annotations

import asyncio
import io
import time
import zipfile
from pathlib import Path

import pytest

from gateway.checks.archive import ArchiveLimits
from gateway.checks.attachments import AttachmentLimits, AttachmentsCheck
from gateway.checks.filetypes import file_extension, load_type_rules
from gateway.config import SHIPPED_RULES_DIR, AttachmentsCheckConfig
from gateway.errors import ConfigError
from gateway.model import Action, CheckResult, OnError
from gateway.pipeline.scoring import decide, load_policy
from tests.support.attachments_mail import forwarded, message, nested_zip, transaction, zip_of

RULES = load_type_rules(SHIPPED_RULES_DIR / "attachments.toml")
DEFAULTS = AttachmentLimits(
    max_parts=500,
    max_decoded_bytes=64 * 1024 * 1024,
    max_archive_entries=1000,
    archive=ArchiveLimits(
        max_depth=3, max_nested_bytes=10 * 1024 * 1024, max_ratio=100.0, max_inflated_bytes=1 << 30
    ),
)

LNK = bytes.fromhex("4c0000000114020000000000c000000000000046") + bytes(60)
OLE_WITH_MACROS = (
    bytes.fromhex("d0cf11e0a1b11ae1") + bytes(600) + "_VBA_PROJECT".encode("utf-16-le")
)
OOXML_WITH_MACROS = zip_of(("[Content_Types].xml", b"<Types/>"), ("word/vbaProject.bin", b"vba"))

# The smallest PE layout: MZ, e_lfanew at 0x3c pointing at "PE\0\0".
PE_FILE = b"MZ\x90\x00" + bytes(0x38) + (0x40).to_bytes(4, "little") + b"PE\0\0" + bytes(200)

# One sample per content signature, each under a harmless-looking name.
BY_CONTENT = [
    ("ATTACH_EXECUTABLE", PE_FILE, "Windows executable (PE)"),
    ("ATTACH_EXECUTABLE", b"\x7fELF\x02\x01\x01" + bytes(100), "ELF executable"),
    ("ATTACH_EXECUTABLE", bytes.fromhex("cffaedfe") + bytes(100), "Mach-O executable"),
    ("ATTACH_SHORTCUT", LNK, "Windows shortcut"),
    ("ATTACH_DISK_IMAGE", bytes(0x8001) + b"CD001" + bytes(2000), "ISO 9660 disk image"),
    ("ATTACH_DISK_IMAGE", b"conectix" + bytes(504), "VHD disk image"),
    ("ATTACH_DISK_IMAGE", b"vhdxfile" + bytes(100), "VHDX disk image"),
    ("ATTACH_DISK_IMAGE", bytes(1000) + b"koly" + bytes(508), "Apple disk image"),
    ("ATTACH_OFFICE_MACRO", OLE_WITH_MACROS, "OLE document with VBA macros"),
    ("ATTACH_OFFICE_MACRO", OOXML_WITH_MACROS, "vbaProject.bin"),
]

BY_NAME = [
    ("ATTACH_EXECUTABLE", "setup.exe"),
    ("ATTACH_EXECUTABLE", "tool.scr"),
    ("ATTACH_SCRIPT", "invoice.js"),
    ("ATTACH_SCRIPT", "run.ps1"),
    ("ATTACH_SCRIPT", "page.hta"),
    ("ATTACH_SHORTCUT", "readme.lnk"),
    ("ATTACH_DISK_IMAGE", "photos.iso"),
    ("ATTACH_DISK_IMAGE", "drive.vhd"),
    ("ATTACH_DISK_IMAGE", "disk.img"),
    ("ATTACH_OFFICE_MACRO", "budget.xlsm"),
    ("ATTACH_OFFICE_MACRO", "letter.docm"),
    ("ATTACH_OFFICE_MACRO", "slides.pptm"),
]


def scan(raw: bytes, limits: AttachmentLimits = DEFAULTS) -> dict[str, str]:
    result = asyncio.run(AttachmentsCheck(RULES, limits).run(transaction(raw)))
    return {s.name: s.reason for s in result.symbols}


@pytest.mark.parametrize(("symbol", "data", "meaning"), BY_CONTENT)
def test_blocked_type_found_by_content_whatever_the_name(
    symbol: str, data: bytes, meaning: str
) -> None:
    found = scan(message(("report.pdf", data)))
    assert symbol in found
    assert "file=report.pdf" in found[symbol] and meaning in found[symbol]


@pytest.mark.parametrize(("symbol", "name"), BY_NAME)
def test_blocked_type_found_by_extension(symbol: str, name: str) -> None:
    found = scan(message((name, b"harmless bytes")))
    assert found == {symbol: f"file={name} extension .{name.rsplit('.', 1)[1]}"}


@pytest.mark.parametrize(("symbol", "name"), BY_NAME)
def test_blocked_type_found_by_name_inside_a_zip(symbol: str, name: str) -> None:
    found = scan(message(("docs.zip", zip_of(("docs/" + name, b"x")))))
    assert found[symbol].startswith(f"file=docs.zip/docs/{name} ")


def test_windows_name_tricks_do_not_hide_the_extension() -> None:
    assert file_extension("INVOICE.PDF.EXE. ") == "exe"
    assert file_extension("dir\\run.Js") == "js"
    assert file_extension(".bashrc") == ""
    assert "ATTACH_EXECUTABLE" in scan(message(("INVOICE.PDF.EXE.", b"x")))


def test_rfc2047_encoded_file_name_is_decoded() -> None:
    raw = message(("placeholder.bin", b"harmless")).replace(
        b'filename="placeholder.bin"', b'filename="=?utf-8?b?cGF5bG9hZC5leGU=?="'
    )
    assert scan(raw) == {"ATTACH_EXECUTABLE": "file=payload.exe extension .exe"}


def test_attached_message_is_inspected_too() -> None:
    raw = forwarded(message(("setup.exe", b"MZ" + bytes(10))))
    assert b"message/rfc822" in raw
    assert scan(raw)["ATTACH_EXECUTABLE"].startswith("file=setup.exe ")


def test_zip_in_zip_in_zip_is_listed() -> None:
    archive = nested_zip("run.vbs", b"x", depth=3)
    found = scan(message(("outer.zip", archive)))
    assert found == {"ATTACH_SCRIPT": "file=outer.zip/level2.zip/level3.zip/run.vbs extension .vbs"}


def test_nesting_beyond_the_depth_limit_is_not_followed() -> None:
    found = scan(message(("outer.zip", nested_zip("run.vbs", b"x", depth=4))))
    assert set(found) == {"ATTACH_LIMIT"}
    assert "level4.zip" in found["ATTACH_LIMIT"]


def test_zip_bomb_is_flagged_without_inflating_it() -> None:
    bomb = zip_of(("zeros.bin", bytes(50 * 1024 * 1024)))
    assert len(bomb) < 100_000
    started = time.monotonic()
    found = scan(message(("bomb.zip", zip_of(("inner.zip", bomb)))))
    assert time.monotonic() - started < 1.0
    assert set(found) == {"ATTACH_ARCHIVE_BOMB"}
    assert found["ATTACH_ARCHIVE_BOMB"].startswith("file=bomb.zip/inner.zip/zeros.bin ratio ")


def test_the_entry_budget_is_per_message_and_the_reason_says_so() -> None:
    six_hundred = zip_of(*((f"f{i}.txt", b"x") for i in range(600)))
    found = scan(message(("a.zip", six_hundred), ("b.zip", six_hundred)))
    assert found == {
        "ATTACH_LIMIT": "file=b.zip about 600 entries, and only 400 of the 1000 listed per "
        "message were left"
    }


def shipped_limits() -> AttachmentLimits:
    c = AttachmentsCheckConfig()
    archive = ArchiveLimits(
        c.max_archive_depth,
        c.max_nested_archive_bytes,
        c.max_compression_ratio,
        c.max_archive_inflated_bytes,
    )
    return AttachmentLimits(c.max_parts, c.max_decoded_bytes, c.max_archive_entries, archive)


def test_well_compressing_files_are_not_bombs_under_the_shipped_limits() -> None:
    # A zipped screenshot BMP (ratio 226) and a log file (292) were rejected as zip bombs.
    log = b"".join(
        b"2026-12-04 05:%02d:00 INFO worker 3 heartbeat ok\n" % (i % 60) for i in range(90_000)
    )
    bmp = b"BM" + bytes(54) + (b"\xff\xff\xff" * 1900 + b"\x20\x40\x80" * 20) * 1000
    archive = zip_of(("error.log", log), ("screenshot.bmp", bmp))
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        # 170 and 730: both above the 100 that held such mail as a bomb before
        assert all(i.file_size / i.compress_size > 150 for i in z.infolist())
    assert scan(message(("report.zip", archive)), shipped_limits()) == {}
    zeros = zip_of(("zeros.bin", bytes(50 * 1024 * 1024)))
    assert set(scan(message(("z.zip", zeros)), shipped_limits())) == {"ATTACH_ARCHIVE_BOMB"}


def test_entries_declaring_gigabytes_together_are_a_bomb() -> None:
    # Overlapping entries (a "flat" bomb): each near deflate's ratio, together 1.2 GB. Here
    # the sizes are only declared: nothing is inflated to judge them.
    archive = bytearray(zip_of(*((f"part{i}.bin", b"x" * 1000) for i in range(3))))
    at = 0
    for _ in range(3):  # each central directory entry declares 400 MB uncompressed
        at = archive.index(b"PK\x01\x02", at) + 4
        archive[at + 20 : at + 24] = (400 * 1024 * 1024).to_bytes(4, "little")
    found = scan(message(("flat.zip", bytes(archive))), shipped_limits())
    assert set(found) == {"ATTACH_ARCHIVE_BOMB"}
    assert found["ATTACH_ARCHIVE_BOMB"].startswith("file=flat.zip 3 entries declare 1258291200")


def test_too_many_entries_stop_the_listing_before_parsing_them() -> None:
    archive = zip_of(*((f"f{i}.txt", b"x") for i in range(1200)))
    found = scan(message(("many.zip", archive)))
    assert found == {
        "ATTACH_LIMIT": "file=many.zip about 1200 entries, more than the 1000 listed per message"
    }


def test_an_end_record_that_understates_the_entries_does_not_lift_the_limit() -> None:
    # The end of central directory said 1 entry, the directory held 100,000: all were
    # listed and nothing was held. The entries in the directory are counted before zipfile
    # reads them (380,000 took it 2.4 s and 450 MB).
    archive = bytearray(zip_of(*((f"f{i}.txt", b"x") for i in range(1200))))
    end = archive.rfind(b"PK\x05\x06")
    archive[end + 8 : end + 12] = (1).to_bytes(2, "little") * 2  # entries: on disk, in all
    found = scan(message(("liar.zip", bytes(archive))))
    assert found["ATTACH_LIMIT"].startswith("file=liar.zip about 1200 entries")


def test_a_part_with_more_header_fields_than_are_read_is_a_limit() -> None:
    # Its Content-Type, name and encoding behind 1000 junk fields were dropped, so setup.exe
    # read as text while a mail reader showed the attachment.
    junk = b"".join(b"X-J%d: a\r\n" % i for i in range(1000))
    exe = message(("setup.exe", PE_FILE))
    assert "ATTACH_EXECUTABLE" in scan(exe)
    hidden = exe.replace(
        b"Content-Type: application/octet-stream", junk + b"Content-Type: application/octet-stream"
    )
    assert hidden != exe
    assert scan(hidden) == {"ATTACH_LIMIT": "file=part 3 more header fields than are read"}


def test_encrypted_entry_and_broken_zip() -> None:
    encrypted = zip_of(("secret.pdf", b"data"), encrypted_flag=True)
    assert set(scan(message(("locked.zip", encrypted)))) == {"ATTACH_ARCHIVE_ENCRYPTED"}
    broken = scan(message(("broken.zip", b"PK\x03\x04 not really a zip")))
    assert broken == {"ATTACH_ARCHIVE_BROKEN": "file=broken.zip no zip central directory"}


def test_clean_attachments_give_no_symbol() -> None:
    raw = message(
        ("report.pdf", b"%PDF-1.7\n" + bytes(5000)),
        ("notes.zip", zip_of(("notes.txt", b"meeting at ten"), ("plan.docx", b"PK"))),
        body="#!/bin/sh in the text of the mail is not an attachment\n",
    )
    assert scan(raw) == {}


def test_part_and_decode_limits_end_in_attach_limit() -> None:
    many = message(*((f"f{i}.txt", b"x") for i in range(10)))
    small = AttachmentLimits(5, DEFAULTS.max_decoded_bytes, 1000, DEFAULTS.archive)
    assert scan(many, small) == {"ATTACH_LIMIT": "file=message more than 5 MIME parts"}
    tight = AttachmentLimits(500, 1000, 1000, DEFAULTS.archive)
    found = scan(message(("big.pdf", bytes(5000)), ("setup.exe", b"x")), tight)
    assert found["ATTACH_LIMIT"] == "file=big.pdf decode budget exhausted"


@pytest.mark.parametrize("charset", [b"idna", b"punycode", b"undefined", b'"utf-8\x00"'])
def test_8bit_text_in_a_charset_python_cannot_apply_is_inspected(charset: bytes) -> None:
    # compat32's get_payload() decodes 8-bit text with the declared charset, and raised on
    # these: the check failed and the message got 451 at every retry.
    def text_part(params: bytes, text: bytes) -> bytes:
        return (
            b"--b\r\nContent-Type: text/plain; charset=" + charset + params + b"\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n" + text + b"\r\n"
        )

    raw = (
        b'From: a@origin.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"'
        b"\r\n\r\n"
        + text_part(b"", b"Caf\xc3\xa9 at noon?")
        + text_part(b"; name=run.js", b"alert('\xc3\xa9')")
        + b"--b--\r\n"
    )
    assert scan(raw) == {"ATTACH_SCRIPT": "file=run.js extension .js"}
    tight = AttachmentLimits(500, 10, 1000, DEFAULTS.archive)  # 12 bytes decoded: over
    assert scan(raw, tight) == {"ATTACH_LIMIT": "file=run.js decode budget exhausted"}


def test_a_name_behind_a_huge_parameter_list_is_seen_or_the_part_is_a_limit() -> None:
    # Parameters are read within bounds (the email package is quadratic on them): junk
    # parameters go, and a file name that no longer fits makes the part "not fully inspected".
    raw = message(("placeholder.bin", b"harmless"))
    junk = b"attachment;" + b" a=b;" * 100_000 + b' filename="setup.exe"'
    assert scan(raw.replace(b'attachment; filename="placeholder.bin"', junk)) == {
        "ATTACH_EXECUTABLE": "file=setup.exe extension .exe"
    }
    hidden = b"attachment;" + b" filename*%d=a;" * 150 % tuple(range(150)) + b' filename*150=".exe"'
    found = scan(raw.replace(b'attachment; filename="placeholder.bin"', hidden))
    assert set(found) == {"ATTACH_LIMIT"}
    assert found["ATTACH_LIMIT"].endswith(" MIME parameters past 8192 characters or 100")


def test_mime_nested_too_deep_to_parse_is_a_limit_not_a_crash() -> None:
    depth = 1500
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    closing = b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth)))
    raw = b"From: a@origin.test\r\n" + opening + b"Content-Type: text/plain\r\n\r\nhi\r\n" + closing
    assert scan(raw) == {"ATTACH_LIMIT": "file=message MIME nesting too deep to parse"}


def test_blocked_types_force_the_shipped_actions() -> None:
    policy = load_policy(SHIPPED_RULES_DIR)
    check = AttachmentsCheck(RULES, DEFAULTS)

    def verdict_for(raw: bytes) -> tuple[Action, str | None]:
        result: CheckResult = asyncio.run(check.run(transaction(raw)))
        verdict = decide(policy, [result], {check.name: OnError.TEMPFAIL})
        return verdict.action, verdict.reply

    assert verdict_for(message(("setup.exe", b"x"))) == (
        Action.REJECT,
        "554 5.7.1 Attachment type not allowed: file=setup.exe extension .exe",
    )
    assert verdict_for(message(("budget.xlsm", b"x")))[0] == Action.QUARANTINE
    bomb = zip_of(("zeros.bin", bytes(20 * 1024 * 1024)))
    assert verdict_for(message(("bomb.zip", bomb)))[0] == Action.REJECT


def test_rules_file_errors_are_reported_together(tmp_path: Path) -> None:
    rules = tmp_path / "attachments.toml"
    rules.write_text(
        '[executables]\nextensions = ["exe"]\n'
        '[script]\nextensions = [".JS"]\n'
        '[shortcut]\ncontent = ["lnk", "magic"]\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_type_rules(rules)
    problems = "\n".join(caught.value.problems)
    assert "executables: unknown type" in problems
    assert "script.extensions: write them lower case without a dot: ['.JS']" in problems
    assert "shortcut.content: unknown ['magic']" in problems
    with pytest.raises(ConfigError, match="no such file"):
        load_type_rules(tmp_path / "missing.toml")


def test_text_that_merely_starts_with_mz_or_a_shebang_is_not_blocked() -> None:
    raw = message(
        ("countries.csv", b"MZ,Mozambique,Maputo\n" * 20),
        ("notes.txt", b"#!/bin/sh is the first line of a script\n"),
    )
    assert scan(raw) == {}


@pytest.mark.parametrize("compression", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_a_corrupt_bz2_or_lzma_member_is_a_broken_archive_not_a_failed_check(
    compression: int,
) -> None:
    # bz2 raises OSError, lzma LZMAError: the check failed, and the message was deferred
    # (451) at every retry instead of being judged.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        # A nested archive: the one kind of member that is inflated, to be listed in turn.
        archive.writestr("inner.zip", zip_of(("report.txt", b"quarterly figures " * 200)))
    data = bytearray(buffer.getvalue())
    start = 30 + len("inner.zip") + 10  # inside the compressed member, past its header
    data[start : start + 16] = b"\xff" * 16
    found = scan(message(("report.zip", bytes(data))))
    assert set(found) == {"ATTACH_ARCHIVE_BROKEN"}, found
