"""How much an organisation's own mail helps: `python -m training.feedback_gain --corpus DIR...`.

The probes (`training/probes/`, today's mail) are split in two halves, stratified by label;
the model is fitted on the corpus plus one half, as `make train` does with messages added by
`gateway learn`, and scores the other half; then the halves swap. The ROC AUC over all probes
scored that way is set against the corpus-only model's, for several random halvings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from gateway.features import Features, extract
from training.card import PROBES_DIR
from training.evaluate import FloatArray, IntArray
from training.fit import FeatureTable, fit_linear
from training.readers import HAM, SPAM
from training.run import Sources, _read
from training.weights import sample_weights

HALVINGS = 3


def probe_set(directory: Path = PROBES_DIR) -> tuple[list[Features], IntArray]:
    paths = sorted(directory.glob("*/*.eml"))
    labels = np.array([SPAM if p.parent.name == "spam" else HAM for p in paths], dtype=np.int64)
    return [extract(p.read_bytes()) for p in paths], labels


def scores_learning_other_half(
    rows: list[Features],
    labels: IntArray,
    row_weights: FloatArray,
    probes: list[Features],
    probe_labels: IntArray,
    halves: IntArray,
) -> FloatArray:
    """Each probe's decision value by a model fitted on `rows` (weighted as `make train` does)
    and the other half's probes, learnt as feedback is: at full weight."""
    scores = np.zeros(len(probes))
    for half in (0, 1):
        learnt = np.flatnonzero(halves != half)
        scored = np.flatnonzero(halves == half)
        table = FeatureTable.of(
            [*rows, *(probes[i] for i in learnt)],
            np.concatenate([row_weights, np.ones(len(learnt))]),
        )
        model = fit_linear(table, np.concatenate([labels, probe_labels[learnt]]), calibrate=False)
        scores[scored] = model.decision([probes[i] for i in scored])
    return scores


def random_halves(labels: IntArray, rng: np.random.Generator) -> IntArray:
    halves = np.zeros(len(labels), dtype=np.int64)
    for label in (HAM, SPAM):
        members = rng.permutation(np.flatnonzero(labels == label))
        halves[members[: len(members) // 2]] = 1
    return halves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.feedback_gain", description=__doc__)
    parser.add_argument("--corpus", type=Path, nargs="+", action="extend", required=True)
    parser.add_argument("--probes", type=Path, default=PROBES_DIR)
    args = parser.parse_args(argv)
    examples = _read(Sources(args.corpus, None))
    labels = np.array([e.label for e in examples], dtype=np.int64)
    rows = [extract(e.raw) for e in examples]
    row_weights = sample_weights(examples)
    probes, probe_labels = probe_set(args.probes)
    if min(np.bincount(probe_labels, minlength=2)) < 2:
        parser.error(f"{args.probes}: need at least 2 ham and 2 spam probes")
    corpus_only = fit_linear(FeatureTable.of(rows, row_weights), labels, calibrate=False)
    auc = roc_auc_score(probe_labels, corpus_only.decision(probes))
    counts = f"{int((probe_labels == HAM).sum())} ham, {int((probe_labels == SPAM).sum())} spam"
    print(f"corpus only: probe ROC AUC {auc:.3f} ({counts})")
    rng = np.random.default_rng(0)
    gains = []
    for _ in range(HALVINGS):
        halves = random_halves(probe_labels, rng)
        scores = scores_learning_other_half(rows, labels, row_weights, probes, probe_labels, halves)
        gains.append(roc_auc_score(probe_labels, scores))
    print(
        f"with the other half learnt: probe ROC AUC {np.mean(gains):.3f} "
        f"(halvings: {', '.join(f'{g:.3f}' for g in gains)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
