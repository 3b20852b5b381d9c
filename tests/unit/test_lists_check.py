"""Allow and block lists: what matches, and that allowing only ever lowers the score."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.checks.lists import ListsCheck, load_lists
from gateway.config import SHIPPED_RULES_DIR
from gateway.errors import ConfigError
from gateway.model import (
    Action,
    CheckResult,
    Connection,
    DmarcFacts,
    Envelope,
    Phase,
    SpfFacts,
    Symbol,
    Transaction,
)
from gateway.pipeline.check import Check
from gateway.pipeline.engine import Pipeline
from gateway.pipeline.scoring import load_policy

LISTS = """
[allow]
client_ips = ["192.0.2.0/24", "2001:db8::/32"]
senders = ["boss@partner.example", "newsletter.example"]
from_domains = ["partner.example"]
recipients = ["abuse@example.test"]

[block]
client_ips = ["203.0.113.66"]
senders = ["spammer.example"]
from_domains = ["bad.example"]
recipients = ["honeypot@example.test"]
"""


def transaction(
    ip: str = "198.51.100.1",
    sender: str = "x@elsewhere.example",
    rcpts: tuple[str, ...] = ("u@example.test",),
    from_header: str = "X <x@elsewhere.example>",
    spf: str = "none",
    dmarc: str = "none",
) -> Transaction:
    raw = f"From: {from_header}\r\nSubject: hi\r\n\r\nbody\r\n".encode()
    domain = sender.rpartition("@")[2]
    results = {
        "spf": CheckResult("spf", facts=SpfFacts(spf, "mailfrom", domain, ip)),  # type: ignore[arg-type]
        "dmarc": CheckResult("dmarc", facts=DmarcFacts(dmarc, "")),  # type: ignore[arg-type]
    }
    return Transaction("t", Connection("t", ip), Envelope(sender, rcpts), raw, results)


@pytest.fixture
def check(tmp_path: Path) -> ListsCheck:
    path = tmp_path / "lists.toml"
    path.write_text(LISTS)
    return ListsCheck(path)


def symbols(check: ListsCheck, tx: Transaction) -> dict[str, str]:
    return {s.name: s.reason for s in asyncio.run(check.run(tx)).symbols}


def test_nothing_listed(check: ListsCheck) -> None:
    assert symbols(check, transaction()) == {}


@pytest.mark.parametrize(
    ("tx", "expected"),
    [
        (
            transaction(ip="192.0.2.77"),
            {"LIST_ALLOW_CLIENT_IP": "ip=192.0.2.77 entry=192.0.2.0/24"},
        ),
        (
            transaction(ip="2001:db8::5"),
            {"LIST_ALLOW_CLIENT_IP": "ip=2001:db8::5 entry=2001:db8::/32"},
        ),
        (
            transaction(ip="::ffff:203.0.113.66"),
            {"LIST_BLOCK_CLIENT_IP": "ip=::ffff:203.0.113.66 entry=203.0.113.66/32"},
        ),
        (
            transaction(sender="Boss@Partner.Example", spf="pass"),
            {"LIST_ALLOW_SENDER": "sender=Boss@Partner.Example entry=boss@partner.example"},
        ),
        (transaction(sender="Boss@Partner.Example", spf="softfail"), {}),  # forged: no bonus
        (transaction(sender="other@partner.example"), {}),  # an address entry is exact
        (
            transaction(sender="a@mail.newsletter.example", spf="pass"),
            {"LIST_ALLOW_SENDER": "sender=a@mail.newsletter.example entry=newsletter.example"},
        ),
        (transaction(sender="a@notnewsletter.example"), {}),  # subdomains, not suffixes
        (
            transaction(from_header="=?utf-8?Q?B=C3=B6se?= <x@www.bad.example>"),
            {"LIST_BLOCK_FROM": "from=x@www.bad.example entry=bad.example"},
        ),
        (
            transaction(rcpts=("ABUSE@example.test",)),
            {"LIST_ALLOW_RCPT": "rcpt=ABUSE@example.test entry=abuse@example.test"},
        ),
        (transaction(rcpts=("u@example.test", "ABUSE@example.test")), {}),  # not for everyone
        (transaction(rcpts=("u@example.test", "honeypot@example.test")), {}),
        (
            transaction(from_header="P <news@partner.example>", dmarc="pass"),
            {"LIST_ALLOW_FROM": "from=news@partner.example entry=partner.example"},
        ),
        (transaction(from_header="P <news@partner.example>", dmarc="fail"), {}),
        (transaction(from_header="news@partner.example, x@evil.example", dmarc="pass"), {}),
        (  # an encoded display name is not an address
            transaction(
                from_header="=?utf-8?q?ceo=40partner.example=2C?= <spam@evil.example>",
                dmarc="pass",
            ),
            {},
        ),
        (
            transaction(sender="a@spammer.example", rcpts=("honeypot@example.test",)),
            {
                "LIST_BLOCK_SENDER": "sender=a@spammer.example entry=spammer.example",
                "LIST_BLOCK_RCPT": "rcpt=honeypot@example.test entry=honeypot@example.test",
            },
        ),
        (transaction(sender=""), {}),  # null sender (bounces)
    ],
)
def test_matches(check: ListsCheck, tx: Transaction, expected: dict[str, str]) -> None:
    assert symbols(check, tx) == expected


def test_bad_lists_are_explained(tmp_path: Path) -> None:
    path = tmp_path / "lists.toml"
    path.write_text(
        '[allow]\nclient_ips = ["300.1.1.1"]\nsenders = ["@", "no spaces@x.example"]\n'
        'from_domains = ["a@b.example"]\ncolour = []\n[deny]\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_lists(path)
    text = "\n".join(caught.value.problems)
    assert "unknown tables ['deny']" in text
    assert "allow: unknown keys ['colour']" in text
    assert "allow.client_ips: '300.1.1.1' is not an IP address or network" in text
    assert "allow.senders: '@' is not an address or a domain" in text
    assert "allow.from_domains: 'a@b.example': only domains here" in text


def test_shipped_lists_load() -> None:
    allow, block = load_lists(SHIPPED_RULES_DIR / "lists.toml")
    assert allow.client_ips == () and block.client_ips == ()


class FakeVirusScanner(Check):
    """Stands in for the antivirus check: emits its forced-reject symbol for every message."""

    name = "antivirus"
    phase = Phase.DATA
    symbols = frozenset({"AV_VIRUS"})

    @property
    def error_symbol(self) -> str:
        return "AV_ERROR"

    async def run(self, tx: Transaction) -> CheckResult:
        return self.result(Symbol("AV_VIRUS", "Eicar-Test-Signature"))


def test_allowlisted_sender_is_still_rejected_by_a_forced_action(check: ListsCheck) -> None:
    pipeline = Pipeline([check, FakeVirusScanner()], load_policy(SHIPPED_RULES_DIR), 5.0)
    tx = transaction(ip="192.0.2.1", sender="boss@partner.example", rcpts=("abuse@example.test",))
    verdict = asyncio.run(pipeline.run_message(tx)).verdict
    assert verdict.score < 0  # every allow list matched ...
    assert verdict.action == Action.REJECT  # ... and the virus is rejected all the same
    assert verdict.reply == "554 5.7.0 Virus found: Eicar-Test-Signature"


def test_allow_only_lowers_the_score(check: ListsCheck) -> None:
    pipeline = Pipeline([check], load_policy(SHIPPED_RULES_DIR), 5.0)
    allowed = asyncio.run(pipeline.run_message(transaction(ip="192.0.2.1"))).verdict
    blocked = asyncio.run(pipeline.run_message(transaction(ip="203.0.113.66"))).verdict
    assert allowed.action == Action.ACCEPT and allowed.score < 0
    assert blocked.action == Action.REJECT
