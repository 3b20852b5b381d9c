"""`python -m training` end to end (what `gateway train` and `make train` run)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

from gateway.checks.classifier import ClassifierCheck, ClassifierModel
from gateway.feedback import record_feedback
from tests.support.mailcorpus import write_corpus

PROJECT = Path(__file__).resolve().parents[2]


def train(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", *map(str, args)],
        cwd=PROJECT, capture_output=True, text=True, timeout=50, check=False,
    )  # fmt: skip


def held_out(raw: bytes) -> bool:
    """The artefact's held-out rule (training.run._stable_holdout), restated independently."""
    return hashlib.sha256(raw).digest()[0] % 5 == 0


def test_trains_writes_artefact_card_and_plot_that_load(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "models"
    done = train("--public-corpus", tiny_corpus, "--out", out)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} == {"classifier.skops", "MODEL_CARD.md", "roc.png"}
    assert "warning: 60 ham and 40 spam: the held-out figures rest on a handful" in done.stderr
    assert "stratified 80/20, seed 42 (benchmark): AUC " in done.stderr
    assert "no list ham, no list spam" in done.stderr  # the generated corpus has none
    card = (out / "MODEL_CARD.md").read_text()
    assert "Weighting in the fits: list mail (List-Id, List-Post or Mailing-List)" in card
    assert "| ham | 60 |" in card and "| spam | 40 |" in card
    assert "stratified 80/20, seed 42" in card and "time-ordered" in card
    assert "5-fold CV inside the benchmark's 80%" in card and "seed 7 (variance" in card
    assert (out / "roc.png").read_bytes().startswith(b"\x89PNG")
    # Today's-mail probes: what the check emits, how they rank, what the shipped policy does.
    probes = {label: len(list((PROJECT / "training" / "probes" / label).glob("*.eml")))
              for label in ("ham", "spam")}  # fmt: skip
    for label, count in probes.items():
        summary = re.search(rf"^- {label}: (\d+) scored: (.*?);", card, re.MULTILINE)
        assert summary is not None and int(summary.group(1)) == count
        assert sum(map(int, re.findall(r"(\d+) `ML_", summary.group(2)))) == count
    assert "- ROC AUC over the probes: " in card and "`ML_SPAM` alone never quarantines" in card
    assert "The 12 ham the model rates most spam-like and the 12 spam it rates least" in card
    cells = [line.split(" | ") for line in card.splitlines() if line.startswith("| ")]
    rows = [(c[0][2:], float(c[2])) for c in cells if len(c) == 5 and c[3].startswith("ML_")]
    assert [label for label, _ in rows] == ["ham"] * 12 + ["spam"] * 12
    ham_p, spam_p = [p for _, p in rows[:12]], [p for _, p in rows[12:]]
    assert ham_p == sorted(ham_p, reverse=True) and spam_p == sorted(spam_p)
    check = ClassifierCheck.from_file(out / "classifier.skops")
    spam = (tiny_corpus / "spam" / "0001.eml").read_bytes()
    assert [s.name for s in check.classify(spam).symbols] == ["ML_SPAM"]


def test_refuses_a_worse_model_unless_forced(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "models"
    assert train("--public-corpus", tiny_corpus, "--out", out).returncode == 0
    current = (out / "classifier.skops").read_bytes()
    # Same messages, every training label flipped; held-out labels stay true: surely worse.
    flipped = tmp_path / "flipped"
    for side, other in (("ham", "spam"), ("spam", "ham")):
        for path in (tiny_corpus / side).iterdir():
            target = side if held_out(path.read_bytes()) else other
            (flipped / target).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, flipped / target / f"{side}-{path.name}")
    refused = train("--public-corpus", flipped, "--out", out)
    assert refused.returncode == 1
    assert "worse on the same held-out mail" in refused.stderr
    assert (out / "classifier.skops").read_bytes() == current
    forced = train("--public-corpus", flipped, "--out", out, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / "classifier.skops").read_bytes() != current
    assert (out / "classifier.skops.previous").read_bytes() == current  # one step back


def test_a_run_on_far_fewer_messages_is_warned_and_the_replaced_model_kept(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "models"
    assert train("--public-corpus", tiny_corpus, "--out", out).returncode == 0  # 100 messages
    current = (out / "classifier.skops").read_bytes()
    small = write_corpus(tmp_path / "small", n_ham=30, n_spam=18, seed=3)
    smaller = train("--public-corpus", small, "--out", out)
    assert smaller.returncode == 0, smaller.stderr
    assert "this run has 48 messages, the current model was trained on 100" in smaller.stderr
    assert (out / "classifier.skops.previous").read_bytes() == current


def test_feedback_store_joins_the_corpus(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", n_ham=30, n_spam=20)
    storage = tmp_path / "var"
    extra = write_corpus(tmp_path / "extra", n_ham=10, n_spam=10, seed=8)
    for side in ("ham", "spam"):
        for path in (extra / side).iterdir():
            record_feedback(storage, side, path.read_bytes())  # type: ignore[arg-type]
    out = tmp_path / "models"
    done = train("--public-corpus", corpus, "--feedback", storage / "feedback", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "feedback: 20 message(s) from" in done.stderr and "(10 ham, 10 spam)" in done.stderr
    card = (out / "MODEL_CARD.md").read_text()
    assert "| ham | 40 |" in card and "| spam | 30 |" in card
    assert "Of these, 20 learnt through feedback (10 ham, 10 spam)" in card
    assert ClassifierModel.load(out / "classifier.skops").metadata["learnt_messages"] == "20"


def test_a_missing_feedback_store_is_said(tiny_corpus: Path, tmp_path: Path) -> None:
    done = train("--public-corpus", tiny_corpus, "--feedback", tmp_path / "nope", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"feedback: {tmp_path / 'nope'} does not exist: nothing learnt is used" in done.stderr


def test_bad_arguments_and_corpora_are_clear_errors(tmp_path: Path) -> None:
    missing = train("--corpus", tmp_path / "nope")
    assert missing.returncode == 2 and "not a directory" in missing.stderr
    (tmp_path / "empty").mkdir()
    no_layout = train("--corpus", tmp_path / "empty", "--out", tmp_path / "out")
    assert no_layout.returncode == 2 and "ham/ and/or spam/" in no_layout.stderr
    tiny = write_corpus(tmp_path / "tiny", n_ham=3, n_spam=2)
    too_small = train("--corpus", tiny, "--out", tmp_path / "out")
    assert too_small.returncode == 1 and "at least 5 ham and 5 spam" in too_small.stderr
    assert "(read 3 ham, 2 spam)" in too_small.stderr
    assert not (tmp_path / "out").exists()
    bad_share = train("--corpus", tiny, "--list-share", "0")
    assert bad_share.returncode == 2 and "0: must be above 0 and at most 1" in bad_share.stderr


def test_config_names_the_feedback_store(tmp_path: Path) -> None:
    """`gateway train --config` finds what `gateway learn` filed, with no path to repeat."""
    corpus = write_corpus(tmp_path / "corpus", n_ham=30, n_spam=20)
    storage = tmp_path / "var"
    extra = write_corpus(tmp_path / "extra", n_ham=5, n_spam=5, seed=8)
    for side in ("ham", "spam"):
        for path in (extra / side).iterdir():
            record_feedback(storage, side, path.read_bytes())  # type: ignore[arg-type]
    config = tmp_path / "gateway.toml"
    config.write_text(f'[storage]\ndir = "{storage}"\n')
    done = train("--public-corpus", corpus, "--config", config, "--out", tmp_path / "models")
    assert done.returncode == 0, done.stderr
    assert f"feedback: 10 message(s) from {storage / 'feedback'} (5 ham, 5 spam)" in done.stderr


def test_fresh_clone_without_the_public_corpus_says_where_it_comes_from(tmp_path: Path) -> None:
    """`make train` on a fresh clone: ../shared is the developers' machine, not the project."""
    done = train("--public-corpus", tmp_path / "spamassassin-public")
    assert done.returncode == 2
    assert "the public corpus is not part of the project" in done.stderr
    assert "make train PUBLIC_CORPUS= CORPUS=DIR" in done.stderr
    assert "spamassassin.apache.org/old/publiccorpus" in done.stderr


def test_help_says_gateway_train() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "train", "--help"],
        cwd=PROJECT, capture_output=True, text=True, timeout=50, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("usage: gateway train ")
    assert "--config PATH" in done.stdout
