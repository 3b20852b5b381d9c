"""Phishing data and the domain logic the phishing checks share (issue 27): brands and their
domains (rules/brands.toml), link hosts and free-mail domains (rules/phishing_hosts.toml), and
the look-alike tests (confusable characters, brand names inside other domains, small edit
distances). Loaded when the checks are built, so SIGHUP reloads it with them.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from confusable_homoglyphs import confusables

from gateway.config import rule_file_in
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
    # Indexes built once per load: every link host of every message is looked up in them.
    domain_owner: dict[str, Brand] = field(init=False, repr=False, compare=False)
    tokens: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)
    tokens_by_length: dict[int, list[tuple[str, str]]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        owners: dict[str, Brand] = {}
        tokens: list[tuple[str, str]] = []
        by_length: dict[int, list[tuple[str, str]]] = {}
        for brand in self.brands:
            for domain in brand.domains:
                owners.setdefault(domain, brand)
            for token in brand.tokens:
                tokens.append((token, brand.key))
                by_length.setdefault(len(token), []).append((token, brand.key))
        object.__setattr__(self, "domain_owner", owners)
        object.__setattr__(self, "tokens", tuple(tokens))
        object.__setattr__(self, "tokens_by_length", by_length)

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
        labels = domain.lower().rstrip(".").split(".")
        for i in range(len(labels) - 1):
            if (brand := self.domain_owner.get(".".join(labels[i:]))) is not None:
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
    """Both data files of `rules_dir` (each the shipped one where the admin has none);
    ConfigError with one line per problem."""
    problems: list[str] = []
    brands_path = rule_file_in(rules_dir, BRANDS_FILE)
    hosts_path = rule_file_in(rules_dir, HOSTS_FILE)
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
    # A protected domain's first label alone may be a common word others use ("nordic-pumps"
    # for nordic.example): its look-alikes are the whole name ("example-org-hr") and edits.
    for own in protected:
        if own.replace(".", "-") in reg_shown or own.replace(".", "") in reg_shown.split(".")[0]:
            return Lookalike("brand-name", own)
    if not shown.isascii():
        flat = skeleton(shown)
        if (brand := data.owner(flat)) is not None:
            return Lookalike("confusable", brand.key)
        if own_flat := next((own for own in protected if in_domains(flat, (own,))), None):
            return Lookalike("confusable", own_flat)
        flat_parts = re.split(r"[.-]", flat)
        for token, key in data.tokens:
            if len(token) >= 4 and any(token in part for part in flat_parts):
                return Lookalike("confusable", key)
    if found := _domain_written_out(shown, data, protected):
        return found
    label = reg_shown.split(".")[0]
    flat_label = skeleton(label).translate(_LEET)
    # Letter pairs that read as one letter in most fonts ("rnicrosoft", "vvellsfargo").
    paired = flat_label.replace("rn", "m").replace("vv", "w")
    parts = {p for variant in (flat_label, paired) for p in re.split(r"[-_]", variant) if p}
    for token, key in data.tokens:
        for part in parts:
            if part == token or (
                len(token) >= 6 and (part.startswith(token) or part.endswith(token))
            ):
                return Lookalike("brand-name", key)
    if found := _edited(flat_label, parts, data, protected):
        return found
    if found := _brand_in_subdomain(shown, reg_shown, data):
        return found
    if not shown.isascii():
        # Every letter of the name looks like a Latin one (book\u0131ng, a dotless i): the
        # only use of registering it is to pass for the ASCII name. "müller" keeps its ü.
        if skeleton(reg_shown).isascii():
            return Lookalike("confusable", skeleton(reg_shown))
        if any(is_mixed_script(lbl) for lbl in shown.split(".")):
            return Lookalike("mixed-script", "")
    return None


def _brand_in_subdomain(shown: str, reg_shown: str, data: PhishingData) -> Lookalike | None:
    """A brand's token as one of several hyphenated words of a label left of the registered
    name ("dhl-zustellung-de.paket-info24.top"). A label that is the token alone is a tenant
    of a service ("dropbox.zendesk.com") and does not count."""
    labels = shown[: -len(reg_shown)].rstrip(".").split(".") if shown != reg_shown else []
    for label in labels:
        parts = skeleton(label).translate(_LEET).split("-")
        if len(parts) < 2:
            continue
        for token, key in data.tokens:
            if any(part == token or (len(token) >= 6 and part.startswith(token)) for part in parts):
                return Lookalike("brand-in-subdomain", key)
    return None


def _domain_written_out(
    shown: str, data: PhishingData, protected: tuple[str, ...]
) -> Lookalike | None:
    """A brand's or our domain written out at the start of another host name
    ("usps.com-redelivery.xyz", "paypal.com.secure-login.example", "x.paypal.com-id.example")."""
    starts = [0] + [i + 1 for i, char in enumerate(shown) if char == "."]
    for start in starts:
        for end in range(start + 1, len(shown)):
            char = shown[end]
            if char == "-" or (char == "." and start == 0):
                candidate = shown[start:end]
                if (brand := data.domain_owner.get(candidate)) is not None:
                    return Lookalike("brand-domain-prefix", brand.key)
                if candidate in protected:
                    return Lookalike("brand-domain-prefix", candidate)
    return None


def _bigrams(text: str) -> frozenset[str]:
    return frozenset(text[i : i + 2] for i in range(len(text) - 1))


def _near(text: str, text_bigrams: frozenset[str], token: str, limit: int) -> bool:
    """Whether `text` is 1..limit edits from `token`. An edit touches at most three letter
    pairs, so a token losing more of its distinct pairs than 3 per edit is too far: that
    cheap test spares most of the distance computations."""
    if not limit or text == token:
        return False
    token_bigrams = _bigrams(token)
    if len(text_bigrams & token_bigrams) < len(token_bigrams) - 3 * limit:
        return False
    return _distance(text, token, limit) <= limit


def _edited(
    flat_label: str, parts: set[str], data: PhishingData, protected: tuple[str, ...]
) -> Lookalike | None:
    """A name a small edit away from a brand token (whole name: one edit from 6 letters, two
    from 9; a part of a hyphenated name: one from 7, two from 9) or our own first label."""
    candidates = [(own.split(".")[0], own) for own in protected]
    for length in range(len(flat_label) - 2, len(flat_label) + 3):
        candidates += data.tokens_by_length.get(length, [])
    label_bigrams = _bigrams(flat_label)
    for token, key in candidates:
        limit = 2 if len(token) >= 9 else 1 if len(token) >= 6 else 0
        if _near(flat_label, label_bigrams, token, limit):
            return Lookalike("edit-distance", key)
    for part in parts:
        part_bigrams = _bigrams(part)
        for length in range(len(part) - 2, len(part) + 3):
            for token, key in data.tokens_by_length.get(length, []):
                # From 7 letters on, where a word one letter off a brand is rarely a word of
                # its own ("paypai" could be; "netfiix" is not).
                limit = 2 if len(token) >= 9 else 1 if len(token) >= 7 else 0
                if _near(part, part_bigrams, token, limit):
                    return Lookalike("edit-distance", key)
    return None
