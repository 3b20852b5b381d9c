"""Rate limits at RCPT (rules/ratelimits.toml, reloaded on SIGHUP): messages and recipients
per window for the client IP or network, the envelope sender, its domain and the recipient.

Over a limit the recipient gets RATELIMIT_EXCEEDED, whose forced action (actions.toml) is a
tempfail with `450 4.7.1`: a flood from one host or one compromised account slows down
instead of filling the quarantine. A message counts once per key, at its first accepted
recipient; every recipient counts for `count = "recipients"` limits and for key = "recipient".
All buckets of one decision are taken together or not at all (an attempt over a limit uses
none), atomically across sessions and worker processes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.errors import ConfigError
from gateway.files import is_number, read_toml
from gateway.model import CheckResult, OnError, Phase, Symbol, Transaction
from gateway.pipeline.check import Check
from gateway.state.keys import Clock, SystemClock, client_network
from gateway.state.ratelimit import RateLimitStore, Take

EXCEEDED = "RATELIMIT_EXCEEDED"
RULES_FILE = "ratelimits.toml"
STATE_FILE = "ratelimit.sqlite"
Key = Literal["client_ip", "client_network", "sender", "sender_domain", "recipient"]
KEYS: tuple[Key, ...] = ("client_ip", "client_network", "sender", "sender_domain", "recipient")
COUNTS = ("messages", "recipients")


@dataclass(frozen=True)
class Limit:
    name: str
    key: Key
    count: Literal["messages", "recipients"]
    max: int
    window_s: float


def load_limits(path: Path) -> list[Limit]:
    """The limits of `path` ([limit.NAME] tables); ConfigError naming every problem."""
    data: dict[str, Any] = read_toml(path)
    problems = [f"{path.name}: unknown table {k!r} (known: limit)" for k in set(data) - {"limit"}]
    limits = []
    for name, table in data.get("limit", {}).items():
        where = f"{path.name}: limit.{name}"
        if not isinstance(table, dict) or set(table) - {"key", "count", "max", "window_s"}:
            problems.append(f"{where}: keys are key, count, max, window_s")
            continue
        key, count = table.get("key"), table.get("count", "messages")
        limit_max, window_s = table.get("max"), table.get("window_s")
        if key not in KEYS:
            problems.append(f"{where}.key: one of {', '.join(KEYS)}")
        elif count not in COUNTS:
            problems.append(f"{where}.count: messages or recipients")
        elif not isinstance(limit_max, int) or isinstance(limit_max, bool) or limit_max < 1:
            problems.append(f"{where}.max: a whole number, 1 or more")
        elif not is_number(window_s) or window_s <= 0:
            problems.append(f"{where}.window_s: a number of seconds above 0")
        else:
            limits.append(Limit(name, key, count, limit_max, float(window_s)))
    if problems:
        raise ConfigError(problems)
    return limits


def key_value(key: Key, tx: Transaction) -> str | None:
    """What `key` counts for this recipient of `tx`, or None when it does not apply."""
    sender = tx.envelope.mail_from.lower()
    if key == "client_ip":
        return tx.connection.client_ip
    if key == "client_network":
        return client_network(tx.connection.client_ip)
    if key == "recipient":
        return tx.envelope.rcpt_tos[-1].lower()
    if not sender:  # the null sender is no account: limited by client and recipient only
        return None
    return sender if key == "sender" else sender.rpartition("@")[2]


class RateLimitCheck(Check):
    name = "ratelimit"
    phase = Phase.RCPT
    symbols = frozenset({EXCEEDED})

    def __init__(
        self,
        limits: list[Limit],
        store: RateLimitStore,
        clock: Clock | None = None,
        timeout_s: float = 2.0,
        on_error: OnError = OnError.IGNORE,
    ) -> None:
        super().__init__(timeout_s, on_error)
        self.limits = limits
        self.store = store
        self.clock: Clock = clock or SystemClock()

    async def run(self, tx: Transaction) -> CheckResult:
        first_recipient = len(tx.envelope.rcpt_tos) == 1
        takes: list[tuple[Limit, str, Take]] = []
        for limit in self.limits:
            value = key_value(limit.key, tx)
            counts = first_recipient or limit.count == "recipients" or limit.key == "recipient"
            if value is not None and counts:
                take = Take(f"{limit.name}|{value}", limit.max, limit.window_s)
                takes.append((limit, value, take))
        if not takes:
            return self.result()
        denied = await asyncio.to_thread(
            self.store.take, [t for _, _, t in takes], self.clock.time()
        )
        if denied is None:
            return self.result()
        limit, value, _ = takes[denied]
        reason = (
            f"limit={limit.name} {limit.key}={value}"
            f" max={limit.max} {limit.count} per {limit.window_s:g} s"
        )
        return self.result(Symbol(EXCEEDED, reason))

    async def close(self) -> None:
        self.store.close()
