"""Which checks exist, which are enabled, and in which phase each runs.

The composition root (cli) builds the I/O clients into `Services`; this module turns the
configuration into check instances. Adding a check = one entry in `_FACTORIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.checks.gtube import GtubeCheck
from gateway.checks.headers import HeadersCheck
from gateway.config import Config
from gateway.pipeline.check import Check


@dataclass
class Services:
    """Shared I/O clients the checks use; built once per process by the composition root."""


def _headers(config: Config, services: Services) -> Check | None:
    c = config.checks.headers
    return HeadersCheck(c.timeout_s, c.on_error) if c.enabled else None


def _gtube(config: Config, services: Services) -> Check | None:
    c = config.checks.gtube
    return GtubeCheck(c.timeout_s, c.on_error) if c.enabled else None


_FACTORIES: tuple[Callable[[Config, Services], Check | None], ...] = (
    _headers,
    _gtube,
)


def build_checks(config: Config, services: Services) -> list[Check]:
    checks = [c for factory in _FACTORIES if (c := factory(config, services)) is not None]
    names = [c.name for c in checks]
    if len(names) != len(set(names)):
        raise ValueError(f"duplicate check names: {names}")
    return checks
