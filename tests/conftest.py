"""Shared fixtures live in tests/support/; each module there is a pytest plugin listed here."""

pytest_plugins: list[str] = [
    "tests.support.gateway_fixture",
    "tests.support.downstream",
    "tests.support.dns_server",
    "tests.support.gateway_process",
    "tests.support.quarantine",
    "tests.support.clamd_fixture",
    "tests.support.mailcorpus",
]
