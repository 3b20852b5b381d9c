"""URLs and domains in message text: found, de-obfuscated, reduced to registered domains.

Registered domains come from the public suffix list bundled with `publicsuffixlist` (read from
the installed package; the library only downloads when its separate `update` module is run,
which the gateway never imports).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from functools import cache
from urllib.parse import urlsplit

from publicsuffixlist import PublicSuffixList

from gateway.content import Content

# Cheap de-obfuscations spammers and phishing reports use: hxxp://, example[.]com, example(dot)com.
_HXXP = re.compile(r"\bh[x*]{2}p(s?)(?=://)", re.IGNORECASE)
_BRACKET_DOT = re.compile(r"[\[({]\s*(?:\.|dot)\s*[\])}]\s?", re.IGNORECASE)
# A URL with a scheme, or a bare www. host; stops at whitespace, quotes and angle brackets.
_URL = re.compile(r"""(?<![\w.-])(?:(?:https?|ftp)://|www\.)[^\s<>"'`{}|\\^\[\]]+""", re.IGNORECASE)
_TRAILING = ".,;:!?)'\""
# DNS limits included (63 per label, 253 in all): a longer "host" is no domain to look up.
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$"
)


def deobfuscate(text: str) -> str:
    """Undo the cheap obfuscations so the URL pattern sees ordinary URLs."""
    if "xx" in text or "XX" in text or "**" in text:
        text = _HXXP.sub(r"http\1", text)
    if "[" in text or "(" in text or "{" in text:
        text = _BRACKET_DOT.sub(".", text)
    return text


def find_urls(text: str, limit: int = 500) -> list[str]:
    """URLs in free text, in order of appearance, at most `limit`."""
    text = deobfuscate(text)
    # Every match holds "://" or "www." (in any case): text with neither, most mail, is not
    # run through the pattern (which tries its look-behind at every position).
    if "://" not in text and "www." not in text.lower():
        return []
    found: list[str] = []
    for match in _URL.finditer(text):
        found.append(match.group(0).rstrip(_TRAILING))
        if len(found) >= limit:
            break
    return found


def url_host(url: str) -> str | None:
    """The lower-case host of a URL or link target (mailto: gives the address's domain)."""
    url = url.strip()
    if url[:7].lower() == "mailto:":
        host = url[7:].partition("?")[0].rpartition("@")[2]
    else:
        if url[:4].lower() == "www.":
            url = "http://" + url
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:  # e.g. an unbalanced IPv6 bracket
            return None
    host = host.strip().rstrip(".").lower()
    if not host:
        return None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return host


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@cache
def suffix_list() -> PublicSuffixList:
    """The public suffix list bundled with the package (never downloads), one per process."""
    return PublicSuffixList()


def registered_domain(host: str) -> str | None:
    """The registrable domain of a host name (www.shop.example.co.uk -> example.co.uk).

    None for IP addresses, public suffixes themselves and names that are not host names.
    """
    host = host.rstrip(".").lower()
    if is_ip_address(host) or not _HOSTNAME.match(host):
        return None
    domain: str | None = suffix_list().privatesuffix(host)
    return domain


def unique_domains(hosts: Iterable[str], limit: int) -> list[str]:
    """Distinct registered domains of `hosts`, in order of first appearance, at most `limit`."""
    seen: dict[str, None] = {}
    # Each host once: a message may link one host hundreds of times, and every look-up in the
    # public suffix list costs ~16 us.
    for host in dict.fromkeys(host.rstrip(".").lower() for host in hosts):
        domain = registered_domain(host)
        if domain is not None and domain not in seen:
            seen[domain] = None
            if len(seen) >= limit:
                break
    return list(seen)


def content_urls(content: Content, limit: int = 500) -> list[str]:
    """Every URL of a message: link targets of HTML parts, then URLs written in the text."""
    urls = [link for link in content.links if ":" in link or link[:4].lower() == "www."]
    for text in content.texts:
        if len(urls) >= limit:
            break
        urls.extend(find_urls(text, limit - len(urls)))
    return urls[:limit]


def content_domains(content: Content, limit: int) -> list[str]:
    """Registered domains of every URL of a message, at most `limit`."""
    hosts = (host for url in content_urls(content) if (host := url_host(url)) is not None)
    return unique_domains(hosts, limit)
