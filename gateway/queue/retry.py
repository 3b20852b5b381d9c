"""The retry schedule and how one delivery attempt changes a message's state (pure, no I/O)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from gateway.config import QueueConfig
from gateway.queue.spool import QueueEntry, RecipientState, RecipientStatus

JITTER = 0.1  # +-10%: workers that failed together do not retry in lockstep


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """What the downstream said about one recipient in one attempt."""

    kind: Literal["delivered", "temporary", "permanent"]
    reply: str  # "550 5.1.1 No such user", or a description of a connection failure
    # The downstream offered DSN and got the client's NOTIFY/ORCPT (RFC 3461): from there on
    # success notices are its job, not ours.
    dsn_passed: bool = False


_STATUS_AFTER: dict[str, RecipientStatus] = {
    "delivered": "delivered",
    "permanent": "failed",
    "temporary": "pending",
}


class Disposition(StrEnum):
    DONE = "done"  # every recipient delivered: remove the message
    RETRY = "retry"  # some recipients still pending: keep it for the next attempt
    BOUNCE = "bounce"  # nothing pending and some recipient failed: notify the sender


def retry_delay_s(
    attempts: int, queue: QueueConfig, rng: Callable[[], float] = random.random
) -> float:
    """Wait after the `attempts`-th failed attempt: initial doubling up to max, with jitter."""
    exponent = min(max(attempts - 1, 0), 60)  # bounded: 2**60 * anything exceeds any max
    base = min(queue.retry_max_s, queue.retry_initial_s * 2.0**exponent)
    return base * (1.0 + JITTER * (2.0 * rng() - 1.0))


def apply_attempt(
    entry: QueueEntry,
    outcomes: Mapping[int, RecipientOutcome],
    now: float,
    queue: QueueConfig,
    rng: Callable[[], float] = random.random,
) -> tuple[QueueEntry, Disposition]:
    """New state after an attempt. `outcomes` maps indexes into entry.recipients."""
    recipients = list(entry.recipients)
    temporary: list[str] = []
    for index, outcome in outcomes.items():
        status = _STATUS_AFTER[outcome.kind]
        recipients[index] = dataclasses.replace(
            recipients[index], status=status, reply=outcome.reply
        )
        if status == "pending":
            temporary.append(outcome.reply)
    attempts = entry.attempts + 1
    last_error = temporary[0] if temporary else entry.last_error
    expired = now - entry.received_at >= queue.lifetime_s
    if expired:
        recipients = [_expire(r, attempts) for r in recipients]
    updated = dataclasses.replace(
        entry,
        recipients=tuple(recipients),
        attempts=attempts,
        last_error=last_error,
        next_attempt_at=now + retry_delay_s(attempts, queue, rng),
    )
    if updated.pending:
        return updated, Disposition.RETRY
    if any(r.status == "failed" for r in updated.recipients):
        return updated, Disposition.BOUNCE
    return updated, Disposition.DONE


def _expire(recipient: RecipientState, attempts: int) -> RecipientState:
    if recipient.status != "pending":
        return recipient
    reason = f"expired in the queue after {attempts} attempts; last reply: {recipient.reply}"
    return dataclasses.replace(recipient, status="failed", reply=reason)
