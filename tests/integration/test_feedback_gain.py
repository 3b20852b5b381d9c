"""`python -m training.feedback_gain`: learning some of a new kind of mail helps score the rest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from gateway.features import extract
from tests.support.mailcorpus import write_corpus
from training.feedback_gain import probe_set, random_halves, scores_learning_other_half
from training.fit import FeatureTable, fit_linear
from training.readers import read_labelled_dir

PROJECT = Path(__file__).resolve().parents[2]
# Mail of a kind the corpus never shows: ham and spam alike in structure, apart in wording.
NEW_HAM = ("statement", "payslip", "itinerary", "receipt", "renewal", "shipment")
NEW_SPAM = ("wallet", "bitcoin", "recovery", "webcam", "transfer", "beneficiary")


def write_probes(root: Path, per_label: int = 8) -> Path:
    for label, words in (("ham", NEW_HAM), ("spam", NEW_SPAM)):
        (root / label).mkdir(parents=True)
        for n in range(per_label):
            text = " ".join(words[(n + i) % len(words)] for i in range(30))
            (root / label / f"{n}.eml").write_bytes(
                f"From: Notice <notice@sender{n}.example>\nTo: me@example.test\n"
                f"Subject: Notice {n}\nMessage-ID: <{label}{n}@sender{n}.example>\n"
                f"Date: Mon, 01 Dec 2025 08:00:00 +0000\n\n{text}\n".encode()
            )
    return root


def test_learning_half_of_a_new_kind_ranks_the_other_half(tmp_path: Path) -> None:
    examples = read_labelled_dir(write_corpus(tmp_path / "corpus"), lambda *_: None)
    rows = [extract(e.raw) for e in examples]
    labels = np.array([e.label for e in examples], dtype=np.int64)
    probes, probe_labels = probe_set(write_probes(tmp_path / "probes"))
    corpus_only = fit_linear(FeatureTable.of(rows), labels, calibrate=False)
    before = roc_auc_score(probe_labels, corpus_only.decision(probes))
    halves = random_halves(probe_labels, np.random.default_rng(0))
    assert sorted(np.bincount(halves[probe_labels == 1])) == [4, 4]
    weights = np.ones(len(rows))
    after = roc_auc_score(
        probe_labels,
        scores_learning_other_half(rows, labels, weights, probes, probe_labels, halves),
    )
    assert before < 0.8 and after > 0.95


def test_command_reports_both_figures(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", n_ham=30, n_spam=20)
    done = subprocess.run(
        [sys.executable, "-m", "training.feedback_gain", "--corpus", str(corpus),
         "--probes", str(write_probes(tmp_path / "probes"))],
        cwd=PROJECT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "corpus only: probe ROC AUC" in done.stdout and "(8 ham, 8 spam)" in done.stdout
    assert "with the other half learnt: probe ROC AUC" in done.stdout
