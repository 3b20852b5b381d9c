"""Hostile ways to write one message, for differential tests of "one reading of every message".

Each variant carries the same attachment, `invoice.exe` holding a payload (EICAR in the tests),
written with tricks that split readers: white space before a header's colon (RFC 5322 obsolete
syntax), decoy copies of Content-Type, Content-Transfer-Encoding and boundary, file names spelt
two ways, RFC 2231 / 2047 names, case, folding and nesting. `postfix_header_fields` is a second,
independent reader of a header section, written to Postfix's is_header() rule.
"""

from __future__ import annotations

import base64
import binascii
import io
import random
import re
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field

ATTACHMENT = "invoice.exe"
CRLF = "\r\n"


@dataclass
class Draft:
    """A message in pieces that mutations rewrite before it is joined."""

    payload: bytes
    top: list[str] = field(default_factory=list)
    part: list[str] = field(default_factory=list)
    boundary: str = "b1"
    encoded: str = ""
    nest_in_rfc822: bool = False
    uuencoded: bool = False  # the file as a uuencode block in the text, no MIME part
    tricks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.top = [
            "From: Alice <alice@origin.test>",
            "To: bob@example.test",
            "Subject: invoice",
            "Date: Tue, 08 Dec 2026 04:00:00 +0000",
            "Message-ID: <variant@origin.test>",
            "MIME-Version: 1.0",
            f'Content-Type: multipart/mixed; boundary="{self.boundary}"',
        ]
        self.part = [
            f'Content-Type: application/octet-stream; name="{ATTACHMENT}"',
            f'Content-Disposition: attachment; filename="{ATTACHMENT}"',
            "Content-Transfer-Encoding: base64",
        ]
        self.encoded = base64.encodebytes(self.payload).decode().replace("\n", CRLF)

    def raw(self) -> bytes:
        b = self.boundary
        text = ["Please find the invoice attached."]
        attachment = [f"--{b}", *self.part, "", self.encoded.rstrip(CRLF)]
        if self.uuencoded:
            text, attachment = [*text, "", *_uuencode(ATTACHMENT, self.payload)], []
        body = CRLF.join(
            [f"--{b}", "Content-Type: text/plain", "", *text, *attachment, f"--{b}--", ""]
        )
        message = CRLF.join([*self.top, "", body])
        if not self.nest_in_rfc822:
            return message.encode()
        outer = CRLF.join(
            [
                "From: Forwarder <fwd@origin.test>",
                "To: bob@example.test",
                "Subject: Fwd: invoice",
                "MIME-Version: 1.0",
                'Content-Type: multipart/mixed; boundary="outer"',
                "",
                "--outer",
                "Content-Type: text/plain",
                "",
                "See attached.",
                "--outer",
                "Content-Type: message/rfc822",
                "",
                message,
                "--outer--",
                "",
            ]
        )
        return outer.encode()


def _index(lines: list[str], name: str) -> int:
    return next(i for i, line in enumerate(lines) if line.lower().startswith(name.lower()))


def _pad_top(d: Draft, rng: random.Random) -> None:
    space = rng.choice([" ", "\t", "  ", " \t"])
    d.top.insert(rng.randrange(len(d.top)), f"X-Pad{space}: x")
    d.tricks.append("pad-top")


def _pad_part(d: Draft, rng: random.Random) -> None:
    d.part.insert(rng.randrange(len(d.part)), f"X-Pad{rng.choice([' ', chr(9)])}: x")
    d.tricks.append("pad-part")


def _space_before_colon(d: Draft, rng: random.Random) -> None:
    lines = rng.choice([d.top, d.part])
    i = _index(lines, "Content-Type")
    name, _, value = lines[i].partition(":")
    lines[i] = f"{name}{rng.choice([' ', chr(9)])}:{value}"
    d.tricks.append("space-before-colon")


def _case(d: Draft, rng: random.Random) -> None:
    lines = rng.choice([d.top, d.part])
    i = rng.randrange(len(lines))
    name, _, value = lines[i].partition(":")
    lines[i] = "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in name) + ":" + value
    d.tricks.append("case")


def _decoy_content_type(d: Draft, rng: random.Random) -> None:
    lines = rng.choice([d.top, d.part])
    lines.insert(_index(lines, "Content-Type"), "Content-Type: text/plain")
    d.tricks.append("decoy-content-type")


def _decoy_boundary(d: Draft, rng: random.Random) -> None:
    i = _index(d.top, "Content-Type")
    decoy = 'boundary="decoy"'
    real = f'boundary="{d.boundary}"'
    first, second = (decoy, real) if rng.random() < 0.5 else (real, decoy)
    d.top[i] = f"Content-Type: multipart/mixed; {first}; {second}"
    d.tricks.append("decoy-boundary")


def _decoy_encoding(d: Draft, rng: random.Random) -> None:
    d.part.insert(_index(d.part, "Content-Transfer-Encoding"), "Content-Transfer-Encoding: 7bit")
    d.tricks.append("decoy-encoding")


def _decoy_name(d: Draft, rng: random.Random) -> None:
    i = _index(d.part, "Content-Disposition")
    d.part[i] = rng.choice(
        [
            'Content-Disposition: attachment; filename="invoice.pdf"',
            f'Content-Disposition: attachment; filename="invoice.pdf"; filename="{ATTACHMENT}"',
            f"Content-Disposition: attachment; filename=invoice.pdf; filename*=utf-8''{ATTACHMENT}",
        ]
    )
    d.tricks.append("decoy-name")


def _encoded_name(d: Draft, rng: random.Random) -> None:
    i = _index(d.part, "Content-Disposition")
    word = base64.b64encode(ATTACHMENT.encode()).decode()
    d.part[i] = rng.choice(
        [
            f"Content-Disposition: attachment; filename*=utf-8''{ATTACHMENT.replace('.', '%2E')}",
            'Content-Disposition: attachment; filename*0="invo"; filename*1="ice.exe"',
            f'Content-Disposition: attachment; filename="=?utf-8?B?{word}?="',
        ]
    )
    d.tricks.append("encoded-name")


def _fold(d: Draft, rng: random.Random) -> None:
    lines = rng.choice([d.top, d.part])
    i = _index(lines, "Content-Type")
    lines[i] = lines[i].replace("; ", ";" + CRLF + rng.choice([" ", "\t", "   "]), 1)
    d.tricks.append("fold")


def _nest(d: Draft, rng: random.Random) -> None:
    d.nest_in_rfc822 = True
    d.tricks.append("nest-rfc822")


def _uuencode_in_text(d: Draft, rng: random.Random) -> None:
    d.uuencoded = True
    d.tricks.append("uuencode")


def _in_archive(d: Draft, rng: random.Random) -> None:
    """The file inside a tar.gz, tar.bz2, tar.xz or zip attachment of its own name."""
    kind = rng.choice(["tar.gz", "tar.bz2", "tar.xz", "zip"])
    buffer = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(ATTACHMENT, d.payload)
    else:
        with tarfile.open(fileobj=buffer, mode=f"w:{kind[4:]}") as archive:
            entry = tarfile.TarInfo(ATTACHMENT)
            entry.size = len(d.payload)
            archive.addfile(entry, io.BytesIO(d.payload))
    d.encoded = base64.encodebytes(buffer.getvalue()).decode().replace("\n", CRLF)
    d.part = [line.replace(ATTACHMENT, f"invoice.{kind}") for line in d.part]
    d.tricks.append(kind)


def _uuencode(name: str, data: bytes) -> list[str]:
    lines = [f"begin 644 {name}"]
    for start in range(0, len(data), 45):
        lines.append(binascii.b2a_uu(data[start : start + 45]).decode().rstrip("\n"))
    return [*lines, "`", "end"]


MUTATIONS: tuple[Callable[[Draft, random.Random], None], ...] = (
    _pad_top,
    _pad_part,
    _space_before_colon,
    _case,
    _decoy_content_type,
    _decoy_boundary,
    _decoy_encoding,
    _decoy_name,
    _encoded_name,
    _fold,
    _nest,
    _uuencode_in_text,
    _in_archive,
)


def variant(rng: random.Random, payload: bytes) -> Draft:
    """The message with one to three mutations, chosen by `rng`."""
    draft = Draft(payload)
    for mutate in rng.sample(MUTATIONS, rng.randint(1, 3)):
        mutate(draft, rng)
    return draft


# --- a second reader of header sections ------------------------------------------------------

# Postfix's is_header(): printable ASCII but ":" and space, then optional white space, then ":".
_POSTFIX_HEADER = re.compile(r"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def postfix_header_fields(raw: bytes) -> list[tuple[str, str]]:
    """(lower-case name, unfolded value) of each field of the top header section, read as
    Postfix's cleanup reads it: a header line is is_header(), a continuation starts with white
    space, anything else ends the section."""
    fields: list[tuple[str, str]] = []
    for line in raw.decode("latin-1").split("\r\n"):
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + line)
            continue
        found = _POSTFIX_HEADER.match(line)
        if found is None:
            break
        fields.append((found.group(1).lower(), line[found.end() :].strip()))
    return fields
