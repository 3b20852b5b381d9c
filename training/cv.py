"""Model selection without the test split: `python -m training.cv --corpus DIR... [--c C...]
[--list-share S...]` (the list-mail weighting of `training/weights.py`).

Cross-validates on the training portion (80%) of the benchmark split only: stratified 5-fold,
out-of-fold decision values pooled, then AUC and spam recall at 0.1% / 1% FP over those
~3,350 ham (about 3 allowed at 0.1%). Several fold seeds show how much the figure moves.
The 20% test part is never read here: it is for the one final measurement `make train` reports.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from gateway.features import extract
from training.evaluate import Metrics, evaluate
from training.fit import (
    INVERSE_REGULARISATION,
    FeatureTable,
    cross_validated_scores,
    stratified_split,
)
from training.readers import Example
from training.run import Sources, _read
from training.weights import LIST_MAIL_SHARE, sample_weights, share_argument

FOLD_SEEDS = (0, 1, 2)


def cv_metrics(
    examples: list[Example],
    rows: list[dict[str, float]],
    labels: np.ndarray,
    list_share: float,
    c: float,
    seeds: tuple[int, ...],
) -> list[Metrics]:
    train, _ = stratified_split(labels)  # the test part is dropped here, unseen
    row_weights = sample_weights([examples[i] for i in train], list_share)
    subset = FeatureTable.of([rows[i] for i in train], row_weights)
    subset_labels = labels[train]
    return [
        evaluate(subset_labels, cross_validated_scores(subset, subset_labels, seed, c))
        for seed in seeds
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.cv", description=__doc__)
    parser.add_argument("--corpus", type=Path, nargs="+", action="extend", required=True)
    parser.add_argument("--c", type=float, nargs="+", default=[INVERSE_REGULARISATION])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(FOLD_SEEDS))
    parser.add_argument(
        "--list-share",
        type=share_argument,
        nargs="+",
        default=[LIST_MAIL_SHARE],
        help="share of each label's weight that list mail is brought to (1: full weight)",
    )
    args = parser.parse_args(argv)
    examples = _read(Sources(args.corpus, None))
    labels = np.array([e.label for e in examples], dtype=np.int64)
    rows = [extract(e.raw) for e in examples]
    for share, c in itertools.product(args.list_share, args.c):
        results = cv_metrics(examples, rows, labels, share, c, tuple(args.seeds))
        recalls = [m.recall_at(0.001) for m in results]
        print(
            f"list share {share:g}, C={c:g}: AUC {np.mean([m.auc for m in results]):.5f}, "
            f"recall at 0.1% FP {np.mean(recalls):.1%} "
            f"(fold seeds: {', '.join(f'{r:.1%}' for r in recalls)}; "
            f"{results[0].operating[0].fp_allowed} of {results[0].n_ham} ham allowed), "
            f"at 1% FP {np.mean([m.recall_at(0.01) for m in results]):.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
