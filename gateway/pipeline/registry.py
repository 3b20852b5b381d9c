"""Which checks exist, which are enabled, and in which phase each runs.

The composition root (cli) builds the I/O clients into `Services`; this module turns the
configuration into check instances. Adding a check = one entry in `_FACTORIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.checks.antivirus import AntivirusCheck
from gateway.checks.arc import ArcCheck
from gateway.checks.archive import ArchiveLimits
from gateway.checks.attachments import AttachmentLimits, AttachmentsCheck
from gateway.checks.brands import BrandCheck
from gateway.checks.classifier import ClassifierCheck
from gateway.checks.dkim import DkimCheck
from gateway.checks.dmarc import DmarcCheck
from gateway.checks.dnsbl import DnsblAtRcptCheck, DnsblCheck
from gateway.checks.filetypes import RULES_FILE as ATTACHMENT_RULES_FILE
from gateway.checks.filetypes import load_type_rules
from gateway.checks.greylist import SYMBOLS as GREYLIST_SYMBOLS
from gateway.checks.gtube import GtubeCheck
from gateway.checks.harvest import HarvestCheck
from gateway.checks.headers import HeadersCheck
from gateway.checks.links import LinkCheck
from gateway.checks.lists import ListsCheck
from gateway.checks.lookalike import LookalikeCheck
from gateway.checks.mime import MimeCheck
from gateway.checks.ratelimit import STATE_FILE as RATELIMIT_STATE_FILE
from gateway.checks.ratelimit import RateLimitCheck, load_limits
from gateway.checks.rules import RulesCheck
from gateway.checks.sender import SenderCheck
from gateway.checks.spf import SpfCheck
from gateway.checks.uribl import UriblCheck
from gateway.config import Config
from gateway.dnslists import load_zones
from gateway.errors import ConfigError
from gateway.net.clamd import ClamdClient, parse_address
from gateway.net.dns import Resolver
from gateway.pipeline.check import Check, declared_class_symbols
from gateway.state.keys import Clock
from gateway.state.ratelimit import SqliteRateLimitStore


@dataclass
class Services:
    """Shared I/O clients the checks use; built once per process by the composition root."""

    resolver: Resolver | None = None  # the one DNS client (gateway.net.dns)
    clock: Clock | None = None  # wall time of the state (rate limits); tests move their own


def _headers(config: Config, services: Services) -> Check | None:
    c = config.checks.headers
    return HeadersCheck(c.timeout_s, c.on_error) if c.enabled else None


def _gtube(config: Config, services: Services) -> Check | None:
    c = config.checks.gtube
    return GtubeCheck(c.timeout_s, c.on_error) if c.enabled else None


def _mime(config: Config, services: Services) -> Check | None:
    c = config.checks.mime
    return MimeCheck(c.timeout_s, c.on_error) if c.enabled else None


def _antivirus(config: Config, services: Services) -> Check | None:
    c = config.checks.antivirus
    if not c.enabled:
        return None
    client = ClamdClient(parse_address(c.address), c.timeout_s)
    return AntivirusCheck(client, c.max_scan_bytes, c.on_error, c.max_file_bytes)


def _attachments(config: Config, services: Services) -> Check | None:
    c, av = config.checks.attachments, config.checks.antivirus
    if not c.enabled:
        return None
    rules = load_type_rules(config.rule_file(ATTACHMENT_RULES_FILE))
    archive = ArchiveLimits(
        c.max_archive_depth,
        c.max_nested_archive_bytes,
        c.max_compression_ratio,
        c.max_archive_inflated_bytes,
        # What clamd would skip inside an archive, when clamd runs at all.
        av.max_file_bytes if av.enabled else None,
    )
    limits = AttachmentLimits(c.max_parts, c.max_decoded_bytes, c.max_archive_entries, archive)
    return AttachmentsCheck(rules, limits, c.timeout_s, c.on_error)


def _rules(config: Config, services: Services) -> Check | None:
    c = config.checks.rules
    if not c.enabled:
        return None
    paths = [config.rule_file(name) for name in c.files]
    return RulesCheck(paths, c.timeout_s, c.on_error, c.max_header_chars, c.max_body_chars)


def _lists(config: Config, services: Services) -> Check | None:
    c = config.checks.lists
    return ListsCheck(config.rule_file(c.file), c.timeout_s, c.on_error) if c.enabled else None


# The phishing checks (issue 27): data in rules/brands.toml and rules/phishing_hosts.toml; our
# own domains ([relay] domains) are protected like brands.
def _brand(config: Config, services: Services) -> Check | None:
    c = config.checks.brand
    if not c.enabled:
        return None
    return BrandCheck(config.rules_dir, config.relay.domains, c.timeout_s, c.on_error)


def _lookalike(config: Config, services: Services) -> Check | None:
    c = config.checks.lookalike
    if not c.enabled:
        return None
    return LookalikeCheck(config.rules_dir, config.relay.domains, c.timeout_s, c.on_error)


def _link(config: Config, services: Services) -> Check | None:
    c = config.checks.link
    if not c.enabled:
        return None
    return LinkCheck(config.rules_dir, c.max_link_domains, c.timeout_s, c.on_error)


def _harvest(config: Config, services: Services) -> Check | None:
    c = config.checks.harvest
    return HarvestCheck(config.rules_dir, c.timeout_s, c.on_error) if c.enabled else None


def _sender(config: Config, services: Services) -> Check | None:
    c = config.checks.sender
    return SenderCheck(config.rules_dir, c.timeout_s, c.on_error) if c.enabled else None


def _ratelimit(config: Config, services: Services) -> Check | None:
    c = config.checks.ratelimit
    path = config.rules_dir / c.file
    # A rules directory copied before rate limits existed has no such file: no limits.
    limits = load_limits(path) if c.enabled and path.exists() else []
    if not limits:  # none configured as shipped: nothing to count
        return None
    store = SqliteRateLimitStore(config.storage_dir / RATELIMIT_STATE_FILE)
    return RateLimitCheck(limits, store, services.clock, c.timeout_s, c.on_error)


def _resolver_for(check: str, services: Services) -> Resolver:
    if services.resolver is None:
        raise ConfigError([f"checks.{check}: enabled, but no DNS resolver was built"])
    return services.resolver


def _dnsbl(config: Config, services: Services) -> Check | None:
    c = config.checks.dnsbl
    zones = load_zones(config.rule_file(c.zones_file), "ip") if c.enabled else []
    if not zones:  # every list is off by default: nothing to query
        return None
    check_class = DnsblAtRcptCheck if c.phase == "rcpt" else DnsblCheck
    return check_class(
        zones,
        _resolver_for("dnsbl", services),
        c.timeout_s,
        c.on_error,
        c.skip_networks,
        c.failures_before_pause,
        c.pause_s,
    )


def _uribl(config: Config, services: Services) -> Check | None:
    c = config.checks.uribl
    zones = load_zones(config.rule_file(c.zones_file), "domain") if c.enabled else []
    if not zones:
        return None
    return UriblCheck(
        zones,
        _resolver_for("uribl", services),
        c.timeout_s,
        c.on_error,
        c.max_domains,
        c.failures_before_pause,
        c.pause_s,
    )


def _spf(config: Config, services: Services) -> Check | None:
    c = config.checks.spf
    if not c.enabled:
        return None
    if c.temperror_at == "data" and not config.checks.dmarc.enabled:
        raise ConfigError(['checks.spf.temperror_at: "data" needs checks.dmarc enabled'])
    return SpfCheck(
        _resolver_for("spf", services), c.dns_time_s, c.timeout_s, c.on_error, c.temperror_at
    )


def _dkim(config: Config, services: Services) -> Check | None:
    c = config.checks.dkim
    if not c.enabled:
        return None
    return DkimCheck(
        _resolver_for("dkim", services),
        c.min_rsa_bits,
        c.timeout_s,
        c.on_error,
        c.max_signatures,
        c.dns_time_s,
    )


def _arc(config: Config, services: Services) -> Check | None:
    c = config.checks.arc
    if not c.enabled:
        return None
    resolver = _resolver_for("arc", services)
    return ArcCheck(
        resolver, config.checks.dkim.min_rsa_bits, c.timeout_s, c.on_error, c.dns_time_s
    )


def _dmarc(config: Config, services: Services) -> Check | None:
    c = config.checks.dmarc
    if not c.enabled:
        return None
    resolver = _resolver_for("dmarc", services)
    spf = config.checks.spf
    decides_spf_temperror = spf.enabled and spf.temperror_at == "data"
    return DmarcCheck(
        resolver, c.trusted_arc_sealers, c.timeout_s, c.on_error, decides_spf_temperror
    )


def _classifier(config: Config, services: Services) -> Check | None:
    c = config.checks.classifier
    if not c.enabled:
        return None
    return ClassifierCheck.from_file(
        Path(c.model),
        spam_threshold=c.spam_threshold,
        ham_threshold=c.ham_threshold,
        explain_features=c.explain_features,
        min_known_words=c.min_known_words,
        tiers=c.tiers,
        spam_high_threshold=c.spam_high_threshold,
        ham_high_threshold=c.ham_high_threshold,
        timeout_s=c.timeout_s,
        on_error=c.on_error,
    )


_FACTORIES: tuple[Callable[[Config, Services], Check | None], ...] = (
    _headers,
    _mime,
    _gtube,
    _dnsbl,
    _lists,
    _ratelimit,
    _rules,
    _brand,
    _lookalike,
    _link,
    _harvest,
    _sender,
    _uribl,
    _antivirus,
    _attachments,
    _spf,
    _dkim,
    _arc,
    _dmarc,
    _classifier,
)


def declared_symbols(config: Config) -> frozenset[str]:
    """Every symbol any check could emit under this configuration's rule files, enabled or not:
    what rules/scores.toml and actions.toml may name without being a typo."""
    zones = [
        *load_zones(config.rule_file(config.checks.dnsbl.zones_file), "ip", include_disabled=True),
        *load_zones(
            config.rule_file(config.checks.uribl.zones_file), "domain", include_disabled=True
        ),
    ]
    # The greylist step (checks/greylist.py) runs after the verdict, not in the runner.
    declared = declared_class_symbols() | GREYLIST_SYMBOLS
    return declared.union(*(zone.symbols() for zone in zones))


def build_checks(config: Config, services: Services) -> list[Check]:
    checks = [c for factory in _FACTORIES if (c := factory(config, services)) is not None]
    names = [c.name for c in checks]
    if len(names) != len(set(names)):
        raise ValueError(f"duplicate check names: {names}")
    return checks
