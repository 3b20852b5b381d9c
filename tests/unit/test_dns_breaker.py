"""The resolver's breaker on a hand-driven clock: when lookups fail at once, and when not."""

from __future__ import annotations

import contextvars

import pytest

from gateway.errors import DnsTimeout
from gateway.net.dns import Breaker, begin_scope


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_timeouts_in_a_row_open_it_then_one_trial_decides() -> None:
    clock = Clock()
    breaker = Breaker(timeouts=2, open_s=30.0, clock=clock)
    breaker.timed_out(breaker.admit("a/A"))
    assert not breaker.is_open
    breaker.timed_out(breaker.admit("b/A"))
    assert breaker.is_open and breaker.counts["opened"] == 1
    with pytest.raises(DnsTimeout, match="not answering"):
        breaker.admit("c/A")
    clock.now += 30.0
    trial = breaker.admit("d/A")
    assert trial.trial
    with pytest.raises(DnsTimeout):  # only one trial at a time
        breaker.admit("e/A")
    breaker.timed_out(trial)  # open again for open_s
    with pytest.raises(DnsTimeout):
        breaker.admit("f/A")
    clock.now += 30.0
    breaker.answered(breaker.admit("g/A"))
    assert not breaker.is_open and not breaker.admit("h/A").trial
    assert breaker.counts["failed_fast_breaker"] == 3 and breaker.counts["trials"] == 2


def test_an_answer_between_timeouts_keeps_it_closed_and_zero_never_opens() -> None:
    breaker = Breaker(timeouts=2, open_s=30.0, clock=Clock())
    breaker.timed_out(breaker.admit("a/A"))
    breaker.answered(breaker.admit("b/A"))  # SERVFAIL counts too: the server is there
    breaker.timed_out(breaker.admit("c/A"))
    assert not breaker.is_open
    never = Breaker(timeouts=0, open_s=30.0, clock=Clock())
    for _ in range(10):
        never.timed_out(never.admit("a/A"))
    assert not never.is_open


def test_a_session_fails_fast_after_its_own_timeout_unless_others_were_answered() -> None:
    clock = Clock()
    breaker = Breaker(timeouts=0, open_s=30.0, clock=clock)

    def session() -> None:
        begin_scope()
        slow = breaker.admit("slow.list.test/A")
        clock.now += 1.0
        breaker.answered(breaker.admit("other.list.test/A"))  # meanwhile: the server is there
        breaker.timed_out(slow)  # one slow name: the session goes on asking
        breaker.timed_out(breaker.admit("dead.test/TXT"))  # nothing answered while it waited
        with pytest.raises(DnsTimeout, match="earlier lookup timed out"):
            breaker.admit("sender.test/TXT")
        clock.now += 30.0
        breaker.admit("sender.test/TXT")  # after open_s it asks again

    contextvars.copy_context().run(session)
    assert not breaker.is_open and breaker.counts["failed_fast_session"] == 1
    breaker.admit("another.session.test/A")  # other sessions are not concerned
