"""The attacker review's ways through (issue 31 items 1 and 2), sent over SMTP to the real front
end: a header with white space before its colon no longer hides the MIME tree, and a message
that readers split two ways is held."""

from __future__ import annotations

import base64

import pytest

from gateway.quarantine.store import Filter
from gateway.smtp import replies
from tests.support.gateway_fixture import GatewayFactory, RunningGateway, only_checks

EXE = b"MZ\x90\x00" + bytes(200)  # the start of a Windows executable


def _message(top: list[str], part: list[str], data: bytes = EXE) -> bytes:
    encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
    lines = [
        "From: Alice <alice@origin.test>",
        "To: bob@example.test",
        "Subject: invoice",
        "Date: Tue, 08 Dec 2026 04:00:00 +0000",
        "Message-ID: <reading@origin.test>",
        *top,
        "",
        "--b1",
        "Content-Type: text/plain",
        "",
        "The invoice is attached.",
        "--b1",
        *part,
        "",
        encoded.rstrip("\r\n"),
        "--b1--",
        "",
    ]
    return "\r\n".join(lines).encode()


TOP = ["MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="b1"']
PART = [
    'Content-Type: application/octet-stream; name="invoice.exe"',
    'Content-Disposition: attachment; filename="invoice.exe"',
    "Content-Transfer-Encoding: base64",
]
EXE_REPLY = "554 5.7.1 Attachment type not allowed: file=invoice.exe extension .exe"


@pytest.fixture
def gateway(gateway_factory: GatewayFactory) -> RunningGateway:
    return gateway_factory({"checks": only_checks("headers", "mime", "attachments")})


def _send(gateway: RunningGateway, raw: bytes) -> str:
    with gateway.client() as smtp:
        smtp.ehlo()
        assert smtp.mail("alice@origin.test")[0] == 250
        assert smtp.rcpt("bob@example.test")[0] == 250
        code, text = smtp.data(raw)
    return f"{code} {text.decode()}"


def _held(gateway: RunningGateway, reply: str) -> dict[str, str]:
    """The held message's symbols and reasons, after checking that the reply names it and
    that nothing was queued."""
    [entry] = gateway.quarantine.find(Filter())
    assert reply == replies.held(entry.id)
    assert gateway.spool.ids() == []
    return {s.name: s.reason for s in gateway.quarantine.get(entry.id).symbols}


@pytest.mark.parametrize(
    ("top", "part"),
    [
        pytest.param(["X-Pad : x", *TOP], PART, id="space-before-colon-in-message"),
        pytest.param(["X-Pad\t: x", *TOP], PART, id="tab-before-colon-in-message"),
        pytest.param(TOP, ["X-Pad : x", *PART], id="space-before-colon-in-part"),
        pytest.param(["MIME-Version: 1.0", 'Content-Type : multipart/mixed; boundary="b1"'], PART),
    ],
)
def test_obsolete_header_syntax_hides_no_attachment(
    gateway: RunningGateway, top: list[str], part: list[str]
) -> None:
    assert _send(gateway, _message(top, part)) == EXE_REPLY
    assert gateway.spool.ids() == []


@pytest.mark.parametrize(
    ("top", "part", "why"),
    [
        pytest.param(
            ["MIME-Version: 1.0", "Content-Type: text/plain", TOP[1]],
            PART,
            "two different Content-Type fields",
            id="two-top-level-content-types",
        ),
        pytest.param(
            ["MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="A"; boundary="b1"'],
            PART,
            "boundary read as 'A' and 'b1'",
            id="two-boundaries",
        ),
        pytest.param(
            TOP,
            [
                'Content-Type: application/pdf; name="invoice.pdf"',
                "Content-Transfer-Encoding: 7bit",
                "Content-Transfer-Encoding: base64",
            ],
            "two different Content-Transfer-Encoding fields",
            id="7bit-then-base64",
        ),
    ],
)
def test_a_message_read_two_ways_is_held(
    gateway: RunningGateway, top: list[str], part: list[str], why: str
) -> None:
    reply = _send(gateway, _message(top, part, b"%PDF-1.7\n"))
    assert why in _held(gateway, reply)["MIME_AMBIGUOUS"]


@pytest.mark.parametrize(
    "disposition",
    [
        pytest.param(
            ['Content-Disposition: attachment; filename="invoice.pdf"',
             "Content-Disposition: attachment; filename=invoice.exe"],
            id="two-dispositions",
        ),
        pytest.param(
            ["Content-Disposition: attachment; filename=invoice.pdf; filename*=utf-8''invoice.exe"],
            id="filename-and-filename*",
        ),
    ],
)  # fmt: skip
def test_every_reading_of_a_file_name_is_judged(
    gateway: RunningGateway, disposition: list[str]
) -> None:
    part = ['Content-Type: application/pdf; name="invoice.pdf"', *disposition]
    reply = _send(gateway, _message(TOP, [*part, "Content-Transfer-Encoding: base64"]))
    assert reply == (
        "554 5.7.1 Attachment type not allowed: file=invoice.exe extension .exe "
        "(a reading of 'invoice.pdf')"
    )
    assert gateway.spool.ids() == [] and gateway.quarantine.find(Filter()) == []


def test_ordinary_multipart_mail_is_queued(gateway: RunningGateway) -> None:
    part = [
        'Content-Type: application/pdf; name="invoice.pdf"',
        "Content-Disposition: attachment; filename=\"invoice.pdf\"; filename*=utf-8''invoice.pdf",
        "Content-Transfer-Encoding: base64",
    ]
    reply = _send(gateway, _message(TOP, part, b"%PDF-1.7\n"))
    [queued] = gateway.spool.ids()
    assert reply == replies.queued(queued)
