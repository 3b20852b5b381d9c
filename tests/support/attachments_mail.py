"""Builders for test messages with attachments and for zip archives (also nested, encrypted-
flagged or bombs)."""

from __future__ import annotations

import email
import email.policy
import io
import zipfile
from email.message import EmailMessage

from gateway.model import Connection, Envelope, Transaction


def message(*attachments: tuple[str, bytes], body: str = "Hello.\n") -> bytes:
    """A plain message with base64 attachments given as (file name, content)."""
    msg = EmailMessage()
    msg["From"] = "sender@origin.test"
    msg["To"] = "user@example.test"
    msg["Subject"] = "Documents"
    msg["Message-ID"] = "<attach-test@origin.test>"
    msg.set_content(body)
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
