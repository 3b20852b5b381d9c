"""Each SMTP phase runs its checks, and a stop verdict becomes that phase's reply.

A small probe check per phase refuses when the session carries a marker word (client IP
127.0.0.3 at connect; "reject"/"tempfail" in HELO, sender or recipient); the policy is built
in code, as the shipped rules know nothing of probes.
"""

from __future__ import annotations

import json
import logging

import pytest

from gateway.model import Action, CheckResult, OnError, Phase, Symbol, Transaction
from gateway.pipeline.check import Check
from gateway.pipeline.engine import Pipeline
from gateway.pipeline.scoring import ForcedAction, Policy, SymbolPolicy, Thresholds
from gateway.smtp import replies
from tests.support.gateway_fixture import RunningGateway
from tests.support.smtp_client import RawSmtp


def probe(for_phase: Phase) -> Check:
    prefix = f"PROBE_{for_phase.name}"

    class Probe(Check):
        name = f"probe_{for_phase.name.lower()}"
        phase = for_phase
        symbols = frozenset({f"{prefix}_REJECT", f"{prefix}_TEMPFAIL"})

        async def run(self, tx: Transaction) -> CheckResult:
            seen = {
                Phase.CONNECT: "reject" if tx.connection.client_ip == "127.0.0.3" else "",
                Phase.HELO: tx.connection.helo,
                Phase.MAIL: tx.envelope.mail_from,
                Phase.RCPT: tx.envelope.rcpt_tos[-1] if tx.envelope.rcpt_tos else "",
                Phase.DATA: tx.raw.decode(errors="replace"),
            }[for_phase]
            for word in ("reject", "tempfail"):
                if word in seen:
                    return self.result(Symbol(f"{prefix}_{word.upper()}", f"saw {word}"))
            return self.result()

    return Probe(timeout_s=5.0, on_error=OnError.IGNORE)


class Exploding(Check):
    """Fails with an internal detail the client must never see; its failure defers the mail."""

    name = "exploding"
    phase = Phase.DATA
    symbols = frozenset()

    async def run(self, tx: Transaction) -> CheckResult:
        if b"explode" in tx.raw:
            raise RuntimeError("password=hunter2\r\n250 fake")
        return self.result()


@pytest.fixture
def probed(gateway: RunningGateway) -> RunningGateway:
    checks = [*(probe(phase) for phase in Phase), Exploding(5.0, OnError.TEMPFAIL)]
    symbols = {s: SymbolPolicy(0.0) for c in checks for s in c.all_symbols()}
    forced = {
        s: ForcedAction(Action.REJECT if s.endswith("_REJECT") else Action.TEMPFAIL)
        for c in checks
        for s in c.symbols
    }
    policy = Policy(symbols, {}, Thresholds(6.0, 15.0), forced)
    assert gateway.front_end is not None
    gateway.front_end.handler.pipeline = Pipeline(checks, policy, deadline_s=10.0)
    return gateway


def test_connect_reject_is_554_then_503_until_quit(
    probed: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.transaction")
    with RawSmtp(probed.host, probed.port, source_ip="127.0.0.3") as client:
        reply = client.reply()
        assert reply.startswith("554 5.7.1 Refused (PROBE_CONNECT_REJECT forces reject)")
        # RFC 5321 3.1: the client may only QUIT now.
        assert client.command("EHLO client.test") == replies.NO_SERVICE
        assert client.command("MAIL FROM:<a@sender.test>") == replies.NO_SERVICE
        assert client.command("QUIT") == replies.CLOSING
        assert client.closed_by_server()
    [line] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.transaction"]
    assert line["outcome"] == "reject"
    assert line["sender"] is None
    assert line["symbols"][0]["name"] == "PROBE_CONNECT_REJECT"


@pytest.mark.parametrize(
    ("helo", "expected"),
    [
        ("reject.test", "550 5.7.1 Refused (PROBE_HELO_REJECT forces reject)"),
        ("tempfail.test", "451 4.7.1 Try again later (PROBE_HELO_TEMPFAIL forces tempfail)"),
    ],
)
def test_helo_refusal(probed: RunningGateway, helo: str, expected: str) -> None:
    with RawSmtp(probed.host, probed.port) as client:
        client.reply()
        assert client.command(f"EHLO {helo}").startswith(expected)
        assert client.command("MAIL FROM:<a@sender.test>") == replies.NEED_HELO
        assert client.command("EHLO good.test").startswith("250-")


def test_mail_and_rcpt_refusals(probed: RunningGateway) -> None:
    with RawSmtp(probed.host, probed.port) as client:
        client.greet()
        assert client.command("MAIL FROM:<reject@sender.test>").startswith(
            "550 5.7.1 Refused (PROBE_MAIL_REJECT forces reject), transaction "
        )
        assert client.command("MAIL FROM:<tempfail@sender.test>").startswith("451 4.7.1 ")
        assert client.command("MAIL FROM:<a@sender.test>") == replies.sender_ok()
        assert client.command("RCPT TO:<reject@example.test>").startswith(
            "550 5.7.1 Refused (PROBE_RCPT_REJECT forces reject)"
        )
        assert client.command("RCPT TO:<bob@example.test>") == replies.recipient_ok()
        assert client.command("DATA") == replies.START_MAIL
        client.send(b"Subject: tempfail\r\n\r\nbody\r\n.\r\n")
        assert client.reply().startswith(
            "451 4.7.1 Try again later (PROBE_DATA_TEMPFAIL forces tempfail), transaction "
        )
    assert probed.spool.ids() == []


def test_a_failing_check_defers_without_showing_its_error(probed: RunningGateway) -> None:
    with RawSmtp(probed.host, probed.port) as client:
        client.greet()
        client.command("MAIL FROM:<a@sender.test>")
        client.command("RCPT TO:<bob@example.test>")
        client.command("DATA")
        client.send(b"Subject: explode\r\n\r\nbody\r\n.\r\n")
        reply = client.reply()
        assert reply == replies.deferred(reply.rpartition(" ")[2], "check exploding failed")
        assert client.command("NOOP") == replies.NOOP
    assert probed.spool.ids() == []
