"""Greylisting at the end of DATA, after the verdict: score-aware, like rspamd's.

Not a check of the runner: it needs the score, which only the verdict knows. Mail that the
verdict accepts with a score of at least `only_above_score` is deferred with `451 4.7.1` the
first time its (client network, sender, recipient) triplets are seen; a retry after
`min_delay_s` passes. Botnets rarely retry; real mail servers always do. Mail that clearly
passes, allow-listed or DNSWL-listed clients and the null sender are never delayed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from gateway.config import Config, GreylistCheckConfig
from gateway.model import Action, OnError, ScoredSymbol, Transaction, Verdict
from gateway.state.greylist import (
    GreylistDecision,
    GreylistStateError,
    GreylistStore,
    GreylistTimes,
    SqliteGreylistStore,
)
from gateway.state.keys import Clock, SystemClock, client_network

log = logging.getLogger(__name__)

NAME = "greylist"
DEFERRED = "GREYLIST_DEFERRED"
ERROR = "GREYLIST_ERROR"
SYMBOLS = frozenset({DEFERRED, ERROR})
STATE_FILE = "greylist.sqlite"
# Checks whose negative symbols mean "a client we trust": allow lists and DNSWL zones.
_TRUST_CHECKS = ("lists", "dnsbl")


class Greylist:
    def __init__(
        self, settings: GreylistCheckConfig, store: GreylistStore, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock: Clock = clock or SystemClock()

    def exempt(self, tx: Transaction, verdict: Verdict) -> str:
        """Why this message is not greylisted, or "" when it is."""
        if verdict.action not in (Action.ACCEPT, Action.TAG):  # tag: delivered, so greylisted too
            return "not accepted"
        if verdict.score < self.settings.only_above_score:
            return "score below only_above_score"
        if not tx.envelope.mail_from:
            return "null sender"  # a DSN about mail we sent: delaying it helps nobody
        trusted = [s.name for s in verdict.symbols if s.check in _TRUST_CHECKS and s.score < 0]
        return f"trusted client ({trusted[0]})" if trusted else ""

    async def judge(self, tx: Transaction, verdict: Verdict) -> Verdict:
        """`verdict`, or a deferral with GREYLIST_DEFERRED when the triplets are not known yet."""
        if self.exempt(tx, verdict):
            return verdict
        s = self.settings
        network = client_network(
            tx.connection.client_ip, s.ipv4_prefix_length, s.ipv6_prefix_length
        )
        sender = tx.envelope.mail_from.lower()
        recipients = [r.lower() for r in tx.envelope.rcpt_tos]
        try:
            decision = await asyncio.wait_for(
                asyncio.to_thread(
                    self.store.decide, network, sender, recipients, self.clock.time()
                ),
                s.timeout_s,
            )
        except (GreylistStateError, TimeoutError) as exc:
            why = str(exc) or f"no answer within {s.timeout_s:g} s"
            return self._failed(tx, verdict, why)
        if decision.passed:
            return verdict
        return self._deferred(tx, verdict, network, decision)

    def _deferred(
        self, tx: Transaction, verdict: Verdict, network: str, decision: GreylistDecision
    ) -> Verdict:
        wait_s = max(1, round(decision.retry_in_s))
        reason = (
            f"network={network} sender={tx.envelope.mail_from or '<>'}"
            f" new_triplets={decision.new_triplets} retry_in_s={wait_s}"
        )
        symbol = ScoredSymbol(DEFERRED, 0.0, reason, NAME)
        return dataclasses.replace(
            verdict,
            action=Action.TEMPFAIL,
            symbols=(*verdict.symbols, symbol),
            # The reply says it: "451 4.7.1 Try again later (greylisted ...), transaction ID".
            reason=f"greylisted ({DEFERRED}), retry in {wait_s} s",
            forced_by=symbol,
        )

    def _failed(self, tx: Transaction, verdict: Verdict, why: str) -> Verdict:
        """The state cannot be reached: accept (on_error = ignore, the default) or defer; either
        way logged and visible as GREYLIST_ERROR, never silent."""
        defer = self.settings.on_error is OnError.TEMPFAIL
        log.warning(
            "greylisting failed for transaction %s (%s): mail %s",
            tx.id,
            why,
            "deferred" if defer else "accepted without greylisting",
        )
        symbol = ScoredSymbol(ERROR, 0.0, why, NAME)
        if not defer:
            return dataclasses.replace(verdict, symbols=(*verdict.symbols, symbol))
        return dataclasses.replace(
            verdict,
            action=Action.TEMPFAIL,
            symbols=(*verdict.symbols, symbol),
            reason=f"check {NAME} failed: {why}",
        )

    def close(self) -> None:
        self.store.close()


def build_greylist(config: Config, clock: Clock | None = None) -> Greylist | None:
    """The greylist step as configured, or None when `[checks.greylist] enabled = false`."""
    s = config.checks.greylist
    if not s.enabled:
        return None
    times = GreylistTimes(s.min_delay_s, s.window_s, s.pass_ttl_s, s.auto_allow_after)
    return Greylist(s, SqliteGreylistStore(config.storage_dir / STATE_FILE, times), clock)
