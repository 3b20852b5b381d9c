"""Runs the checks of one phase: concurrently, in dependency order, each within its timeout and
all within the message deadline. A failing check becomes an error result, never an exception."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from gateway.errors import GatewayError
from gateway.model import CheckResult, Phase, Symbol, Transaction
from gateway.pipeline.check import Check

log = logging.getLogger(__name__)


def dependency_levels(checks: Sequence[Check]) -> list[list[Check]]:
    """Group checks into levels; every check's `requires` are in earlier levels or other phases."""
    remaining = list(checks)
    names_here = {c.name for c in checks}
    done: set[str] = set()
    levels: list[list[Check]] = []
    while remaining:
        level = [c for c in remaining if all(r in done or r not in names_here for r in c.requires)]
        if not level:
            cycle = ", ".join(c.name for c in remaining)
            raise ValueError(f"checks require each other in a cycle: {cycle}")
        levels.append(level)
        done.update(c.name for c in level)
        remaining = [c for c in remaining if c not in level]
    return levels


class PhaseRunner:
    """Holds the enabled checks by phase and runs one phase of one transaction."""

    def __init__(self, checks: Sequence[Check]) -> None:
        self.checks = list(checks)
        self._levels = {
            phase: dependency_levels([c for c in checks if c.phase == phase]) for phase in Phase
        }

    def has_checks(self, phase: Phase) -> bool:
        return bool(self._levels[phase])

    async def run(self, phase: Phase, tx: Transaction, deadline: float) -> Transaction:
        """Run `phase`'s checks on `tx`; return `tx` extended with their results.

        `deadline` is a time.monotonic() value: no check runs past it.
        """
        for level in self._levels[phase]:
            if len(level) == 1:  # nothing to run beside it: no task to create for gather
                results = [await self._run_one(level[0], tx, deadline)]
            else:
                results = await asyncio.gather(*(self._run_one(c, tx, deadline) for c in level))
            tx = tx.with_results({r.check: r for r in results})
        return tx

    async def _run_one(self, check: Check, tx: Transaction, deadline: float) -> CheckResult:
        started = time.monotonic()
        budget = min(check.timeout_s, deadline - started)
        try:
            if budget <= 0:
                raise TimeoutError
            async with asyncio.timeout(budget):
                result = await check.run(tx)
        except TimeoutError:
            elapsed = time.monotonic() - started
            why = f"timed out after {elapsed:.3f}s"
            known = check.timeout_result(tx, why)
            if known is None:
                return _error_result(check, why, elapsed)
            log.warning("check %s timed out on transaction %s: %s", check.name, tx.id, why)
            return CheckResult(known.check, known.symbols, known.facts, elapsed)
        except asyncio.CancelledError:
            raise
        except GatewayError as exc:  # an expected failure (scanner down, DNS): no traceback
            log.warning("check %s failed on transaction %s: %s", check.name, tx.id, exc)
            return _error_result(check, f"{type(exc).__name__}: {exc}", time.monotonic() - started)
        except Exception as exc:  # a broken check must not break the session
            log.exception("check %s failed on transaction %s", check.name, tx.id)
            return _error_result(check, f"{type(exc).__name__}: {exc}", time.monotonic() - started)
        elapsed = time.monotonic() - started
        return CheckResult(
            check=result.check,
            symbols=result.symbols,
            facts=result.facts,
            elapsed_s=elapsed,
            error=result.error,
        )

    async def close(self) -> None:
        for check in self.checks:
            try:
                await check.close()
            except Exception:
                log.exception("closing check %s failed", check.name)


def _error_result(check: Check, why: str, elapsed: float) -> CheckResult:
    return CheckResult(
        check=check.name,
        symbols=(Symbol(check.error_symbol, why),),
        elapsed_s=elapsed,
        error=why,
    )
