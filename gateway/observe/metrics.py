"""Prometheus metrics: the only module that imports prometheus_client.

Off unless [metrics] listen is set: `setup()` then imports prometheus_client in multiprocess
mode (one file per worker under <storage>/metrics), so that any worker answering a scrape
reports the sum over all workers. Until then every recording function returns at once, and the
in-process test gateways and `scan` pay nothing. State that is not a count (queue size, oldest
message, quarantine held) is read at scrape time by `render()`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import __version__

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "mailgate"
# Seconds; checks run from well under a millisecond (headers) to the DNS timeouts (seconds).
CHECK_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SESSION_BUCKETS_S = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
# Symbols that say a DNS lookup or clamd failed (the check itself, not the mail).
CLAMD_ERROR_SYMBOLS = frozenset({"AV_ERROR"})
DNS_ERROR_SUFFIXES = ("_TEMPERROR", "DNSBL_ERROR", "URIBL_ERROR")


@dataclass(frozen=True)
class State:
    """Read at scrape time: (queue size, oldest queued message age in s, quarantine held)."""

    queue_messages: int
    queue_oldest_age_s: float
    quarantine_held: int


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.transactions = Counter(
            f"{PREFIX}_transactions", "SMTP transactions by final action", ["action"]
        )
        self.symbols = Counter(f"{PREFIX}_symbols", "Symbols fired in verdicts", ["symbol"])
        self.replies = Counter(f"{PREFIX}_smtp_replies", "SMTP replies sent by code", ["code"])
        self.check_seconds = Histogram(
            f"{PREFIX}_check_seconds", "Time one check took", ["check"], buckets=CHECK_BUCKETS_S
        )
        self.session_seconds = Histogram(
            f"{PREFIX}_session_seconds", "SMTP session duration", buckets=SESSION_BUCKETS_S
        )
        self.deliveries = Counter(
            f"{PREFIX}_deliveries", "Delivery attempts by outcome", ["outcome"]
        )
        self.dns_errors = Counter(f"{PREFIX}_dns_errors", "Checks that failed on DNS", ["symbol"])
        self.clamd_errors = Counter(f"{PREFIX}_clamd_errors", "Scans that clamd did not answer")


_metrics: _Metrics | None = None


def prepare_dir(directory: Path) -> None:
    """Before the workers start: an empty directory for the per-process files (counts of an
    earlier run would be added to this one's)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700, parents=True)


def setup(directory: Path) -> None:
    """In each serving process, before any mail: record from now on into `directory`."""
    global _metrics
    # prometheus_client picks its storage when first imported: the variable must come first.
    os.environ[MULTIPROC_ENV] = str(directory)
    _metrics = _Metrics()


def transaction(action: str, symbols: Iterable[dict[str, Any]], checks_s: dict[str, float]) -> None:
    m = _metrics
    if m is None:
        return
    m.transactions.labels(action).inc()
    for symbol in symbols:
        name = str(symbol.get("name", ""))
        m.symbols.labels(name).inc()
        if name in CLAMD_ERROR_SYMBOLS:
            m.clamd_errors.inc()
        elif name.endswith(DNS_ERROR_SUFFIXES):
            m.dns_errors.labels(name).inc()
    for check, elapsed_s in checks_s.items():
        m.check_seconds.labels(check).observe(elapsed_s)


def reply(code: str) -> None:
    if _metrics is not None:
        _metrics.replies.labels(code).inc()


def session_ended(duration_s: float) -> None:
    if _metrics is not None:
        _metrics.session_seconds.observe(duration_s)


def delivery(outcome: str) -> None:
    if _metrics is not None:
        _metrics.deliveries.labels(outcome).inc()


def render(state: Callable[[], State], model_version: str) -> bytes:
    """The Prometheus text of every worker's counts plus the state read now."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(_StateCollector(state, model_version))
    return bytes(generate_latest(registry))


class _StateCollector:
    def __init__(self, state: Callable[[], State], model_version: str) -> None:
        self.state = state
        self.model_version = model_version

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

        now = self.state()
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_messages", "Messages in the queue", value=now.queue_messages
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_oldest_age_seconds",
            "Age of the oldest queued message (0: empty)",
            value=now.queue_oldest_age_s,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_quarantine_held_messages",
            "Messages held in quarantine",
            value=now.quarantine_held,
        )
        yield InfoMetricFamily(
            f"{PREFIX}_build",
            "Gateway and classifier model versions",
            value={"version": __version__, "model": self.model_version},
        )
