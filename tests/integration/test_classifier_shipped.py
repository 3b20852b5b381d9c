"""The shipped model in models/: loads, matches this code, and judges today's mail sensibly."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.checks.classifier import ClassifierCheck
from gateway.config import SHIPPED_MODEL, load_config

PROBES = Path(__file__).resolve().parents[2] / "training" / "probes"


@pytest.fixture(scope="module")
def shipped() -> ClassifierCheck:
    return ClassifierCheck.from_file(SHIPPED_MODEL)


@pytest.mark.parametrize(
    ("probe", "symbol"),
    [
        ("ham/colleague-meeting.eml", "ML_HAM"),
        ("ham/github-notification.eml", "ML_HAM"),
        ("spam/crypto-investment.eml", "ML_SPAM"),
        ("spam/m365-password-expiry.eml", "ML_SPAM"),
    ],
)
def test_modern_messages_unlike_the_2002_corpus(
    shipped: ClassifierCheck, probe: str, symbol: str
) -> None:
    symbols = shipped.classify((PROBES / probe).read_bytes()).symbols
    assert [s.name for s in symbols] == [symbol]


def test_default_config_points_at_the_shipped_model() -> None:
    assert Path(load_config(None).checks.classifier.model) == SHIPPED_MODEL
    assert SHIPPED_MODEL.is_file()


def test_large_message_is_scored_with_bounded_text(shipped: ClassifierCheck) -> None:
    body = b"word " * 2_000_000  # 10 MB of text: extraction caps what it reads
    result = shipped.classify(b"From: a@b.example\nSubject: big\n\n" + body)
    assert result.error is None
