"""The check protocol: what every check in `gateway/checks/` provides."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

from gateway.model import CheckResult, OnError, Phase, Symbol, Transaction
from gateway.pipeline.scoring import SymbolPolicy

# Up to this size a check does its CPU work on the event loop; above it, in a thread, so the
# other sessions go on (the pipeline parses such a message in a thread first, too). Below it
# the thread hop costs more than it saves.
INLINE_MAX_BYTES = 64 * 1024


class Check(ABC):
    """One check. It returns a CheckResult; it never decides the action, never mutates `tx`.

    Subclasses set the class attributes; `timeout_s` and `on_error` usually come from config.
    A check that raises or times out is turned by the runner into a result carrying
    `error_symbol`, so a failure is visible and scored (0 by default), never silent.
    """

    name: ClassVar[str]
    phase: ClassVar[Phase]
    symbols: ClassVar[frozenset[str]]
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, timeout_s: float = 10.0, on_error: OnError = OnError.IGNORE) -> None:
        self.timeout_s = timeout_s
        self.on_error = on_error

    @property
    def error_symbol(self) -> str:
        return f"{self.name.upper()}_ERROR"

    def all_symbols(self) -> frozenset[str]:
        return self.symbols | {self.error_symbol}

    def own_scores(self) -> Mapping[str, SymbolPolicy]:
        """Weights the check's own data files give its symbols (rule sets carry a score per
        rule); rules/scores.toml overrides them. Most checks are scored in scores.toml only."""
        return {}

    @abstractmethod
    async def run(self, tx: Transaction) -> CheckResult:
        """Examine `tx` and report symbols (with reasons) and typed facts."""

    def timeout_result(self, tx: Transaction, why: str) -> CheckResult | None:
        """What running out of time means for this check, or None for its error symbol. A
        check whose timeout is a known result (SPF: temperror, RFC 7208 4.6.4) says so here,
        so that the policy for that result applies instead of a silent score of 0."""
        return None

    async def close(self) -> None:  # noqa: B027 - optional hook, most checks hold nothing
        """Release clients the check holds."""

    def result(self, *symbols: Symbol, facts: object | None = None) -> CheckResult:
        return CheckResult(check=self.name, symbols=tuple(symbols), facts=facts)


def declared_class_symbols() -> frozenset[str]:
    """Every symbol some check class declares, whether enabled here or not: a scored symbol
    outside this set (and outside what the enabled checks emit) is a typo in the policy."""
    found: set[str] = set()
    pending: list[type[Check]] = list(Check.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        symbols = getattr(cls, "symbols", None)
        if isinstance(symbols, frozenset):
            found |= symbols
        name = getattr(cls, "name", None)
        if isinstance(name, str):
            override = cls.__dict__.get("error_symbol")  # a check may name its own
            if isinstance(override, property) and callable(override.fget):
                found.add(str(override.fget(cls)))
            else:
                found.add(f"{name.upper()}_ERROR")
    return frozenset(found)
