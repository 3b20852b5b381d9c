"""Typed, frozen settings loaded from TOML. Unknown keys are errors; every default lives here.

Each section is a frozen dataclass; `load_config` walks the dataclasses, checks every value's
type and collects one line per problem, so `gateway check-config` can print them all at once.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from gateway.errors import ConfigError
from gateway.files import read_toml
from gateway.model import OnError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# A checkout (make run, make test, an editable install) has rules/ and models/ at its top; an
# installed wheel carries them as gateway/_shipped/ (setup.py maps them there).
INSTALLED = not (PROJECT_ROOT / "rules" / "scores.toml").is_file()
_SHIPPED_ROOT = Path(__file__).resolve().parent / "_shipped" if INSTALLED else PROJECT_ROOT
SHIPPED_RULES_DIR = _SHIPPED_ROOT / "rules"
SHIPPED_MODEL = _SHIPPED_ROOT / "models" / "classifier.skops"
# Where an installed gateway looks without --config, and keeps its state; a checkout keeps the
# embedded defaults (./var) so that `make run` works as it always did.
INSTALLED_CONFIG = Path("/etc/mailgate/gateway.toml")
DEFAULT_STORAGE_DIR = "/var/lib/mailgate" if INSTALLED else "var"
# Keys holding a file or directory: relative values are taken from the config file's directory.
PATH_KEYS = (
    ("storage", "dir"),
    ("smtp", "tls_cert"),
    ("smtp", "tls_key"),
    ("pipeline", "rules_dir"),
    ("checks", "classifier", "model"),
    ("log", "file"),
)


def parse_hostport(value: str, default_port: int) -> tuple[str, int]:
    """'host', 'host:port', '[v6]:port' or a bare IPv6 address -> (host, port)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
        return host, port
    if value.count(":") == 1:
        host, port_text = value.split(":")
        return host, int(port_text)
    return value, default_port


_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


def _valid_hostport(value: str) -> str | None:
    try:
        host, port = parse_hostport(value, 25)
    except ValueError:
        return f"{value!r} is not host or host:port"
    if not host or not 0 <= port <= 65535:
        return f"{value!r} is not host or host:port"
    return None


@dataclass(frozen=True)
class SmtpConfig:
    listen: str = "127.0.0.1:2525"
    hostname: str = "mx.gateway.test"
    workers: int = 1  # processes sharing the listen port (SO_REUSEPORT)
    banner: str = "ESMTP ready"
    max_message_bytes: int = 25 * 1024 * 1024
    max_line_bytes: int = 8192  # RFC 5321 says 1000; real mail exceeds it, so a safe wider bound
    max_recipients: int = 100
    # Received fields a message may arrive with (Postfix's hopcount_limit): more is a mail
    # loop, e.g. an internal server that forwards back to its MX, and is refused.
    max_received_headers: int = 50
    # RCPTs beyond max_recipients (452 each) before each further one counts as a bad
    # command (Postfix's smtpd_recipient_overshoot_limit): a pipelining client may overshoot.
    max_recipient_overshoot: int = 1000
    # NOOP, RSET, VRFY and HELP between messages before each further one counts as a bad
    # command (Postfix's smtpd_junk_command_limit): else they keep a session busy for ever.
    max_junk_commands: int = 100
    max_connections: int = 500
    max_connections_per_ip: int = 20
    # Message data one worker holds at once over all sessions while receiving and checking
    # (checking costs about 4 times a message's size); past it, 452 and the client retries.
    max_inflight_bytes: int = 256 * 1024 * 1024
    max_inflight_bytes_per_ip: int = 64 * 1024 * 1024  # so that one client cannot take it all
    idle_timeout_s: float = 300.0  # RFC 5321 4.5.3.2: at least 5 minutes between commands
    # With this share of max_connections taken, each read waits at most stress_idle_timeout_s
    # (Postfix's smtpd_timeout = ${stress?10}{300}): slow clients cannot hold every slot.
    stress_at: float = 0.8
    stress_idle_timeout_s: float = 10.0
    tls_handshake_timeout_s: float = 30.0  # STARTTLS: the handshake after the 220 (stress: less)
    session_timeout_s: float = 1800.0
    # Bytes/s a message must arrive at on average (Postfix's smtpd_min_data_rate): DATA may
    # take idle_timeout_s plus its size at this rate. A client dripping a byte before each
    # idle timeout held its session, and its memory, until session_timeout_s.
    min_data_rate: int = 500
    # Per-IP limits count IPv6 clients by this prefix: a single host is often given a /64,
    # 2**64 addresses to spread its connections over.
    ipv6_prefix_length: int = 64
    max_bad_commands: int = 10
    bare_lf: Literal["reject", "normalize"] = "reject"
    tls_cert: str = ""
    tls_key: str = ""
    # Behind HAProxy or a load balancer: connections from trusted_proxies (CIDRs) must start
    # with a PROXY header (v1 or v2) naming the real client, which every check then sees.
    proxy_protocol: bool = False
    trusted_proxies: tuple[str, ...] = ()
    # A Postfix front end (smtpd_authorized_xclient_hosts' counterpart): these networks may
    # name the real client with XCLIENT ADDR=...; nobody else is offered the command.
    xclient_networks: tuple[str, ...] = ()
    # A Postfix upstream with smtp_send_xforward_command (smtpd_authorized_xforward_hosts'
    # counterpart): these networks may name each transaction's client with XFORWARD ADDR=...
    xforward_networks: tuple[str, ...] = ()
    # The organisation's own relays (a backup MX): for mail from them, the client named by
    # the Received field they added on top is judged (SPF, DNS lists, HELO), not the relay.
    trusted_relays: tuple[str, ...] = ()

    def validate(self, problems: list[str], path: str) -> None:
        for key in ("trusted_proxies", "xclient_networks", "xforward_networks", "trusted_relays"):
            for network in getattr(self, key):
                try:
                    ipaddress.ip_network(network, strict=False)
                except ValueError:
                    problems.append(f"{path}.{key}: {network!r} is not an IP network")
        if self.proxy_protocol and not self.trusted_proxies:
            problems.append(f"{path}.proxy_protocol: needs trusted_proxies (the proxies' networks)")
        if err := _valid_hostport(self.listen):
            problems.append(f"{path}.listen: {err}")
        if not _HOSTNAME.fullmatch(self.hostname):
            problems.append(f"{path}.hostname: {self.hostname!r} is not a host name")
        if not _PRINTABLE.fullmatch(self.banner):
            # It goes into the 220 greeting: a CR or LF would forge another reply line.
            problems.append(f"{path}.banner: only printable ASCII characters are allowed")
        if bool(self.tls_cert) != bool(self.tls_key):
            problems.append(f"{path}: tls_cert and tls_key must be set together")
        for name in ("tls_cert", "tls_key"):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                problems.append(f"{path}.{name}: no such file {value!r}")
        _positive(
            self,
            problems,
            path,
            "workers",
            "max_message_bytes",
            "max_recipients",
            "max_received_headers",
            "max_recipient_overshoot",
            "max_junk_commands",
            "max_connections",
            "max_connections_per_ip",
            "idle_timeout_s",
            "stress_idle_timeout_s",
            "tls_handshake_timeout_s",
            "session_timeout_s",
            "min_data_rate",
            "max_bad_commands",
        )
        if not 1 <= self.ipv6_prefix_length <= 128:
            problems.append(f"{path}.ipv6_prefix_length: must be between 1 and 128")
        if self.max_line_bytes < 1000:
            problems.append(f"{path}.max_line_bytes: must be at least 1000 (RFC 5321 4.5.3.1.6)")
        if not 0.0 < self.stress_at <= 1.0:
            problems.append(f"{path}.stress_at: must be a share of max_connections in (0, 1]")
        for name in ("max_inflight_bytes", "max_inflight_bytes_per_ip"):
            if getattr(self, name) < self.max_message_bytes:
                problems.append(
                    f"{path}.{name}: must be at least max_message_bytes"
                    f" ({self.max_message_bytes}), or a message of the largest size never fits"
                )


@dataclass(frozen=True)
class RelayConfig:
    host: str = "127.0.0.1"
    port: int = 2526
    domains: tuple[str, ...] = ()
    tls: Literal["opportunistic", "required", "none"] = "opportunistic"
    tls_verify: bool = False  # internal servers often use self-signed certificates
    timeout_s: float = 60.0
    # The reply to the final dot: the internal server may filter the message first (RFC 5321
    # 4.5.3.2.6 asks for 10 minutes); giving up early would deliver it twice.
    data_timeout_s: float = 600.0
    connections: int = 4  # delivery workers, each with one reusable connection

    def validate(self, problems: list[str], path: str) -> None:
        if not self.domains:
            problems.append(f"{path}.domains: at least one recipient domain is required")
        for domain in self.domains:
            if not domain or "@" in domain or domain.startswith(".") or " " in domain:
                problems.append(f"{path}.domains: {domain!r} is not a domain name")
        if not 1 <= self.port <= 65535:
            problems.append(f"{path}.port: {self.port} is not a TCP port")
        _positive(self, problems, path, "timeout_s", "data_timeout_s", "connections")


@dataclass(frozen=True)
class QueueConfig:
    retry_initial_s: float = 60.0
    retry_max_s: float = 3600.0
    lifetime_s: float = 5 * 24 * 3600.0
    min_free_bytes: int = 100 * 1024 * 1024  # below this, new mail gets 452 4.3.1
    scan_interval_s: float = 5.0
    delay_warning_s: float = 0.0  # DSN "delayed" to the sender after this long; 0 = never

    def validate(self, problems: list[str], path: str) -> None:
        _positive(
            self, problems, path, "retry_initial_s", "retry_max_s", "lifetime_s", "scan_interval_s"
        )
        if self.retry_max_s < self.retry_initial_s:
            problems.append(f"{path}.retry_max_s: must be >= retry_initial_s")
        if not 0 <= self.delay_warning_s < self.lifetime_s:
            problems.append(f"{path}.delay_warning_s: must be 0 (off) or less than lifetime_s")


@dataclass(frozen=True)
class VerifyConfig:
    """Recipient verification at RCPT: probe the internal server (MAIL + RCPT), cache answers."""

    enabled: bool = True
    positive_ttl_s: float = 3600.0  # how long "this user exists" is trusted
    negative_ttl_s: float = 300.0  # how long "no such user" is trusted (users get created)
    on_unavailable: Literal["tempfail", "accept"] = "tempfail"  # internal server cannot answer
    timeout_s: float = 10.0  # a whole probe, connecting included
    connections: int = 2  # pooled probe connections per process
    max_waiting: int = 100  # probes waiting for a free connection; more are "unavailable" at once
    cache_entries: int = 10000
    probe_sender: str = ""  # MAIL FROM of probes; "" = the null sender, as Postfix does
    # A recipient the internal server confirmed within this time is accepted while that server
    # cannot answer (kept on disk under [storage] dir); 0 = off.
    known_ttl_s: float = 14 * 86400.0

    def validate(self, problems: list[str], path: str) -> None:
        _positive(self, problems, path, "timeout_s", "connections", "cache_entries", "max_waiting")
        if self.positive_ttl_s < 0 or self.negative_ttl_s < 0 or self.known_ttl_s < 0:
            problems.append(
                f"{path}: positive_ttl_s, negative_ttl_s and known_ttl_s must be 0 or more"
            )


@dataclass(frozen=True)
class StorageConfig:
    dir: str = DEFAULT_STORAGE_DIR


@dataclass(frozen=True)
class ProcessConfig:
    # `serve` started as root binds its sockets, then runs as this user before it reads any
    # mail or model; "" is allowed only when not started as root.
    user: str = ""
    group: str = ""  # "" = the user's primary group


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = ""  # host:port of /metrics, /healthz, /readyz; "" = off

    def validate(self, problems: list[str], path: str) -> None:
        if self.listen and (err := _valid_hostport(self.listen)):
            problems.append(f"{path}.listen: {err}")


@dataclass(frozen=True)
class QuarantineConfig:
    retention_days: float = 30.0  # held messages and their files are removed after this
    expire_interval_s: float = 3600.0  # how often `serve` runs the expiry
    # Past either limit, mail that would be held gets 451 (anyone can send the GTUBE string).
    max_bytes: int = 4 * 1024**3  # held message bytes in all; 0 = no limit
    max_messages: int = 200_000  # held messages in all; 0 = no limit

    def validate(self, problems: list[str], path: str) -> None:
        _positive(self, problems, path, "retention_days", "expire_interval_s")
        if self.max_bytes < 0 or self.max_messages < 0:
            problems.append(f"{path}: max_bytes and max_messages must be 0 (no limit) or more")


@dataclass(frozen=True)
class DnsConfig:
    nameservers: tuple[str, ...] = ()  # empty: the system's resolv.conf
    timeout_s: float = 2.0
    lifetime_s: float = 5.0
    cache_entries: int = 10000
    # Threads for the libraries that resolve blocking (pyspf, dkimpy: SPF, DKIM, ARC), apart
    # from the pool the spool, the quarantine and the other checks use.
    blocking_threads: int = 16
    # Of those, at most this many for one client IP: 60 sessions from 3 addresses waiting on
    # a silent DNS took all 16 and a legitimate sender's checks timed out waiting for one.
    blocking_threads_per_client: int = 4
    # A check waits at most this long for a thread; then it is a temporary error (SPF_TEMPERROR,
    # DMARC_TEMPERROR), never a silent timeout. Keep it below the checks' timeout_s.
    blocking_thread_wait_s: float = 2.0
    # A dead resolver costs a lookup its lifetime once, not per SMTP phase (gateway/net/dns.py):
    # this many timeouts in a row (nothing answered between) make the resolver be asked for the
    # root NS; only if that times out too does every lookup fail at once (temperror) for
    # breaker_open_s, then it is asked again. 0 = never ask: a session whose lookup timed out
    # then fails its next ones at once for breaker_open_s.
    breaker_timeouts: int = 1
    breaker_open_s: float = 30.0

    def validate(self, problems: list[str], path: str) -> None:
        if self.breaker_timeouts < 0:
            problems.append(f"{path}.breaker_timeouts: must be 0 or more")
        for ns in self.nameservers:
            host, _ = parse_hostport(ns, 53) if not _valid_hostport(ns) else ("", 0)
            try:
                ipaddress.ip_address(host)
            except ValueError:
                problems.append(f"{path}.nameservers: {ns!r} is not an IP address or IP:port")
        _positive(
            self,
            problems,
            path,
            "timeout_s",
            "lifetime_s",
            "blocking_threads",
            "blocking_threads_per_client",
            "blocking_thread_wait_s",
            "breaker_open_s",
        )


@dataclass(frozen=True)
class PipelineConfig:
    deadline_s: float = 60.0  # all DATA checks of one message together
    # The admin's rule files; a file not there is read from the shipped rules/, and scores.toml
    # and actions.toml there are layered over the shipped ones. Default: the config's directory.
    rules_dir: str = ""

    def validate(self, problems: list[str], path: str) -> None:
        _positive(self, problems, path, "deadline_s")


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    file: str = ""  # "" = stderr (journald); a file is reopened on SIGUSR1 (logrotate)
    # One format per stream: "json" (log shippers), "text" (a terminal), "auto" = text on a
    # terminal, else json.
    format: Literal["auto", "json", "text"] = "auto"
    syslog: str = ""  # "" = stderr; "/dev/log" or "host:port" (UDP): syslog, facility mail


@dataclass(frozen=True)
class CheckConfig:
    """Settings every check has."""

    enabled: bool = True
    timeout_s: float = 10.0
    on_error: OnError = OnError.IGNORE


@dataclass(frozen=True)
class HeadersCheckConfig(CheckConfig):
    pass


@dataclass(frozen=True)
class GtubeCheckConfig(CheckConfig):
    pass


@dataclass(frozen=True)
class MimeCheckConfig(CheckConfig):
    on_error: OnError = OnError.TEMPFAIL  # an unread structure is never a silent pass


@dataclass(frozen=True)
class ClassifierCheckConfig(CheckConfig):
    model: str = str(SHIPPED_MODEL)  # the skops artefact written by `make train`
    spam_threshold: float = 0.5  # probability at or above which ML_SPAM is emitted
    ham_threshold: float = 0.2  # probability at or below which ML_HAM is emitted
    explain_features: int = 5  # features named in the symbol's reason
    # Fewer body words known to the model than this: ML_NOT_JUDGED (MIME-encrypted,
    # image-only or empty mail, scripts it never saw). 0 judges every message.
    min_known_words: int = 5
    # Strong tiers ML_SPAM_HIGH / ML_HAM_HIGH (gateway/checks/classifier_tiers.py): "auto" uses
    # the points the model measured on this site's own mail, scored unseen (none for the shipped
    # model), "off" none. A probability > 0 here sets a point by hand.
    tiers: str = "auto"
    spam_high_threshold: float = 0.0
    ham_high_threshold: float = 0.0

    def validate(self, problems: list[str], path: str) -> None:
        if self.enabled and not Path(self.model).is_file():
            where = "" if Path(self.model).is_absolute() else f" (from {Path.cwd()})"
            problems.append(
                f"{path}.model: no such file {self.model!r}{where}; `make train` writes "
                f"{SHIPPED_MODEL}, `gateway train --out DIR` DIR/classifier.skops"
            )
        if not 0.0 <= self.ham_threshold < self.spam_threshold <= 1.0:
            problems.append(f"{path}: need 0 <= ham_threshold < spam_threshold <= 1")
        if self.min_known_words < 0:
            problems.append(f"{path}.min_known_words: must be 0 or more")
        if self.tiers not in ("auto", "off"):
            problems.append(f'{path}.tiers: {self.tiers!r}, expected "auto" or "off"')
        if not 0.0 <= self.spam_high_threshold < 1.0 or not 0.0 <= self.ham_high_threshold < 1.0:
            problems.append(f"{path}: spam_high_threshold and ham_high_threshold must be in [0, 1)")
        _positive(self, problems, path, "timeout_s", "explain_features")


@dataclass(frozen=True)
class AntivirusCheckConfig(CheckConfig):
    # On unless configured off: a gateway that silently skips virus scanning is not safe by
    # default. With no clamd at `address` every message gets 451 until one runs.
    enabled: bool = True
    address: str = "tcp://127.0.0.1:3310"  # or an absolute unix socket path
    timeout_s: float = 30.0  # a large message takes clamd a while
    on_error: OnError = OnError.TEMPFAIL  # a scanner failure is never a silent pass
    max_scan_bytes: int = 25 * 1024 * 1024  # larger messages get AV_OVERSIZE (see actions.toml)
    # clamd's MaxFileSize (25M in Debian's clamd.conf; 100M compiled in): a message or archive
    # entry larger is skipped by clamd ("OK" without AlertExceedsMax): AV_UNSCANNABLE.
    max_file_bytes: int = 25 * 1024 * 1024

    def validate(self, problems: list[str], path: str) -> None:
        if self.address.startswith("tcp://"):
            if err := _valid_hostport(self.address.removeprefix("tcp://")):
                problems.append(f"{path}.address: {err}")
        elif not self.address.startswith("/"):
            problems.append(
                f"{path}.address: {self.address!r} is neither tcp://host:port "
                "nor an absolute unix socket path"
            )
        _positive(self, problems, path, "timeout_s", "max_scan_bytes", "max_file_bytes")


@dataclass(frozen=True)
class AttachmentsCheckConfig(CheckConfig):
    on_error: OnError = OnError.TEMPFAIL  # an uninspected attachment is never a silent pass
    max_parts: int = 500  # MIME parts inspected per message
    max_decoded_bytes: int = 64 * 1024 * 1024  # base64/QP decoded per message, all parts
    max_archive_depth: int = 3  # zip inside zip inside zip
    max_archive_entries: int = 10_000  # over all archives of a message (a 1,100-photo zip is mail)
    max_nested_archive_bytes: int = 10 * 1024 * 1024  # inflated to list an archive in an archive
    # Above it (and above 1 MiB inflated): a zip bomb. Deflate tops out near 1030: zeros do
    # that; a screenshot BMP (226) or a log file (292) is ordinary mail.
    max_compression_ratio: float = 1000.0
    max_archive_inflated_bytes: int = 1024 * 1024 * 1024  # one archive's entries together

    def validate(self, problems: list[str], path: str) -> None:
        _positive(
            self,
            problems,
            path,
            "timeout_s",
            "max_parts",
            "max_decoded_bytes",
            "max_archive_depth",
            "max_archive_entries",
            "max_nested_archive_bytes",
            "max_compression_ratio",
            "max_archive_inflated_bytes",
        )
        if self.max_archive_entries >= 0xFFFF:
            problems.append(f"{path}.max_archive_entries: must be below 65535")


@dataclass(frozen=True)
class SpfCheckConfig(CheckConfig):
    # RFC 7208 4.6.4: bound the DNS time of one evaluation; past it the result is temperror.
    # Below timeout_s so that the check reports SPF_TEMPERROR itself instead of timing out.
    dns_time_s: float = 8.0
    # A temperror defers at MAIL FROM ("mail": SPF_TEMPERROR), or is decided at the end of
    # DATA ("data": SPF_TEMPERROR_DEFERRED; DMARC passes an aligned DKIM pass, defers the rest).
    temperror_at: Literal["mail", "data"] = "mail"

    def validate(self, problems: list[str], path: str) -> None:
        _positive(self, problems, path, "timeout_s")
        _dns_time_below_timeout(self, problems, path)


@dataclass(frozen=True)
class DkimCheckConfig(CheckConfig):
    min_rsa_bits: int = 1024  # RFC 8301: shorter RSA keys are not accepted
    # Signatures verified per message, newest first; the rest is DKIM_LIMIT. Each costs a key
    # lookup and a body hash: 30 against a silent DNS server kept a thread for 68 s.
    max_signatures: int = 10
    # All key lookups of one message; past it they are DKIM_TEMPERROR. Below timeout_s, so
    # that the thread verifying ends about when the check gives up on it.
    dns_time_s: float = 8.0

    def validate(self, problems: list[str], path: str) -> None:
        _positive(self, problems, path, "timeout_s", "min_rsa_bits", "max_signatures")
        _dns_time_below_timeout(self, problems, path)


@dataclass(frozen=True)
class ArcCheckConfig(CheckConfig):
    dns_time_s: float = 8.0  # all key lookups of one chain, as for DKIM

    def validate(self, problems: list[str], path: str) -> None:
        _positive(self, problems, path, "timeout_s")
        _dns_time_below_timeout(self, problems, path)


@dataclass(frozen=True)
class DmarcCheckConfig(CheckConfig):
    # ARC sealers (d= of ARC-Seal) whose recorded dmarc=pass we accept when forwarding broke
    # SPF and DKIM (RFC 8617 7.2.1: a local policy override, reported as such).
    trusted_arc_sealers: tuple[str, ...] = ()

    def validate(self, problems: list[str], path: str) -> None:
        _positive(self, problems, path, "timeout_s")
        for sealer in self.trusted_arc_sealers:
            if not sealer or "@" in sealer or " " in sealer or sealer.startswith("."):
                problems.append(f"{path}.trusted_arc_sealers: {sealer!r} is not a domain name")


@dataclass(frozen=True)
class RulesCheckConfig(CheckConfig):
    files: tuple[str, ...] = ("headers.toml", "body.toml")  # rule sets, in the rules directory
    max_header_chars: int = 4096  # of each decoded header value matched
    max_body_chars: int = 256 * 1024  # of decoded body text matched

    def validate(self, problems: list[str], path: str) -> None:
        if not self.files:
            problems.append(f"{path}.files: at least one rule file (or disable the check)")
        _positive(self, problems, path, "timeout_s", "max_header_chars", "max_body_chars")


@dataclass(frozen=True)
class ListsCheckConfig(CheckConfig):
    file: str = "lists.toml"  # allow and block lists, in the rules directory


@dataclass(frozen=True)
class PhishingCheckConfig(CheckConfig):
    """The phishing checks (brand, lookalike, link, harvest, sender): their data is
    rules/brands.toml and rules/phishing_hosts.toml in the rules directory."""


@dataclass(frozen=True)
class LinkCheckConfig(PhishingCheckConfig):
    max_link_domains: int = 15  # more distinct link domains than this: LINK_MANY_DOMAINS

    def validate(self, problems: list[str], path: str) -> None:
        _positive(self, problems, path, "timeout_s", "max_link_domains")


@dataclass(frozen=True)
class DnsListCheckConfig(CheckConfig):
    """Settings shared by the checks that query DNS lists (zones in rules/dnsbl.toml)."""

    timeout_s: float = 5.0
    zones_file: str = "dnsbl.toml"
    failures_before_pause: int = 3  # failures in a row (timeouts, errors) that pause a zone
    pause_s: float = 300.0

    def validate(self, problems: list[str], path: str) -> None:
        _positive(self, problems, path, "timeout_s", "failures_before_pause", "pause_s")


@dataclass(frozen=True)
class DnsblCheckConfig(DnsListCheckConfig):
    phase: Literal["connect", "rcpt"] = "connect"  # when to look up (and refuse) the client
    # Addresses no public list knows; also keeps internal addresses out of outside queries.
    skip_networks: tuple[str, ...] = (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )

    def validate(self, problems: list[str], path: str) -> None:
        super().validate(problems, path)
        for network in self.skip_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                problems.append(f"{path}.skip_networks: {network!r} is not an IP network")


@dataclass(frozen=True)
class UriblCheckConfig(DnsListCheckConfig):
    max_domains: int = 20  # distinct domains looked up per message (URLs, sender, From)

    def validate(self, problems: list[str], path: str) -> None:
        super().validate(problems, path)
        _positive(self, problems, path, "max_domains")


@dataclass(frozen=True)
class GreylistCheckConfig(CheckConfig):
    """Greylisting after the verdict (gateway/checks/greylist.py); docs/greylisting.md."""

    enabled: bool = False  # delays first mail from new senders by min_delay_s: opt in
    timeout_s: float = 2.0  # one decision of the state (a lock held by another worker)
    only_above_score: float = 3.0  # greylist accepted mail scoring this or more
    min_delay_s: float = 300.0
    window_s: float = 86400.0
    pass_ttl_s: float = 36 * 86400.0
    auto_allow_after: int = 5  # 0 = never
    ipv4_prefix_length: int = 24
    ipv6_prefix_length: int = 64

    def validate(self, problems: list[str], path: str) -> None:
        _positive(self, problems, path, "timeout_s", "window_s", "pass_ttl_s")
        if not 0 <= self.min_delay_s < self.window_s:
            problems.append(f"{path}: min_delay_s must be 0 or more and below window_s")
        if self.auto_allow_after < 0:
            problems.append(f"{path}.auto_allow_after: must be 0 (never) or more")
        if not 1 <= self.ipv4_prefix_length <= 32:
            problems.append(f"{path}.ipv4_prefix_length: must be between 1 and 32")
        if not 1 <= self.ipv6_prefix_length <= 128:
            problems.append(f"{path}.ipv6_prefix_length: must be between 1 and 128")


@dataclass(frozen=True)
class RateLimitCheckConfig(CheckConfig):
    """Rate limits at RCPT (gateway/checks/ratelimit.py); the limits are in `file`."""

    timeout_s: float = 2.0  # one decision of the state (a lock held by another worker)
    file: str = "ratelimits.toml"  # in the rules directory; reloaded on SIGHUP


@dataclass(frozen=True)
class ChecksConfig:
    headers: HeadersCheckConfig = field(default_factory=HeadersCheckConfig)
    gtube: GtubeCheckConfig = field(default_factory=GtubeCheckConfig)
    mime: MimeCheckConfig = field(default_factory=MimeCheckConfig)
    antivirus: AntivirusCheckConfig = field(default_factory=AntivirusCheckConfig)
    attachments: AttachmentsCheckConfig = field(default_factory=AttachmentsCheckConfig)
    spf: SpfCheckConfig = field(default_factory=SpfCheckConfig)
    dkim: DkimCheckConfig = field(default_factory=DkimCheckConfig)
    arc: ArcCheckConfig = field(default_factory=ArcCheckConfig)
    dmarc: DmarcCheckConfig = field(default_factory=DmarcCheckConfig)
    rules: RulesCheckConfig = field(default_factory=RulesCheckConfig)
    lists: ListsCheckConfig = field(default_factory=ListsCheckConfig)
    brand: PhishingCheckConfig = field(default_factory=PhishingCheckConfig)
    lookalike: PhishingCheckConfig = field(default_factory=PhishingCheckConfig)
    link: LinkCheckConfig = field(default_factory=LinkCheckConfig)
    harvest: PhishingCheckConfig = field(default_factory=PhishingCheckConfig)
    sender: PhishingCheckConfig = field(default_factory=PhishingCheckConfig)
    dnsbl: DnsblCheckConfig = field(default_factory=DnsblCheckConfig)
    uribl: UriblCheckConfig = field(default_factory=UriblCheckConfig)
    classifier: ClassifierCheckConfig = field(default_factory=ClassifierCheckConfig)
    greylist: GreylistCheckConfig = field(default_factory=GreylistCheckConfig)
    ratelimit: RateLimitCheckConfig = field(default_factory=RateLimitCheckConfig)


@dataclass(frozen=True)
class Config:
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    relay: RelayConfig = field(default_factory=lambda: RelayConfig(domains=("example.test",)))
    queue: QueueConfig = field(default_factory=QueueConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    quarantine: QuarantineConfig = field(default_factory=QuarantineConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    source: str = ""  # the file this was loaded from, "" for defaults

    @property
    def storage_dir(self) -> Path:
        return Path(self.storage.dir)

    @property
    def queue_dir(self) -> Path:
        return self.storage_dir / "queue"

    @property
    def quarantine_dir(self) -> Path:
        return self.storage_dir / "quarantine"

    @property
    def rules_dir(self) -> Path:
        if self.pipeline.rules_dir:
            return Path(self.pipeline.rules_dir)
        if self.source:
            return Path(self.source).resolve().parent
        return SHIPPED_RULES_DIR

    def rule_file(self, name: str) -> Path:
        return rule_file_in(self.rules_dir, name)


def rule_file_in(rules_dir: Path, name: str) -> Path:
    """The admin's copy of a rule file in `rules_dir` if there is one, else the shipped file:
    a file the admin never changed follows upgrades."""
    local = rules_dir / name
    return local if local.exists() else SHIPPED_RULES_DIR / name


def _positive(obj: object, problems: list[str], path: str, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            problems.append(f"{path}.{name}: must be greater than 0")


def _dns_time_below_timeout(
    check: SpfCheckConfig | DkimCheckConfig | ArcCheckConfig, problems: list[str], path: str
) -> None:
    _positive(check, problems, path, "dns_time_s")
    if check.dns_time_s >= check.timeout_s:
        problems.append(f"{path}.dns_time_s: must be below timeout_s")


T = TypeVar("T")


def _convert(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    """Check `value` against the annotation `tp`; return the converted value or None on error."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a table, got {type(value).__name__}")
            return None
        return _build(tp, value, path, problems)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            problems.append(f"{path}: {value!r} is not one of {', '.join(map(repr, allowed))}")
            return None
        return value
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            names = ", ".join(repr(m.value) for m in tp)
            problems.append(f"{path}: {value!r} is not one of {names}")
            return None
    if origin in (tuple, list):
        args = get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__}")
            return None
        item_type = args[0]
        items = [_convert(item_type, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return tuple(items)
    if origin is dict:
        _, value_type = get_args(tp)
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a table, got {type(value).__name__}")
            return None
        return {k: _convert(value_type, v, f"{path}.{k}", problems) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(options[0], value, path, problems)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{path}: expected a number, got {value!r}")
            return None
        if not math.isfinite(value):  # TOML allows nan and inf; no limit means either
            problems.append(f"{path}: expected a finite number, got {value!r}")
            return None
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{path}: expected an integer, got {value!r}")
            return None
        return value
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{path}: expected true or false, got {value!r}")
            return None
        return value
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string, got {value!r}")
            return None
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def _build(cls: type[T], data: dict[str, Any], path: str, problems: list[str]) -> T:
    hints = typing.get_type_hints(cls)
    fields = {
        f.name: f
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]  # only called on dataclasses
        if f.init and f.name != "source"
    }
    for key in data:
        if key not in fields:
            where = f"{path}.{key}" if path else key
            known = ", ".join(sorted(fields))
            problems.append(f"{where}: unknown key (known here: {known})")
    kwargs: dict[str, Any] = {}
    before = len(problems)
    for name in fields:
        if name in data:
            where = f"{path}.{name}" if path else name
            kwargs[name] = _convert(hints[name], data[name], where, problems)
    if len(problems) > before:
        # Build with defaults so validation of other sections can still run.
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # a None slipped through from a failed conversion
        problems.append(f"{path}: {exc}")
        obj = cls()
    validate = getattr(obj, "validate", None)
    if validate is not None and len(problems) == before:
        validate(problems, path)
    return obj


def config_from_dict(data: dict[str, Any], source: str = "") -> Config:
    problems: list[str] = []
    config = _build(Config, data, "", problems)
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(config, source=source)


def default_config_path() -> Path | None:
    """The config an installed gateway reads without --config, when it is there."""
    return INSTALLED_CONFIG if INSTALLED and INSTALLED_CONFIG.is_file() else None


def load_config(path: str | Path | None) -> Config:
    """Load and validate a TOML file; None gives the embedded defaults. Relative paths in the
    file are relative to the file's directory, not to where the gateway was started."""
    if path is None:
        return Config()
    path = Path(path)
    data = read_toml(path)
    _anchor_paths(data, path.resolve().parent)
    return config_from_dict(data, source=str(path))


def _anchor_paths(data: dict[str, Any], base: Path) -> None:
    for *tables, key in PATH_KEYS:
        table: Any = data
        for name in tables:
            table = table.get(name) if isinstance(table, dict) else None
        if not isinstance(table, dict):
            continue
        value = table.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            table[key] = str(base / value)
