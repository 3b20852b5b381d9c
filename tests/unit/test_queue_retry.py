"""The retry schedule and per-recipient state transitions (pure)."""

from __future__ import annotations

import pytest

from gateway.config import QueueConfig
from gateway.queue.retry import Disposition, RecipientOutcome, apply_attempt, retry_delay_s
from gateway.queue.spool import QueueEntry, RecipientState

QUEUE = QueueConfig(retry_initial_s=60.0, retry_max_s=3600.0, lifetime_s=86400.0)
NO_JITTER = 0.5  # rng() = 0.5 puts the jitter factor at exactly 1.0


def entry(*addresses: str, received_at: float = 1000.0) -> QueueEntry:
    return QueueEntry(
        id="m1",
        mail_from="a@example.org",
        recipients=tuple(RecipientState(a) for a in addresses),
        received_at=received_at,
        next_attempt_at=received_at,
    )


def test_delay_doubles_from_initial_up_to_max() -> None:
    delays = [retry_delay_s(n, QUEUE, lambda: NO_JITTER) for n in range(1, 10)]
    assert delays[:4] == [60.0, 120.0, 240.0, 480.0]
    assert delays[-1] == 3600.0
    assert retry_delay_s(10_000, QUEUE, lambda: NO_JITTER) == 3600.0


@pytest.mark.parametrize("rng_value", [0.0, 0.999])
def test_jitter_stays_within_ten_percent(rng_value: float) -> None:
    delay = retry_delay_s(1, QUEUE, lambda: rng_value)
    assert 54.0 <= delay <= 66.0 and delay != 60.0


def test_all_delivered_is_done() -> None:
    ok = RecipientOutcome("delivered", "250 OK")
    updated, disposition = apply_attempt(entry("b", "c"), {0: ok, 1: ok}, 1010.0, QUEUE)
    assert disposition is Disposition.DONE
    assert [r.status for r in updated.recipients] == ["delivered", "delivered"]


def test_temporary_failure_schedules_a_retry_for_that_recipient_only() -> None:
    outcomes = {
        0: RecipientOutcome("delivered", "250 OK"),
        1: RecipientOutcome("temporary", "452 4.2.2 Mailbox full"),
    }
    updated, disposition = apply_attempt(entry("b", "c"), outcomes, 1010.0, QUEUE, lambda: 0.5)
    assert disposition is Disposition.RETRY
    assert [r.status for r in updated.recipients] == ["delivered", "pending"]
    assert updated.pending == (RecipientState("c", "pending", "452 4.2.2 Mailbox full"),)
    assert updated.attempts == 1 and updated.next_attempt_at == 1070.0
    assert updated.last_error == "452 4.2.2 Mailbox full"


def test_permanent_failure_of_one_recipient_bounces_once_nothing_is_pending() -> None:
    outcomes = {
        0: RecipientOutcome("permanent", "550 5.1.1 No such user"),
        1: RecipientOutcome("delivered", "250 OK"),
    }
    updated, disposition = apply_attempt(entry("b", "c"), outcomes, 1010.0, QUEUE)
    assert disposition is Disposition.BOUNCE
    assert updated.recipients[0].reply == "550 5.1.1 No such user"


def test_lifetime_exceeded_turns_pending_into_failed() -> None:
    outcomes = {0: RecipientOutcome("temporary", "451 4.3.0 Later")}
    late = 1000.0 + QUEUE.lifetime_s
    updated, disposition = apply_attempt(entry("b"), outcomes, late, QUEUE)
    assert disposition is Disposition.BOUNCE
    assert updated.recipients[0].status == "failed"
    assert "expired in the queue after 1 attempts" in updated.recipients[0].reply
    assert "451 4.3.0 Later" in updated.recipients[0].reply
