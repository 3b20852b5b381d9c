"""Strong classifier tiers: measured on the site's own mail scored unseen, read from the artefact's
metadata, set or switched off by config; the shipped kind of model gets none."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.checks.classifier import ClassifierCheck, ClassifierModel
from gateway.checks.classifier_tiers import (
    MIN_UNSEEN,
    configured_tiers,
    measured_point,
    model_tiers,
)
from gateway.model import Connection, Envelope, Transaction
from training.tiers import claim_of, describe_claim


def test_under_min_unseen_no_point_is_claimed() -> None:
    assert measured_point([0.1] * (MIN_UNSEEN - 1), spam_side=True) is None
    assert measured_point([0.1] * (MIN_UNSEEN - 1) + [0.3], spam_side=True) == 0.3


def test_from_1000_messages_the_point_allows_a_tenth_of_a_percent() -> None:
    ham = [i / 2000 for i in range(2000)]  # highest 0.9995, 0.999, ...
    # 2 of 2000 may lie above: the point is the third highest, and 2 lie strictly above it.
    assert measured_point(ham, spam_side=True) == ham[-3]
    spam = [0.5 + i / 4000 for i in range(1000)]
    assert measured_point(spam, spam_side=False) == spam[1]


def test_claim_and_metadata_round_trip() -> None:
    ham = [0.01 * (i % 50) for i in range(200)]  # highest 0.49
    spam = [0.4 + 0.003 * i for i in range(200)]  # lowest 0.4
    claim = claim_of(ham, spam, own_messages=2000, public_messages=0, learnt_messages=12)
    assert claim.spam_high_above == 0.49 and claim.ham_high_below == 0.4
    assert claim.spam_recall == sum(p > 0.49 for p in spam) / 200
    tiers = model_tiers(claim.metadata())
    assert (tiers.spam_high_above, tiers.ham_high_below) == (0.49, 0.4)
    assert "measured on 200 unseen ham and 200 unseen spam of this site's mail" in tiers.why
    text = describe_claim(claim)
    assert "ML_SPAM_HIGH at p > 0.4900: quarantines alone; 0 of 200 unseen ham" in text


def test_a_public_corpus_model_claims_nothing_unless_the_admin_sets_a_point() -> None:
    metadata = {"messages": "6080", "learnt_messages": "0"}  # the shipped model's keys
    tiers = model_tiers(metadata)
    assert (tiers.spam_high_above, tiers.ham_high_below) == (None, None)
    assert "public-corpus" in tiers.why
    by_hand = configured_tiers(metadata, "auto", 0.97, 0.0)
    assert by_hand.spam_high_above == 0.97 and "set in config" in by_hand.why
    claimed = claim_of([0.2] * 200, [0.9] * 200, 2000, 0).metadata()
    assert configured_tiers(claimed, "off", 0.0, 0.0).spam_high_above is None


def _check(above: float | None, below: float | None) -> ClassifierCheck:
    # Each word pushes the decision by 4 (its feature value is 8): p 0.982 or 0.018.
    model = ClassifierModel(("w:cash", "w:meeting"), np.array([0.5, -0.5]), 0.0, 1.0, 0.0)
    claim = claim_of([0.0] * 200, [1.0] * 200, 2000, 0).metadata()
    claim["spam_high_above"] = "" if above is None else str(above)
    claim["ham_high_below"] = "" if below is None else str(below)
    return ClassifierCheck(
        model, min_known_words=0, tiers=configured_tiers(claim, "auto", 0.0, 0.0)
    )


def _names(check: ClassifierCheck, raw: bytes) -> list[tuple[str, float]]:
    tx = Transaction("t1", Connection("c1", "127.0.0.1"), Envelope("a@b.example", ()), raw)
    return [(s.name, s.multiplier) for s in asyncio.run(check.run(tx)).symbols]


@pytest.mark.parametrize(
    ("above", "expected"), [(0.9, "ML_SPAM_HIGH"), (0.99, "ML_SPAM"), (None, "ML_SPAM")]
)
def test_spam_past_the_point_gets_the_strong_tier(above: float | None, expected: str) -> None:
    raw = b"Subject: x\r\n\r\ncash\r\n"  # decision +4: p 0.982
    [(name, multiplier)] = _names(_check(above, None), raw)
    assert name == expected
    assert multiplier == (1.0 if expected == "ML_SPAM_HIGH" else pytest.approx(0.982, abs=1e-3))


def test_ham_below_the_point_gets_the_strong_tier_and_its_reason_says_why() -> None:
    check = _check(None, 0.1)
    tx = Transaction(
        "t1", Connection("c1", "127.0.0.1"), Envelope("a@b.example", ()),
        b"Subject: x\r\n\r\nmeeting\r\n",
    )  # fmt: skip
    [symbol] = asyncio.run(check.run(tx)).symbols
    assert symbol.name == "ML_HAM_HIGH" and symbol.multiplier == 1.0
    assert symbol.reason.startswith("p=0.018 < 0.100, measured on 200 unseen ham")
