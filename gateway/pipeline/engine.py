"""The pipeline as the SMTP layer and `gateway scan` see it: run a phase, get a verdict."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.content import message_content
from gateway.errors import ConfigError
from gateway.model import Action, Phase, Transaction, Verdict
from gateway.pipeline.check import INLINE_MAX_BYTES, Check
from gateway.pipeline.runner import PhaseRunner
from gateway.pipeline.scoring import ACTIONS_FILE, SCORES_FILE, Policy, decide
from gateway.threads import in_thread


@dataclass(frozen=True)
class PhaseOutcome:
    tx: Transaction
    verdict: Verdict

    @property
    def stop(self) -> bool:
        """True when the session must refuse now (reject or tempfail)."""
        return self.verdict.action in (Action.REJECT, Action.TEMPFAIL)


class Pipeline:
    def __init__(
        self,
        checks: Sequence[Check],
        policy: Policy,
        deadline_s: float,
        declared: frozenset[str] | None = None,
    ) -> None:
        """`declared`: every symbol the configured rule files could produce, enabled or not
        (registry.declared_symbols); policy entries outside it are reported as typos."""
        self.checks = list(checks)
        self._declared = declared
        self.runner = PhaseRunner(checks)
        self.policy = self._complete(policy)
        self.deadline_s = deadline_s
        self._on_error = {c.name: c.on_error for c in checks}

    def _complete(self, policy: Policy) -> Policy:
        """`policy` plus the checks' own rule scores, limited to and covering what they emit.

        Asked anew on every swap: a reloaded rule set may emit other symbols than before.
        """
        emitted = {c.name: c.all_symbols() for c in self.checks}
        known = (self._declared or frozenset()).union(*emitted.values())
        typos = (
            []
            if self._declared is None
            else [
                f"{SCORES_FILE}: symbol {name} is scored but no check emits it"
                for name in sorted(set(policy.symbols) - known - policy.inherited)
            ]
            + [
                f"{ACTIONS_FILE}: forced action for {name}, which no check emits"
                for name in sorted(set(policy.forced) - known - policy.inherited)
            ]
        )
        if typos:
            raise ConfigError(typos)
        own = {name: rule for c in self.checks for name, rule in c.own_scores().items()}
        # Symbols of checks that are off in this configuration are dropped, not errors.
        policy = policy.with_defaults(own).restricted_to(emitted)
        policy.check_symbols(emitted)
        return policy

    def adopt(self, other: Pipeline) -> PhaseRunner:
        """Take over `other`'s checks and policy in one step (SIGHUP); returns the previous
        runner so that the caller can close its checks once no transaction uses them."""
        previous = self.runner
        self.checks, self.runner, self.policy = other.checks, other.runner, other.policy
        self.deadline_s, self._on_error = other.deadline_s, other._on_error
        self._declared = other._declared
        return previous

    async def run_phase(self, phase: Phase, tx: Transaction, final: bool = False) -> PhaseOutcome:
        """Run one phase's checks and decide on everything known so far.

        `final=True` (DATA) applies score thresholds and forced quarantine too.
        """
        deadline = time.monotonic() + self.deadline_s
        if self.runner.has_checks(phase):
            if phase is Phase.DATA and len(tx.raw) > INLINE_MAX_BYTES:
                # Parsing and decoding 25 MB take about 0.5 s: in a thread, done once, before
                # the checks that read the result on the event loop.
                await in_thread(_parse_and_decode, tx)
            tx = await self.runner.run(phase, tx, deadline)
        verdict = decide(
            self.policy,
            tx.results.values(),
            self._on_error,
            recipients=tx.envelope.rcpt_tos,
            final=final,
        )
        return PhaseOutcome(tx, verdict)

    async def run_message(self, tx: Transaction) -> PhaseOutcome:
        """Everything `gateway scan` needs: every phase in order, the last one final."""
        outcome = PhaseOutcome(tx, decide(self.policy, (), self._on_error, final=False))
        for phase in Phase:
            outcome = await self.run_phase(phase, outcome.tx, final=phase == Phase.DATA)
        return outcome

    async def close(self) -> None:
        await self.runner.close()


def _parse_and_decode(tx: Transaction) -> None:
    """Parse `tx` and decode its content once; both are cached for the checks."""
    message_content(tx.message)
