"""The relay gate and SMTP path parsing: every address trick is refused, plain mail passes."""

from __future__ import annotations

import pytest

from gateway.smtp.addresses import (
    PathArgument,
    RelayDenied,
    RelayGate,
    helo_problem,
    sender_problem,
    split_path_argument,
    strip_source_route,
)

GATE = RelayGate(["example.test", "Other.Test"])


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("bob@example.test", "bob@example.test"),
        ("Bob.Smith@EXAMPLE.TEST", "Bob.Smith@example.test"),
        ("bob+tag@other.test", "bob+tag@other.test"),
        ("o'neil@example.test", "o'neil@example.test"),
        ("PostMaster", "postmaster@example.test"),  # RFC 5321 4.5.1: MUST be accepted
    ],
)
def test_plain_recipients_of_our_domains_pass(path: str, expected: str) -> None:
    assert GATE.accept(path, smtputf8=False) == expected


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("bob@elsewhere.test", "we do not relay for this domain"),
        ("bob@sub.example.test", "we do not relay for this domain"),
        ("bob@example.test.evil", "we do not relay for this domain"),
        ("user%elsewhere.test@example.test", "% routing is not accepted"),
        ("elsewhere.test!user@example.test", "bang paths are not accepted"),
        ("@relay.test,@example.test:user@example.test", "source routes are not accepted"),
        ("@example.test:user@elsewhere.test", "source routes are not accepted"),
        ('"user@elsewhere.test"@example.test', "quoted local parts are not accepted"),
        ('"user%elsewhere.test"@example.test', "quoted local parts are not accepted"),
        ('"john doe"@example.test', "quoted local parts are not accepted"),
        ("user@[127.0.0.1]", "address literals are not accepted"),
        ("user@[IPv6:::1]", "address literals are not accepted"),
        ("user@example.test.", "we do not relay for this domain"),
        ("user@", "empty domain"),
        ("user@elsewhere.test@example.test", "an address needs exactly one @ and a domain"),
        ("postmaster.x", "an address needs exactly one @ and a domain"),
        ("", "empty address"),
        ("@example.test", "source routes are not accepted"),
        (".bob@example.test", "malformed local part"),
        ("bob..smith@example.test", "malformed local part"),
        ("bob smith@example.test", "malformed local part"),
        ("b\\ob@example.test", "malformed local part"),
        ("bøb@example.test", "malformed local part"),  # non-ASCII needs SMTPUTF8
        ("b\udcffob@example.test", "malformed local part"),  # bytes that were not UTF-8
        ("x" * 65 + "@example.test", "local part too long"),
        ("x" * 250 + "@example.test", "address too long"),
    ],
)
def test_every_trick_is_refused(path: str, reason: str) -> None:
    with pytest.raises(RelayDenied) as denied:
        GATE.accept(path, smtputf8=False)
    assert denied.value.reason == reason


def test_utf8_local_parts_pass_only_with_smtputf8() -> None:
    assert GATE.accept("bøb@example.test", smtputf8=True) == "bøb@example.test"
    with pytest.raises(RelayDenied):
        GATE.accept("b\udcffob@example.test", smtputf8=True)
    # C1 controls and line separators would reach the Received field and logs (fuzzing).
    for separator in ("\x85", "\u2028", "\u2029"):
        with pytest.raises(RelayDenied):
            GATE.accept(f"b{separator}ob@example.test", smtputf8=True)


def test_a_gate_without_domains_cannot_exist() -> None:
    with pytest.raises(ValueError):
        RelayGate([])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<bob@example.test>", PathArgument("bob@example.test", ())),
        (
            " <bob@example.test> SIZE=10 BODY=8BITMIME",
            PathArgument("bob@example.test", ("SIZE=10", "BODY=8BITMIME")),
        ),
        ("<>", PathArgument("", ())),
        ('<"a>b"@example.test>', PathArgument('"a>b"@example.test', ())),
        ('<"a\\">"@example.test>', PathArgument('"a\\">"@example.test', ())),
        ("bob@example.test SIZE=1", PathArgument("bob@example.test", ("SIZE=1",))),
        ("<bob@example.test", None),
        ("<bob@example.test>junk", None),
        ("", None),
    ],
)
def test_split_path_argument(text: str, expected: PathArgument | None) -> None:
    assert split_path_argument(text) == expected


def test_source_routes_are_stripped_from_senders() -> None:
    assert strip_source_route("@a.test,@b.test:user@c.test") == "user@c.test"
    assert strip_source_route("user@c.test") == "user@c.test"
    # A route to nothing is no null sender: a bounce is exempt from things a message is not.
    assert strip_source_route("@a.test:") == "@a.test:"
    assert sender_problem(strip_source_route("@a.test:"), smtputf8=False) == "not local@domain"


@pytest.mark.parametrize(
    ("path", "smtputf8", "problem"),
    [
        ("", False, None),
        ("alice@sender.test", False, None),
        ("alice@sender", False, None),
        ("ålice@sender.test", True, None),
        ("ålice@sender.test", False, "non-ASCII without SMTPUTF8"),
        ("alice", False, "not local@domain"),
        ("alice@", False, "not local@domain"),
        ("al ice@sender.test", False, "control characters or spaces"),
        ("a" * 300 + "@sender.test", False, "too long"),
        ("\udcffa@sender.test", True, "not valid UTF-8"),
        ("a\x85b@sender.test", True, "control characters"),
        ('"a\u2028b"@sender.test', True, "control characters"),
    ],
)
def test_sender_problem(path: str, smtputf8: bool, problem: str | None) -> None:
    assert sender_problem(path, smtputf8) == problem


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("mail.sender.test", None),
        ("[192.0.2.1]", None),
        ("bücher.test", None),
        ("bad\udcffname", "not a host name"),
        ("tab\tname", "not a host name"),
        ("x" * 300, "too long"),
    ],
)
def test_helo_problem(name: str, problem: str | None) -> None:
    assert helo_problem(name) == problem
