"""Held-out evaluation: ROC AUC and spam recall at a fixed false-positive budget, ROC plot."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]
FP_BUDGETS = (0.001, 0.01)  # 0.1% and 1% of the held-out ham


@dataclass(frozen=True)
class Operating:
    fp_budget: float
    fp_allowed: int  # ham messages that may score above the threshold
    threshold: float  # decision value: spam when strictly above
    recall: float


@dataclass(frozen=True)
class Metrics:
    n_ham: int
    n_spam: int
    auc: float
    operating: tuple[Operating, ...]

    def recall_at(self, fp_budget: float) -> float:
        return next(o.recall for o in self.operating if o.fp_budget == fp_budget)


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one split, with the raw scores for the ROC plot."""

    name: str
    description: str
    metrics: Metrics
    labels: IntArray
    scores: FloatArray


def evaluate(labels: IntArray, scores: FloatArray) -> Metrics:
    ham = np.sort(scores[labels == 0])[::-1]
    spam = scores[labels == 1]
    operating = []
    for budget in FP_BUDGETS:
        allowed = math.floor(budget * len(ham) + 1e-9)
        threshold = _threshold(ham, allowed)
        operating.append(Operating(budget, allowed, threshold, float((spam > threshold).mean())))
    return Metrics(len(ham), len(spam), float(roc_auc_score(labels, scores)), tuple(operating))


def recall_allowing(labels: IntArray, scores: FloatArray, ham_allowed: int) -> float:
    """Share of spam scored above all but the `ham_allowed` highest-scoring ham."""
    threshold = _threshold(np.sort(scores[labels == 0])[::-1], ham_allowed)
    return float((scores[labels == 1] > threshold).mean())


def _threshold(ham_descending: FloatArray, allowed: int) -> float:
    """The decision value that the `allowed` highest-scoring ham are above."""
    return float(ham_descending[allowed]) if allowed < len(ham_descending) else -math.inf


def plot_roc(curves: dict[str, tuple[IntArray, FloatArray]], path: Path) -> None:
    """ROC curves (log-scaled FP axis: the low-FP end is what matters for mail) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    # A log axis cannot show a rate of 0: no ham flagged is drawn at the left edge, left of
    # the smallest budget and of the smallest rate any curve can measure (one ham).
    edge = min([*FP_BUDGETS, *(0.5 / max(1, int((lab == 0).sum())) for lab, _ in curves.values())])
    for name, (labels, scores) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        auc = roc_auc_score(labels, scores)
        axes.plot(np.where(fpr > 0, fpr, edge / 2), tpr, label=f"{name} (AUC {auc:.4f})")
    for budget in FP_BUDGETS:
        axes.axvline(budget, color="grey", linestyle=":", linewidth=1)
        axes.annotate(f" {budget:.1%} FP", (budget, 0.5), color="grey", fontsize=8, rotation=90)
    axes.set_xscale("log")
    axes.set_xlim(left=edge / 4)
    axes.set_xlabel("false-positive rate (ham flagged), log scale; 0 at the left edge")
    axes.set_ylabel("spam recall")
    axes.set_title("Classifier ROC on held-out mail")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
