"""Builders for test messages with attachments and for zip archives (also nested, encrypted-
flagged or bombs)."""

from __future__ import annotations

import email
import email.policy
import io
import struct
import tarfile
import zipfile
import zlib
from email.message import EmailMessage

import libarchive

from gateway.model import Connection, Envelope, Transaction


def message(
    *attachments: tuple[str, bytes], body: str = "Hello.\n", charset: str = "utf-8"
) -> bytes:
    """A plain message with base64 attachments given as (file name, content)."""
    msg = EmailMessage()
    msg["From"] = "sender@origin.test"
    msg["To"] = "user@example.test"
    msg["Subject"] = "Documents"
    msg["Message-ID"] = "<attach-test@origin.test>"
    msg.set_content(body, charset=charset)
    for name, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes(policy=email.policy.SMTP)  # CRLF line ends, as on the wire


def zip_of(*entries: tuple[str, bytes], encrypted_flag: bool = False) -> bytes:
    """A deflated zip of (name, content) entries; `encrypted_flag` marks entries encrypted."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    data = buffer.getvalue()
    return _flag_encrypted(data) if encrypted_flag else data


def _flag_encrypted(data: bytes) -> bytes:
    """Set bit 0 (encrypted) of the general purpose flags in every local and central header
    (zipfile cannot write encrypted archives and clears the bit itself)."""
    patched = bytearray(data)
    for magic, flags_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = patched.find(magic)
        while start >= 0:
            patched[start + flags_offset] |= 0x1
            start = patched.find(magic, start + 4)
    return bytes(patched)


def forwarded(inner: bytes) -> bytes:
    """A message carrying `inner` as a message/rfc822 attachment."""
    outer = EmailMessage()
    outer["From"] = "forwarder@origin.test"
    outer["To"] = "user@example.test"
    outer["Subject"] = "Fwd: Documents"
    outer.set_content("See the attached message.\n")
    outer.add_attachment(email.message_from_bytes(inner, policy=email.policy.default))
    return outer.as_bytes(policy=email.policy.SMTP)


def nested_zip(name: str, data: bytes, depth: int) -> bytes:
    """`data` as `name` inside `depth` zips, each inside the next (level1.zip/level2.zip/...)."""
    archive = zip_of((name, data))
    for level in range(depth - 1, 0, -1):
        archive = zip_of((f"level{level + 1}.zip", archive))
    return archive


def transaction(raw: bytes) -> Transaction:
    return Transaction(
        id="t1",
        connection=Connection(id="c1", client_ip="127.0.0.1"),
        envelope=Envelope("sender@origin.test", ("user@example.test",)),
        raw=raw,
    )


def tar_of(*entries: tuple[str, bytes], compression: str = "") -> bytes:
    """A tar of (name, content) entries; `compression` is "", "gz", "bz2", "xz" or "zst"
    (that one written by libarchive: Python 3.11 has no zstd)."""
    buffer = io.BytesIO()
    if compression == "zst":
        with libarchive.custom_writer(buffer.write, "ustar", filter_name="zstd") as archive:
            for name, data in entries:
                archive.add_file_from_memory(name, len(data), data)
        return buffer.getvalue()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as archive:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def seven_zip_of(*entries: tuple[str, bytes]) -> bytes:
    """A 7z archive written by libarchive (Python has no 7z writer)."""
    buffer = io.BytesIO()
    with libarchive.custom_writer(buffer.write, "7zip") as archive:
        for name, data in entries:
            archive.add_file_from_memory(name, len(data), data)
    return buffer.getvalue()


def rar_of(
    name: str, data: bytes, encrypted: bool = False, encrypted_headers: bool = False
) -> bytes:
    """A RAR 4 archive with one stored entry, written by hand: libarchive reads rar but does
    not write it, and Debian's free packages have no rar writer (rar itself is non-free).
    Each header's CRC is the low 16 bits of the CRC-32 of the header from its type byte."""

    def block(kind: int, flags: int, body: bytes) -> bytes:
        rest = struct.pack("<BHH", kind, flags, 7 + len(body)) + body
        return struct.pack("<H", zlib.crc32(rest) & 0xFFFF) + rest

    encoded = name.encode()
    file_flags = 0x8000 | (0x04 if encrypted else 0)  # LONG_BLOCK (data follows), PASSWORD
    file_header = struct.pack(
        "<LLBLLBBHL",
        len(data),
        len(data),
        3,
        zlib.crc32(data),
        0x5A000000,
        20,
        0x30,
        len(encoded),
        0o100644,
    )  # packed and unpacked size, host Unix, CRC, DOS time, version 2.0, method store
    return (
        b"Rar!\x1a\x07\x00"
        + block(0x73, 0x80 if encrypted_headers else 0, bytes(6))  # main header; 0x80: -hp
        + block(0x74, file_flags, file_header + encoded)
        + data
        + block(0x7B, 0x4000, b"")  # end of archive
    )
