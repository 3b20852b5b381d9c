"""Links of phishing (issue 27): visible text naming one site over a link to another; links
to data: and javascript: URIs; links to free hosting and form services of
rules/phishing_hosts.toml, where credential-harvest pages sit; many distinct link domains.
(IP literals, user@host, shorteners and open redirects are rules of rules/body.toml.)"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from gateway.content import Anchor, message_content
from gateway.model import CheckResult, OnError, Phase, Symbol, Transaction
from gateway.phishing import PhishingData, clickable_links, host_listed, load_phishing_data
from gateway.pipeline.check import Check
from gateway.urls import registered_domain, suffix_list, url_host

# Link text that reads as an address: a URL, or a host name with a dot and a known-looking TLD.
_TEXT_HOST = re.compile(
    r"^\s*(?:https?://)?((?:[a-z0-9-]+\.)+[a-z]{2,24})(?:[:/?#][^\s]*)?\s*$", re.IGNORECASE
)

_FILE_EXTENSIONS = frozenset({"zip", "mov", "pdf", "doc", "docx", "xls", "xlsx", "txt", "log"})


class LinkCheck(Check):
    name = "link"
    phase = Phase.DATA
    symbols = frozenset(
        {
            "LINK_TEXT_MISMATCH",
            "LINK_SCRIPT_URI",
            "LINK_FREE_HOSTING",
            "LINK_FORM_SERVICE",
            "LINK_MANY_DOMAINS",
        }
    )

    def __init__(
        self,
        rules_dir: Path,
        max_link_domains: int = 15,
        timeout_s: float = 10.0,
        on_error: OnError = OnError.IGNORE,
    ) -> None:
        super().__init__(timeout_s, on_error)
        self.data = load_phishing_data(rules_dir)
        self.max_link_domains = max_link_domains

    async def run(self, tx: Transaction) -> CheckResult:
        found: dict[str, Symbol] = {}
        domains: set[str] = set()
        for anchor in clickable_links(message_content(tx.message)):
            href = anchor.href.strip()
            scheme = href.partition(":")[0].strip().lower()
            if scheme in ("data", "javascript", "vbscript") and ":" in href:
                found.setdefault("LINK_SCRIPT_URI", Symbol("LINK_SCRIPT_URI", f"href={href[:80]}"))
                continue
            if scheme not in ("http", "https") and href[:4].lower() != "www.":
                continue
            host = url_host(href)
            if host is None:
                continue
            if (domain := registered_domain(host)) is not None:
                domains.add(domain)
            try:
                path = urlsplit(href).path
            except ValueError:
                path = ""
            for symbol, entries in (
                ("LINK_FREE_HOSTING", self.data.free_hosting),
                ("LINK_FORM_SERVICE", self.data.form_services),
            ):
                if symbol not in found and (entry := host_listed(host, path, entries)):
                    found[symbol] = Symbol(symbol, f"host={host} listed={entry}")
            if "LINK_TEXT_MISMATCH" not in found and (shown := _mismatch(anchor, host, self.data)):
                found["LINK_TEXT_MISMATCH"] = Symbol(
                    "LINK_TEXT_MISMATCH", f"text={shown} href_host={host}"
                )
        if len(domains) > self.max_link_domains:
            found["LINK_MANY_DOMAINS"] = Symbol(
                "LINK_MANY_DOMAINS", f"domains={len(domains)} max={self.max_link_domains}"
            )
        return self.result(*found.values())


def _mismatch(anchor: Anchor, host: str, data: PhishingData) -> str | None:
    """The host the link text shows when it is another site than the link's target."""
    match = _TEXT_HOST.match(anchor.text)
    if match is None:
        return None
    shown = match.group(1).lower()
    written_as_url = "://" in anchor.text or shown.startswith("www.")
    # A bare name is a host only under a real TLD, and not as a file name ("requirements.txt",
    # "scan.zip": .zip and .mov are TLDs too).
    if not written_as_url and (
        suffix_list().privatesuffix(shown, accept_unknown=False) is None
        or shown.rpartition(".")[2] in _FILE_EXTENSIONS
    ):
        return None
    shown_domain, target_domain = registered_domain(shown), registered_domain(host)
    if shown_domain is None or target_domain is None or shown_domain == target_domain:
        return None
    if host_listed(host, "", data.trackers):  # click tracking and link protection rewrite
        return None
    owner = data.owner(shown_domain)
    if owner is not None and owner is data.owner(target_domain):  # paypal.com -> paypal.de
        return None
    return shown
