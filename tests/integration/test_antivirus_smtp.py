"""Antivirus and attachment policy through the real SMTP front end with a real clamd."""

from __future__ import annotations

import pytest

from gateway.quarantine.store import Filter
from gateway.smtp import replies
from tests.support.attachments_mail import message, nested_zip, zip_of
from tests.support.clamd_fixture import EICAR, MAX_RECURSION, ClamdServer, free_port
from tests.support.gateway_fixture import GatewayFactory, RunningGateway, only_checks

VIRUS_REPLY = "554 5.7.0 Virus found: Eicar-Test-Signature.UNOFFICIAL"


def start(factory: GatewayFactory, address: str) -> RunningGateway:
    checks = only_checks("headers", "antivirus", "attachments")
    checks["antivirus"]["address"] = address
    checks["antivirus"]["timeout_s"] = 5.0
    return factory({"checks": checks})


def send(gateway: RunningGateway, raw: bytes) -> str:
    with gateway.client() as smtp:
        smtp.ehlo()
        assert smtp.mail("sender@origin.test")[0] == 250
        assert smtp.rcpt("user@example.test")[0] == 250
        code, text = smtp.data(raw)
    return f"{code} {text.decode()}"


@pytest.fixture
def gateway(gateway_factory: GatewayFactory, clamd_server: ClamdServer) -> RunningGateway:
    return start(gateway_factory, clamd_server.address)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(message(("eicar.com", EICAR)), id="base64-attachment"),
        pytest.param(message(("a.zip", zip_of(("eicar.com", EICAR)))), id="zip"),
        pytest.param(message(("a.zip", nested_zip("eicar.com", EICAR, 2))), id="zip-in-zip"),
    ],
)
def test_virus_is_rejected_naming_the_signature(gateway: RunningGateway, raw: bytes) -> None:
    assert send(gateway, raw) == VIRUS_REPLY
    assert gateway.spool.ids() == []


def test_clean_message_is_queued(gateway: RunningGateway) -> None:
    reply = send(gateway, message(("report.pdf", b"%PDF-1.7\n" + bytes(3000))))
    [queued] = gateway.spool.ids()
    assert reply == replies.queued(queued)


def test_blocked_type_is_rejected_and_macro_document_held(gateway: RunningGateway) -> None:
    reply = send(gateway, message(("docs.zip", zip_of(("invoice.pdf.exe", b"MZ")))))
    assert reply == (
        "554 5.7.1 Attachment type not allowed: file=docs.zip/invoice.pdf.exe extension .exe"
    )
    reply = send(gateway, message(("budget.xlsm", b"x")))
    [held] = [e.id for e in gateway.quarantine.find(Filter())]
    assert reply == replies.held(held)


def test_unscannable_message_is_held(gateway: RunningGateway) -> None:
    raw = message(("deep.zip", nested_zip("notes.txt", b"hi", MAX_RECURSION + 2)))
    reply = send(gateway, raw)
    [held] = [e.id for e in gateway.quarantine.find(Filter())]
    assert reply == replies.held(held)


def test_clamd_down_defers_and_stores_nothing(gateway_factory: GatewayFactory) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    gateway = start(gateway_factory, address)
    reply = send(gateway, message(("report.pdf", b"%PDF-1.7\n")))
    assert reply.startswith("451 4.7.1 Try again later (check antivirus failed), transaction ")
    assert "127.0.0.1" not in reply  # internal addresses never reach the client
    assert gateway.spool.ids() == [] and gateway.quarantine.find(Filter()) == []
