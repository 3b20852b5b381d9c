"""Credential harvest and smuggling (issue 27): HTML forms asking for a password or posting
to another site; HTML, HTM, SHTML, XHTML and SVG attachments carrying scripts, forms, a meta
refresh or large base64/data: blobs (the page that phishes is in the mail itself); PDFs that
are one link; and the shape of a QR-code lure (a short text asking to scan an image, no link).
QR codes are not decoded: the one maintained decoder, zbar (Debian's libzbar0, with Pillow to
read the image), would run C image decoders on hostile input inside the gateway; see
docs/phishing.md."""

from __future__ import annotations

import itertools
import re
from email.message import Message
from pathlib import Path

from gateway.content import (
    MAX_PARTS,
    header_addresses,
    header_str,
    message_content,
    part_bytes,
    part_filename,
)
from gateway.model import CheckResult, OnError, Phase, Symbol, Transaction
from gateway.pipeline.check import Check
from gateway.urls import registered_domain, url_host

_PAGE_EXTENSIONS = (".html", ".htm", ".shtml", ".xhtml", ".svg", ".mht", ".mhtml")
_PAGE_TYPES = ("text/html", "image/svg+xml", "application/xhtml+xml")
MAX_PAGE_BYTES = 2 * 1024 * 1024  # of an attached page searched
MAX_PDF_BYTES = 512 * 1024  # a "one link" PDF is small; bigger ones are documents
# What a page needs to act: run code, post a form, move the browser, or carry a payload.
_ACTIVE = re.compile(
    rb"<script|<form|http-equiv\s*=\s*[\"']?refresh|window\.location|location\.href|"
    rb"document\.write|\batob\s*\(|\beval\s*\(|<iframe|<embed|<object|"
    rb"data:[a-z/+.-]+;base64,",
    re.IGNORECASE,
)
# A smuggled payload: a long base64 run. Found run by run (each match consumes its run), not
# as "{2000}" from every position, which costs a run's length squared.
_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]{64,}")
MIN_BLOB_CHARS = 2000
_PDF_URI = re.compile(rb"/URI\s*\(([^)]{1,2000})\)")
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![s\w])")
_QR_WORDS = re.compile(r"\b(?:qr|scan)\b", re.IGNORECASE)
MAX_QR_TEXT_WORDS = 80


class HarvestCheck(Check):
    name = "harvest"
    phase = Phase.DATA
    symbols = frozenset(
        {
            "HARVEST_PASSWORD_FORM",
            "HARVEST_FORM_OFFSITE",
            "HARVEST_ACTIVE_PAGE",
            "HARVEST_PDF_ONE_LINK",
            "HARVEST_QR_LURE",
        }
    )

    def __init__(
        self, rules_dir: Path, timeout_s: float = 10.0, on_error: OnError = OnError.IGNORE
    ) -> None:
        super().__init__(timeout_s, on_error)

    async def run(self, tx: Transaction) -> CheckResult:
        content = message_content(tx.message)
        from_reg = _from_domain(tx)
        found: dict[str, Symbol] = {}
        for form in content.forms:
            target = url_host(form.action) if form.action else None
            if form.has_password and "HARVEST_PASSWORD_FORM" not in found:
                found["HARVEST_PASSWORD_FORM"] = Symbol(
                    "HARVEST_PASSWORD_FORM", f"action={form.action[:80] or '(script)'}"
                )
            elif target and (registered_domain(target) or target) != from_reg:
                found.setdefault(
                    "HARVEST_FORM_OFFSITE",
                    Symbol("HARVEST_FORM_OFFSITE", f"action_host={target} from_domain={from_reg}"),
                )
        images = 0
        leaves = (p for p in tx.message.walk() if not p.is_multipart())
        for part in itertools.islice(leaves, MAX_PARTS):
            ctype = part.get_content_type()
            name = part_filename(part)
            if ctype.startswith("image/") and ctype != "image/svg+xml":
                images += 1
            is_page = name.lower().endswith(_PAGE_EXTENSIONS) or (
                bool(name) and ctype in _PAGE_TYPES
            )
            if is_page and "HARVEST_ACTIVE_PAGE" not in found:
                data = part_bytes(part)[:MAX_PAGE_BYTES]
                if what := _active(data):
                    found["HARVEST_ACTIVE_PAGE"] = Symbol(
                        "HARVEST_ACTIVE_PAGE", f"file={name!r} found={what!r}"
                    )
            is_pdf = ctype == "application/pdf" or name.lower().endswith(".pdf")
            if is_pdf and _small(part) and "HARVEST_PDF_ONE_LINK" not in found:
                data = part_bytes(part)
                if len(data) <= MAX_PDF_BYTES and (host := _one_link(data, from_reg)):
                    found["HARVEST_PDF_ONE_LINK"] = Symbol(
                        "HARVEST_PDF_ONE_LINK", f"file={name!r} link_host={host}"
                    )
        text = " ".join(content.texts)
        words = len(text.split())
        if images and words <= MAX_QR_TEXT_WORDS and _QR_WORDS.search(text):
            real_links = [a for a in content.anchors if a.href[:4].lower() == "http"]
            if not real_links:
                found["HARVEST_QR_LURE"] = Symbol(
                    "HARVEST_QR_LURE", f"images={images} words={words} no links"
                )
        return self.result(*found.values())


def _small(part: Message) -> bool:
    """Whether a part's encoded content is within the one-link PDF bound: a big PDF is a
    document, and is not decoded for this. (The encoded text as the parser keeps it:
    get_payload() would apply a declared charset, and raise on one such as idna.)"""
    payload = getattr(part, "_payload", None)  # the encoded text, read without decoding
    return isinstance(payload, str) and len(payload) <= MAX_PDF_BYTES * 4 // 3 + 4096


def _active(page: bytes) -> str | None:
    """What makes an attached page act (a script, a form, a redirect, a payload), or None."""
    if found := _ACTIVE.search(page):
        return found.group(0)[:30].decode("ascii", "replace")
    for run in _BASE64_RUN.finditer(page):
        if len(run.group(0)) >= MIN_BLOB_CHARS:
            return f"base64 run of {len(run.group(0))} characters"
    return None


def _from_domain(tx: Transaction) -> str:
    pairs = header_addresses([header_str(v) for v in tx.message.get_all("From") or []])
    domain = pairs[0][1].lower().rpartition("@")[2] if pairs else ""
    return registered_domain(domain) or domain


def _one_link(pdf: bytes, from_reg: str) -> str | None:
    """The host of a one-page PDF whose only link leads off the sender's domain."""
    if len(_PDF_PAGE.findall(pdf)) != 1:
        return None
    hosts = {
        host
        for uri in _PDF_URI.findall(pdf)
        if (host := url_host(uri.decode("latin-1"))) is not None
    }
    if len(hosts) != 1:
        return None
    host = hosts.pop()
    return host if (registered_domain(host) or host) != from_reg else None
