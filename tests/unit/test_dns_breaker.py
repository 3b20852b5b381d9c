"""The resolver's breaker on a hand-driven clock: when lookups fail at once, and when not."""

from __future__ import annotations

import contextvars
from collections.abc import Callable

import pytest

from gateway.errors import DnsTimeout
from gateway.net.dns import Breaker, begin_scope


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Resolver:
    """Stands in for the resolver's own probe: does it answer at all? Counted."""

    def __init__(self, alive: bool) -> None:
        self.alive = alive
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.alive


def _breaker(timeouts: int, resolver: Resolver, clock: Clock | None = None) -> Breaker:
    return Breaker(timeouts, 30.0, resolver, clock or Clock(), run_probe=lambda job: job())


def test_timeouts_in_a_row_and_a_silent_resolver_open_it_until_the_resolver_answers() -> None:
    clock = Clock()
    resolver = Resolver(alive=False)
    breaker = _breaker(2, resolver, clock)
    breaker.timed_out(breaker.admit("a/A"))
    assert not breaker.is_open and resolver.asked == 0
    breaker.timed_out(breaker.admit("b/A"))
    assert breaker.is_open and breaker.counts["opened"] == 1 and resolver.asked == 1
    with pytest.raises(DnsTimeout, match="not answering"):
        breaker.admit("c/A")
    assert resolver.asked == 1  # not asked again before open_s
    clock.now += 30.0
    with pytest.raises(DnsTimeout):  # asked again; still silent: open for open_s more
        breaker.admit("d/A")
    assert resolver.asked == 2 and breaker.is_open
    clock.now += 30.0
    resolver.alive = True
    with pytest.raises(DnsTimeout):  # the lookup that asked fails; the resolver answered
        breaker.admit("e/A")
    assert not breaker.is_open
    breaker.answered(breaker.admit("f/A"))
    assert breaker.counts["failed_fast_breaker"] == 3 and breaker.counts["probes"] == 3


def test_timeouts_of_names_a_sender_chose_never_open_it_while_the_resolver_answers() -> None:
    # A tarpitting name server makes lookups of the sender's own domains time out at will: that
    # must not defer everyone else's mail.
    resolver = Resolver(alive=True)
    breaker = _breaker(2, resolver)
    for n in range(20):
        breaker.timed_out(breaker.admit(f"x{n}.tarpit.test/TXT"))
    assert not breaker.is_open and breaker.counts["opened"] == 0
    assert resolver.asked == 10  # once per `timeouts` in a row
    breaker.admit("legit.test/TXT")


def test_an_answer_between_timeouts_keeps_it_closed_and_zero_never_opens() -> None:
    breaker = _breaker(2, Resolver(alive=False))
    breaker.timed_out(breaker.admit("a/A"))
    breaker.answered(breaker.admit("b/A"))  # SERVFAIL counts too: the server is there
    breaker.timed_out(breaker.admit("c/A"))
    assert not breaker.is_open
    never = _breaker(0, Resolver(alive=False))
    for _ in range(10):
        never.timed_out(never.admit("a/A"))
    assert not never.is_open


def test_a_session_fails_fast_after_its_own_timeout_unless_others_were_answered() -> None:
    clock = Clock()
    breaker = _breaker(0, Resolver(alive=False), clock)

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


def test_a_session_waits_for_the_probe_and_goes_on_when_the_resolver_answers() -> None:
    # One slow name (the sender's SPF record behind a tarpit) must not fail the session's
    # other lookups (its DKIM key) when the resolver itself answers.
    resolver = Resolver(alive=True)
    probes: list[Callable[[], None]] = []
    clock = Clock()
    breaker = Breaker(1, 30.0, resolver, clock, run_probe=probes.append)

    def session() -> None:
        begin_scope()
        breaker.timed_out(breaker.admit("tarpit.test/TXT"))
        pending = breaker.pending_probe()
        assert pending is not None and not pending.done()
        clock.now += 0.1
        probes.pop()()  # the probe's thread runs: the resolver answers
        assert pending.result(timeout=0) is True and breaker.pending_probe() is None
        breaker.admit("sel._domainkey.legit.test/TXT")  # asked, not failed at once

    contextvars.copy_context().run(session)
    assert not breaker.is_open and breaker.counts["failed_fast_session"] == 0
