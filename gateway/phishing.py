"""Phishing data and the domain logic the phishing checks share (issue 27): brands and their
domains (rules/brands.toml), link hosts and free-mail domains (rules/phishing_hosts.toml), and
the look-alike tests (confusable characters, brand names inside other domains, small edit
distances). Loaded when the checks are built, so SIGHUP reloads it with them.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from confusable_homoglyphs import confusables

from gateway.content import Anchor, Content
from gateway.errors import ConfigError
from gateway.files import read_toml
from gateway.urls import find_urls, registered_domain

BRANDS_FILE = "brands.toml"
HOSTS_FILE = "phishing_hosts.toml"
_HOST_LISTS = ("free_hosting", "form_services", "trackers", "freemail", "lure_words")
# Digits phishers put for letters ("paypa1", "micros0ft").
_LEET = str.maketrans("0134578", "oleastb")
_DOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?\.[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class Brand:
    key: str
    names: tuple[str, ...]
    domains: frozenset[str]
    tokens: tuple[str, ...]
    name_pattern: re.Pattern[str] | None


@dataclass(frozen=True)
class PhishingData:
    brands: tuple[Brand, ...]
    free_hosting: tuple[str, ...] = ()
    form_services: tuple[str, ...] = ()
    trackers: tuple[str, ...] = ()
    freemail: frozenset[str] = frozenset()
    lure_words: frozenset[str] = frozenset()

    def brand_named(self, text: str) -> tuple[Brand, str] | None:
        """The first brand whose name `text` holds as a whole word, with the name found."""
        found = self.brands_named(text)
        return found[0] if found else None

    def brands_named(self, text: str) -> list[tuple[Brand, str]]:
        """Every brand whose name `text` holds as a whole word ("Dropbox Sign" names Dropbox
        and HelloSign), with the name found."""
        return [
            (brand, found.group(0))
            for brand in self.brands
            if brand.name_pattern and (found := brand.name_pattern.search(text))
        ]

    def impersonated(self, text: str, domain: str) -> tuple[Brand, str] | None:
        """The brand `text` names while `domain` is of none of the brands it names. Names
        spelt with look-alike letters ("\u0410pple Supp\u043ert", Cyrillic) count: the text is
        read as its Latin skeleton too."""
        named = self.brands_named(text)
        if not text.isascii():
            named += self.brands_named(skeleton(text))
        if any(in_domains(domain, brand.domains) for brand, _ in named):
            return None
        return named[0] if named else None

    def owner(self, domain: str) -> Brand | None:
        """The brand `domain` (or a parent of it) belongs to."""
        for brand in self.brands:
            if in_domains(domain, brand.domains):
                return brand
        return None

    def is_freemail(self, domain: str) -> bool:
        return in_domains(domain, self.freemail)


def in_domains(domain: str, domains: frozenset[str] | tuple[str, ...]) -> bool:
    """Whether `domain` is one of `domains` or a subdomain of one."""
    domain = domain.lower().rstrip(".")
    labels = domain.split(".")
    return any(".".join(labels[i:]) in domains for i in range(len(labels) - 1))


def host_listed(host: str, path: str, entries: tuple[str, ...]) -> str | None:
    """The entry of `entries` a link to `host` + `path` falls under, or None."""
    host = host.lower().rstrip(".")
    for entry in entries:
        entry_host, _, entry_path = entry.partition("/")
        on_host = host == entry_host or host.endswith("." + entry_host)
        if on_host and (not entry_path or path.lstrip("/").startswith(entry_path)):
            return entry
    return None


def _strings(value: Any, where: str, problems: list[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        problems.append(f"{where}: expected a list of non-empty strings")
        return []
    return [v.strip() for v in value]


def load_phishing_data(rules_dir: Path) -> PhishingData:
    """Both data files of `rules_dir`; ConfigError with one line per problem."""
    problems: list[str] = []
    brands_path, hosts_path = rules_dir / BRANDS_FILE, rules_dir / HOSTS_FILE
    data = read_toml(brands_path)
    if unknown := set(data) - {"brand"}:
        problems.append(f"{brands_path}: unknown tables {sorted(unknown)} (known: brand)")
    brands = []
    for key, table in (data.get("brand") or {}).items():
        where = f"{brands_path}: brand.{key}"
        if not isinstance(table, dict):
            problems.append(f"{where}: expected a table")
            continue
        if unknown := set(table) - {"names", "domains", "tokens"}:
            problems.append(f"{where}: unknown keys {sorted(unknown)}")
        names = _strings(table.get("names", []), f"{where}.names", problems)
        domains = [d.lower() for d in _strings(table.get("domains"), f"{where}.domains", problems)]
        for domain in domains:
            if not _DOMAIN.match(domain):
                problems.append(f"{where}.domains: {domain!r} is not a domain name")
        tokens = [t.lower() for t in _strings(table.get("tokens", []), f"{where}.tokens", problems)]
        if "tokens" not in table and domains:  # `tokens = []`: none, on purpose
            tokens = [domains[0].split(".")[0]]
        pattern = (
            re.compile(
                r"(?<![\w.])(?:" + "|".join(re.escape(n) for n in names) + r")(?![\w])",
                re.IGNORECASE,
            )
            if names
            else None
        )
        brands.append(Brand(key, tuple(names), frozenset(domains), tuple(tokens), pattern))
    hosts = read_toml(hosts_path)
    if unknown := set(hosts) - set(_HOST_LISTS):
        problems.append(f"{hosts_path}: unknown keys {sorted(unknown)} (known: {_HOST_LISTS})")
    lists = {
        key: tuple(
            e.lower() for e in _strings(hosts.get(key, []), f"{hosts_path}: {key}", problems)
        )
        for key in _HOST_LISTS
    }
    if problems:
        raise ConfigError(problems)
    return PhishingData(
        tuple(brands),
        lists["free_hosting"],
        lists["form_services"],
        lists["trackers"],
        frozenset(lists["freemail"]),
        frozenset(lists["lure_words"]),
    )


def clickable_links(content: Content, limit: int = 500) -> list[Anchor]:
    """What a reader can click: the <a href> links with their text, then the URLs written in
    the text (plain-text phishing; the mail client makes them links), each as its own text.
    Not image sources: newsletters load images from the same hosting phishers use."""
    links = list(content.anchors[:limit])
    for text in content.texts:
        if len(links) >= limit:
            break
        links.extend(Anchor(url, url) for url in find_urls(text, limit - len(links)))
    return links


# --- look-alike domains -----------------------------------------------------------------------


def unicode_domain(domain: str) -> str:
    """`domain` with its punycode (xn--) labels shown as the reader's client shows them."""
    labels = []
    for label in domain.lower().rstrip(".").split("."):
        if label.startswith("xn--"):
            with contextlib.suppress(UnicodeError):
                label = label.encode("ascii").decode("idna")
        labels.append(label)
    return ".".join(labels)


@lru_cache(maxsize=4096)
def skeleton(text: str) -> str:
    """`text` with every character that looks like an ASCII letter replaced by it (Unicode's
    confusables data, through confusable_homoglyphs): Cyrillic and Greek look-alikes, and
    Latin ones too (dotless i, script g); NFKC first for compatibility forms."""
    text = unicodedata.normalize("NFKC", text).lower()
    if text.isascii():
        return text
    out = []
    for char in text:
        if char.isascii():
            out.append(char)
            continue
        found = confusables.is_confusable(char, greedy=True, preferred_aliases=[]) or []
        latin = [
            h["c"] for item in found for h in item["homoglyphs"] if h["c"].isascii() and h["c"]
        ]
        out.append(latin[0].lower() if latin else char)
    return "".join(out)


def is_mixed_script(label: str) -> bool:
    """Whether a domain label mixes scripts (Latin with Cyrillic, Greek...)."""
    letters = "".join(c for c in label if c.isalpha())
    return bool(letters) and not letters.isascii() and bool(confusables.is_mixed_script(letters))


def _distance(a: str, b: str, limit: int) -> int:
    """Optimal string alignment distance (a swap of two letters counts one), capped at
    limit + 1 so that most pairs are dismissed at once."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1]


def lure_word(domain: str, data: PhishingData) -> str | None:
    """The lure word of a registered domain made of hyphenated parts, one a lure word
    ("account-unlock-id.com": "account"); None for one-word names and for brand domains."""
    reg = registered_domain(domain)
    if reg is None or data.owner(reg) is not None:
        return None
    parts = reg.split(".")[0].split("-")
    if len(parts) < 2:
        return None
    return next((part for part in parts if part in data.lure_words), None)


@dataclass(frozen=True)
class Lookalike:
    kind: str  # confusable, brand-name, edit-distance, mixed-script
    target: str  # the brand key or protected domain imitated


def lookalike(domain: str, data: PhishingData, protected: tuple[str, ...]) -> Lookalike | None:
    """How `domain` imitates a brand's or a protected domain, or None. A domain of the brand
    (or a protected one) itself is never a look-alike."""
    shown = unicode_domain(domain)
    if in_domains(domain, protected) or data.owner(domain) is not None:
        return None
    reg = registered_domain(domain) or domain
    reg_shown = unicode_domain(reg)
    targets: list[tuple[str, frozenset[str], tuple[str, ...]]] = [
        (brand.key, brand.domains, brand.tokens) for brand in data.brands
    ]
    # A protected domain's first label alone may be a common word others use ("nordic-pumps"
    # for nordic.example): its look-alikes are the whole name ("example-org-hr") and edits.
    for own in protected:
        if own.replace(".", "-") in reg_shown or own.replace(".", "") in reg_shown.split(".")[0]:
            return Lookalike("brand-name", own)
        targets.append((own, frozenset({own}), ()))
    if not shown.isascii():
        flat = skeleton(shown)
        for key, domains, tokens in targets:
            if in_domains(flat, domains) or any(
                t in part for part in re.split(r"[.-]", flat) for t in tokens if len(t) >= 4
            ):
                return Lookalike("confusable", key)
    # The brand's domain written out at the start of another ("usps.com-redelivery.xyz").
    for key, domains, _ in targets:
        for own in domains:
            if shown.startswith(own + "-") or f".{own}-" in shown or shown.startswith(own + "."):
                return Lookalike("brand-domain-prefix", key)
    label = reg_shown.split(".")[0]
    flat_label = skeleton(label).translate(_LEET)
    # Letter pairs that read as one letter in most fonts ("rnicrosoft", "vvellsfargo").
    paired = flat_label.replace("rn", "m").replace("vv", "w")
    parts = {p for variant in (flat_label, paired) for p in re.split(r"[-_]", variant) if p}
    for key, _, tokens in targets:
        for token in tokens:
            for part in parts:
                if part == token or (
                    len(token) >= 6 and (part.startswith(token) or part.endswith(token))
                ):
                    return Lookalike("brand-name", key)
    for key, _domains, tokens in targets:
        # Our own domains have no tokens: their first label is compared, as typed.
        firsts = tokens if key not in protected else (key.split(".")[0],)
        for token in firsts:
            limit = 2 if len(token) >= 9 else 1 if len(token) >= 6 else 0
            if limit and flat_label != token and _distance(flat_label, token, limit) <= limit:
                return Lookalike("edit-distance", key)
            # A part of a longer name ("paypai-secure"): from 7 letters on, where a word one
            # letter off a brand is rarely a word of its own.
            part_limit = 2 if len(token) >= 9 else 1 if len(token) >= 7 else 0
            for part in parts if part_limit else ():
                if part != token and _distance(part, token, part_limit) <= part_limit:
                    return Lookalike("edit-distance", key)
    if not shown.isascii():
        # Every letter of the name looks like a Latin one (book\u0131ng, a dotless i): the
        # only use of registering it is to pass for the ASCII name. "müller" keeps its ü.
        if skeleton(reg_shown).isascii():
            return Lookalike("confusable", skeleton(reg_shown))
        if any(is_mixed_script(lbl) for lbl in shown.split(".")):
            return Lookalike("mixed-script", "")
    return None
