import asyncio
import time

import pytest

from gateway.model import CheckResult, Connection, Envelope, OnError, Phase, Symbol, Transaction
from gateway.pipeline.check import Check
from gateway.pipeline.engine import Pipeline
from gateway.pipeline.runner import PhaseRunner, dependency_levels
from gateway.pipeline.scoring import Policy, SymbolPolicy, Thresholds


class Fixed(Check):
    phase = Phase.DATA
    symbols = frozenset({"FIXED_HIT"})

    def __init__(
        self,
        name: str,
        delay_s: float = 0.0,
        requires: tuple[str, ...] = (),
        fail: bool = False,
        timeout_s: float = 1.0,
    ) -> None:
        super().__init__(timeout_s, OnError.IGNORE)
        self.name = name  # type: ignore[misc]
        self.requires = requires  # type: ignore[misc]
        self.delay_s = delay_s
        self.fail = fail
        self.saw: list[str] = []

    async def run(self, tx: Transaction) -> CheckResult:
        self.saw = sorted(tx.results)
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("boom")
        return self.result(Symbol("FIXED_HIT", self.name))


def tx() -> Transaction:
    return Transaction("t1", Connection("c1", "127.0.0.1"), Envelope("a@b.test", ("r@x.test",)))


def test_dependencies_run_first_and_their_results_are_visible() -> None:
    a, b = Fixed("a"), Fixed("b", requires=("a",))
    assert [[c.name for c in level] for level in dependency_levels([b, a])] == [["a"], ["b"]]
    out = asyncio.run(PhaseRunner([b, a]).run(Phase.DATA, tx(), time.monotonic() + 5))
    assert b.saw == ["a"]
    assert set(out.results) == {"a", "b"}


def test_cycles_are_refused() -> None:
    with pytest.raises(ValueError, match="cycle"):
        dependency_levels([Fixed("a", requires=("b",)), Fixed("b", requires=("a",))])


def test_independent_checks_run_concurrently() -> None:
    checks = [Fixed(str(i), delay_s=0.2) for i in range(5)]
    started = time.monotonic()
    asyncio.run(PhaseRunner(checks).run(Phase.DATA, tx(), time.monotonic() + 5))
    assert time.monotonic() - started < 0.8


def test_timeout_and_exception_become_error_symbols() -> None:
    slow, broken = Fixed("slow", delay_s=5, timeout_s=0.1), Fixed("broken", fail=True)
    out = asyncio.run(PhaseRunner([slow, broken]).run(Phase.DATA, tx(), time.monotonic() + 5))
    assert out.results["slow"].symbols[0].name == "SLOW_ERROR"
    assert "timed out" in (out.results["slow"].error or "")
    assert out.results["broken"].error == "RuntimeError: boom"


def test_message_deadline_bounds_every_check() -> None:
    slow = Fixed("slow", delay_s=5, timeout_s=10)
    started = time.monotonic()
    out = asyncio.run(PhaseRunner([slow]).run(Phase.DATA, tx(), time.monotonic() + 0.2))
    assert time.monotonic() - started < 1.0
    assert out.results["slow"].error is not None


class SeesParse(Check):
    """Records, as it starts, whether the message was parsed already."""

    name = "sees_parse"
    phase = Phase.DATA
    symbols = frozenset()

    def __init__(self) -> None:
        super().__init__(1.0, OnError.IGNORE)
        self.parsed_before: bool | None = None

    async def run(self, tx: Transaction) -> CheckResult:
        self.parsed_before = "_message" in tx.__dict__
        return self.result()


@pytest.mark.parametrize(("body_bytes", "parsed_first"), [(1000, False), (200_000, True)])
def test_a_large_message_is_parsed_in_a_thread_before_the_checks_run(
    body_bytes: int, parsed_first: bool
) -> None:
    # Parsing 25 MB takes about half a second: on the event loop that stalls every session.
    check = SeesParse()
    raw = b"Subject: x\r\n\r\n" + b"word " * (body_bytes // 5) + b"\r\n"
    policy = Policy(
        symbols={name: SymbolPolicy(0.0) for name in check.all_symbols()},
        group_caps={},
        thresholds=Thresholds(6.0, 15.0),
        forced={},
    )
    pipeline = Pipeline([check], policy, deadline_s=5.0)
    asyncio.run(pipeline.run_phase(Phase.DATA, tx().with_raw(raw), final=True))
    assert check.parsed_before is parsed_first
