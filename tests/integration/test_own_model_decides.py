"""After `gateway train` on the site's own mail, the model decides (issue 30): a model trained on
a generated site corpus in a temp dir quarantines spam alone over SMTP, at the point it measured
on its own mail scored unseen; too little of it is refused without --force."""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.checks.classifier import ClassifierModel
from gateway.checks.classifier_tiers import MIN_UNSEEN, model_tiers
from gateway.quarantine.store import Filter
from gateway.smtp import replies
from tests.support.gateway_fixture import GatewayFactory, only_checks
from tests.support.mailcorpus import ham_message, spam_message, write_corpus

PROJECT = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 3, 1, tzinfo=UTC)


def train(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", *map(str, args)],
        cwd=PROJECT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def site_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    corpus = write_corpus(root / "mail", n_ham=900, n_spam=300, seed=11)
    done = train("--corpus", corpus, "--out", root / "model")
    assert done.returncode == 0, done.stderr
    assert "ML_SPAM_HIGH at p > " in done.stderr and ": quarantines alone; 0 of " in done.stderr
    return root / "model" / "classifier.skops"


def test_the_card_and_artefact_say_what_the_model_may_do(site_model: Path) -> None:
    tiers = model_tiers(ClassifierModel.load(site_model).metadata)
    assert tiers.spam_high_above is not None and tiers.spam_high_above < 1.0
    assert "unseen ham" in tiers.why and "of this site's mail" in tiers.why
    card = (site_model.parent / "MODEL_CARD.md").read_text()
    assert "## What the gateway lets this model do" in card and "ML_SPAM_HIGH at p > " in card


def test_spam_is_quarantined_by_the_model_alone_and_ham_delivered(
    gateway_factory: GatewayFactory, site_model: Path
) -> None:
    checks = only_checks("classifier")
    checks["classifier"]["model"] = str(site_model)
    gateway = gateway_factory({"checks": checks})
    rng = random.Random(2026)  # messages the model never saw
    spam = [spam_message(rng, 5000 + n, NOW) for n in range(20)]
    ham = [ham_message(rng, 6000 + n, NOW) for n in range(20)]
    with gateway.client() as smtp:
        smtp.ehlo()
        for raw in spam + ham:
            assert smtp.mail("sender@origin.test")[0] == 250
            assert smtp.rcpt("user@example.test")[0] == 250
            code, text = smtp.data(raw.replace(b"\n", b"\r\n"))
            assert code == 250, text
    held = gateway.quarantine.find(Filter())
    assert len(held) == len(spam) and len(gateway.spool.ids()) == len(ham)
    symbols = {s.name for entry in held for s in gateway.quarantine.get(entry.id).symbols}
    assert symbols == {"ML_SPAM_HIGH"}


def test_the_same_model_with_tiers_off_never_quarantines_alone(
    gateway_factory: GatewayFactory, site_model: Path
) -> None:
    checks = only_checks("classifier")
    checks["classifier"].update(model=str(site_model), tiers="off")
    gateway = gateway_factory({"checks": checks})
    with gateway.client() as smtp:
        smtp.ehlo()
        smtp.mail("sender@origin.test")
        smtp.rcpt("user@example.test")
        code, text = smtp.data(spam_message(random.Random(7), 7000, NOW).replace(b"\n", b"\r\n"))
    [queued] = gateway.spool.ids()
    assert f"{code} {text.decode()}" == replies.queued(queued)


def test_too_little_held_out_mail_is_refused_unless_forced(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "mail", n_ham=120, n_spam=60, seed=5)
    refused = train("--corpus", corpus, "--out", tmp_path / "model")
    assert refused.returncode == 1
    assert f"unseen ham of your own mail, fewer than {MIN_UNSEEN}" in refused.stderr
    assert not (tmp_path / "model" / "classifier.skops").exists()
    forced = train("--corpus", corpus, "--out", tmp_path / "model", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "ML_SPAM_HIGH: off (" in forced.stderr
