"""Configuration of the SPF, DKIM, ARC and DMARC checks, and how the registry builds them."""

from __future__ import annotations

import re
import tomllib

import pytest

from gateway.config import SHIPPED_RULES_DIR, config_from_dict
from gateway.errors import ConfigError
from gateway.net.dns import Resolver
from gateway.pipeline.registry import Services, build_checks

AUTH_CHECKS = ("spf", "dkim", "arc", "dmarc")


def _example_tables() -> dict[str, object]:
    """Our commented [checks.*] tables of gateway.example.toml, uncommented."""
    text = (SHIPPED_RULES_DIR / "gateway.example.toml").read_text()
    found = {}
    for name in AUTH_CHECKS:
        block = re.search(rf"^# \[checks\.{name}\].*?(?=^\s*$)", text, re.M | re.S)
        assert block is not None, name
        lines = [line.removeprefix("# ") for line in block.group(0).splitlines()]
        found.update(tomllib.loads("\n".join(lines))["checks"])
    return found


def test_example_tables_are_valid_and_complete() -> None:
    tables = _example_tables()
    config = config_from_dict({"checks": tables})
    assert set(tables) == set(AUTH_CHECKS)
    assert tables["spf"] == {
        "enabled": True,
        "timeout_s": 10.0,
        "on_error": "ignore",
        "dns_time_s": 8.0,
        "temperror_at": "mail",
    }
    assert tables["dkim"]["max_signatures"] == 10 and tables["dkim"]["dns_time_s"] == 8.0
    assert tables["arc"]["dns_time_s"] == 8.0
    assert config.checks.dmarc.trusted_arc_sealers == ()


@pytest.mark.parametrize(
    ("checks", "problem"),
    [
        ({"spf": {"dns_time_s": 12.0}}, "checks.spf.dns_time_s: must be below timeout_s"),
        ({"dkim": {"min_rsa_bits": 0}}, "checks.dkim.min_rsa_bits: must be greater than 0"),
        ({"dkim": {"max_signatures": 0}}, "checks.dkim.max_signatures: must be greater than 0"),
        ({"dkim": {"dns_time_s": 10.0}}, "checks.dkim.dns_time_s: must be below timeout_s"),
        ({"arc": {"dns_time_s": 12.0}}, "checks.arc.dns_time_s: must be below timeout_s"),
        ({"dmarc": {"trusted_arc_sealers": ["@x"]}}, "'@x' is not a domain name"),
        ({"arc": {"sealers": []}}, "checks.arc.sealers: unknown key"),
        ({"spf": {"temperror_at": "rcpt"}}, "checks.spf.temperror_at"),
    ],
)
def test_invalid_settings_are_reported(checks: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"checks": checks})
    assert any(problem in line for line in caught.value.problems), caught.value.problems


def test_the_threads_for_dns_bound_checks_must_be_some() -> None:
    with pytest.raises(ConfigError, match=r"dns\.blocking_threads: must be greater than 0"):
        config_from_dict({"dns": {"blocking_threads": 0}})
    with pytest.raises(ConfigError, match=r"dns\.blocking_threads_per_client: must be greater"):
        config_from_dict({"dns": {"blocking_threads_per_client": 0}})


def test_spf_temperror_at_data_needs_dmarc_to_decide() -> None:
    resolver = Resolver(["127.0.0.1:53"], 1.0, 2.0, 10)
    config = config_from_dict(
        {"checks": {"spf": {"temperror_at": "data"}, "dmarc": {"enabled": False}}}
    )
    with pytest.raises(ConfigError, match=r"needs checks\.dmarc enabled"):
        build_checks(config, Services(resolver=resolver))


def test_registry_builds_the_checks_with_the_shared_resolver() -> None:
    resolver = Resolver(["127.0.0.1:53"], 1.0, 2.0, 10)
    checks = {c.name: c for c in build_checks(config_from_dict({}), Services(resolver=resolver))}
    assert set(AUTH_CHECKS) <= set(checks)
    assert all(checks[name].resolver is resolver for name in AUTH_CHECKS)  # type: ignore[attr-defined]
    dkim = build_checks(
        config_from_dict({"checks": {"dkim": {"max_signatures": 3, "dns_time_s": 2.0}}}),
        Services(resolver=resolver),
    )
    assert [(c.max_signatures, c.dns_time_s) for c in dkim if c.name == "dkim"] == [(3, 2.0)]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"checks\.spf: enabled, but no DNS resolver"):
        build_checks(config_from_dict({}), Services())
