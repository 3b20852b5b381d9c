"""Quarantine test data: a store in tmp_path, a config pointing at it, held messages on demand.

def test_x(quarantine_store: QuarantineStore) -> None:
    qid = hold(quarantine_store, subject="Cheap pills", score=8.0)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import Config, config_from_dict
from gateway.model import Action, Connection, Envelope, ScoredSymbol, Transaction, Verdict, new_id
from gateway.quarantine.store import QuarantineStore

DEFAULT_SYMBOLS = (
    ScoredSymbol("HDR_MISSING_DATE", 1.0, "no Date header", "headers"),
    ScoredSymbol("GTUBE_QUARANTINE", 0.0, "quarantine test string at offset 120", "gtube"),
)


def make_message(
    subject: str = "Cheap pills",
    header_from: str = "Spammer <spammer@bad.test>",
    body: str = "Buy now, limited offer.\r\n",
    extra_headers: str = "",
) -> bytes:
    return (
        f"From: {header_from}\r\nTo: bob@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{new_id()}@bad.test>\r\n{extra_headers}\r\n{body}"
    ).encode()


def hold(
    store: QuarantineStore,
    *,
    data: bytes | None = None,
    subject: str = "Cheap pills",
    mail_from: str = "bounce@bad.test",
    rcpt_tos: tuple[str, ...] = ("bob@example.test",),
    score: float = 8.0,
    symbols: tuple[ScoredSymbol, ...] = DEFAULT_SYMBOLS,
    client_ip: str = "192.0.2.7",
) -> str:
    """Quarantine one message the way the SMTP layer does; returns its id."""
    tx = Transaction(
        new_id(),
        Connection(new_id(), client_ip, helo="mail.bad.test"),
        Envelope(mail_from, rcpt_tos),
    )
    verdict = Verdict(
        action=Action.QUARANTINE,
        score=score,
        quarantine_at=6.0,
        reject_at=15.0,
        symbols=symbols,
        reason=f"score {score:g} >= quarantine threshold 6",
    )
    return store.add(tx, verdict, data if data is not None else make_message(subject=subject))


@pytest.fixture
def quarantine_config(tmp_path: Path) -> Config:
    return config_from_dict({"storage": {"dir": str(tmp_path / "var")}})


@pytest.fixture
def quarantine_store(quarantine_config: Config) -> Iterator[QuarantineStore]:
    store = QuarantineStore(quarantine_config.storage_dir / "quarantine")
    yield store
    store.close()
