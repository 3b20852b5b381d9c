"""Shared fixtures live in tests/support/; each module there is a pytest plugin listed here."""

pytest_plugins: list[str] = []
