"""The headers we prepend: Received (RFC 5321 4.4), X-Spam-Score, X-Spam-Status."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.model import Action, Connection, Envelope, ScoredSymbol, Transaction, Verdict
from gateway.smtp.stamp import fold, gateway_headers, received, stamp

WHEN = datetime(2026, 11, 29, 2, 45, tzinfo=UTC)


def tx(
    rcpts: tuple[str, ...] = ("bob@example.test",),
    ip: str = "192.0.2.1",
    helo: str = "mail.a.test",
    esmtp: bool = True,
    tls: bool = False,
    smtputf8: bool = False,
) -> Transaction:
    connection = Connection("c1", ip, helo=helo, esmtp=esmtp, tls=tls)
    return Transaction("tx1", connection, Envelope("a@a.test", rcpts, smtputf8=smtputf8), b"")


def verdict(action: Action = Action.ACCEPT, names: tuple[str, ...] = ()) -> Verdict:
    symbols = tuple(ScoredSymbol(n, 1.5, "why", "chk") for n in names)
    return Verdict(action, 1.5 * len(names), 6.0, 15.0, symbols, "because")


def test_received_for_one_recipient() -> None:
    assert received(tx(), "mx.gateway.test", WHEN) == (
        "Received: from mail.a.test ([192.0.2.1])\r\n"
        "\tby mx.gateway.test with ESMTP id tx1\r\n"
        "\tfor <bob@example.test>; Sun, 29 Nov 2026 02:45:00 +0000"
    )


def test_received_hides_recipients_when_several_and_names_the_protocol() -> None:
    header = received(
        tx(rcpts=("a@example.test", "b@example.test"), ip="2001:db8::1", tls=True), "mx", WHEN
    )
    assert header == (
        "Received: from mail.a.test ([IPv6:2001:db8::1])\r\n"
        "\tby mx with ESMTPS id tx1;\r\n"
        "\tSun, 29 Nov 2026 02:45:00 +0000"
    )
    assert " with SMTP id " in received(tx(esmtp=False), "mx", WHEN)
    assert " with UTF8SMTPS id " in received(tx(smtputf8=True, tls=True), "mx", WHEN)


def test_received_neutralises_a_hostile_helo() -> None:
    header = received(tx(helo="evil) (by trusted.test\x00"), "mx", WHEN)
    assert header.startswith("Received: from evil???by?trusted.test? ([192.0.2.1])")


def test_spam_headers_and_order() -> None:
    headers = gateway_headers(
        tx(),
        verdict(Action.QUARANTINE, ("A_X", "B_Y")),
        "mx",
        extra=["Authentication-Results: mx; none"],
    )
    assert headers[:3] == [
        "Authentication-Results: mx; none",
        "X-Spam-Score: 3.00",
        "X-Spam-Status: Yes, score=3.00 required=6.00 symbols=A_X,B_Y",
    ]
    assert headers[3].startswith("Received: ")
    clean = gateway_headers(tx(), verdict(), "mx")
    assert clean[1] == "X-Spam-Status: No, score=0.00 required=6.00 symbols=none"


def test_long_symbol_lists_are_folded() -> None:
    names = tuple(f"SYMBOL_NUMBER_{i}" for i in range(12))
    status = gateway_headers(tx(), verdict(Action.ACCEPT, names), "mx")[1]
    lines = status.split("\r\n")
    assert len(lines) > 1
    assert all(len(line) <= 78 for line in lines)
    assert all(line.startswith("\t") for line in lines[1:])
    assert status.replace("\r\n\t", "").endswith(",".join(names))


def test_fold_leaves_short_fields_alone() -> None:
    assert fold("X-A: a,b", ",") == "X-A: a,b"


def test_stamp_prepends_with_crlf() -> None:
    assert stamp(b"Subject: x\r\n\r\nbody\r\n", ["X-A: 1", "X-B: 2\r\n\tcont"]) == (
        b"X-A: 1\r\nX-B: 2\r\n\tcont\r\nSubject: x\r\n\r\nbody\r\n"
    )
