"""The model card: what the model was trained on, with what, and how well it did held out."""

from __future__ import annotations

import platform
from datetime import datetime
from pathlib import Path

import numpy as np
import scipy
import sklearn
import skops

from gateway.checks.classifier import ClassifierModel
from gateway.features import FEATURE_VERSION
from training.evaluate import Evaluation
from training.readers import HAM, SPAM, Example


def write_card(
    path: Path,
    model: ClassifierModel,
    examples: list[Example],
    evaluations: list[Evaluation],
    roc_file: str,
) -> None:
    lines = [
        "# Spam classifier model card",
        "",
        f"- Trained: {model.metadata.get('trained_at', '?')}; artefact `classifier.skops` (skops).",
        "- Model: logistic regression on `gateway.features` (readable sparse features: MIME "
        "structure, encodings, URL domains and TLDs, sender relations, mailer family, subject "
        "and body words); probability by Platt scaling on out-of-fold decision values.",
        f"- Feature version {FEATURE_VERSION}; Python {platform.python_version()}, scikit-learn "
        f"{sklearn.__version__}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"skops {skops.__version__}. A model is refused when feature or scikit-learn "
        "version differ.",
        f"- Vocabulary: {len(model.vectorizer.feature_names_)} features (seen in >= 2 messages).",
        "",
        "## Data",
        "",
        "| label | messages | Date range (min .. max) | 5% .. 95% | no plausible Date |",
        "|---|---|---|---|---|",
        _data_row("ham", [e for e in examples if e.label == HAM]),
        _data_row("spam", [e for e in examples if e.label == SPAM]),
        "",
        "Not learnt from, because it would not carry over to an MX: Received lines, list and "
        "collector headers (List-*, Delivered-To, X-Keywords...), recipient addresses, the "
        "Date's year, a leading mbox `From ` line, and headers our gateway adds.",
        "",
        "## Held-out metrics",
        "",
        "Recall = share of held-out spam scored above the threshold that lets at most the "
        "given share of held-out ham through as spam (the number of ham that allows is shown).",
        "",
        "| split | test ham | test spam | ROC AUC | spam recall at 0.1% FP | at 1% FP |",
        "|---|---|---|---|---|---|",
        *(_metrics_row(e) for e in evaluations),
        "",
        f"![ROC curves]({roc_file})",
        "",
        "## Operating thresholds",
        "",
        *_thresholds(model, evaluations),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _data_row(label: str, examples: list[Example]) -> str:
    dates = sorted(e.date for e in examples if e.date is not None)
    undated = len(examples) - len(dates)
    if not dates:
        return f"| {label} | {len(examples)} | - | - | {undated} |"
    low, high = dates[int(0.05 * (len(dates) - 1))], dates[int(0.95 * (len(dates) - 1))]
    return (
        f"| {label} | {len(examples)} | {_day(dates[0])} .. {_day(dates[-1])} | "
        f"{_day(low)} .. {_day(high)} | {undated} |"
    )


def _day(date: datetime) -> str:
    return date.strftime("%Y-%m-%d")


def _metrics_row(evaluation: Evaluation) -> str:
    m = evaluation.metrics
    recalls = " | ".join(
        f"{o.recall:.1%} ({o.fp_allowed} ham allowed)" for o in m.operating
    )
    return f"| {evaluation.description} | {m.n_ham} | {m.n_spam} | {m.auc:.5f} | {recalls} |"


def _thresholds(model: ClassifierModel, evaluations: list[Evaluation]) -> list[str]:
    lines = [
        "The check emits `ML_SPAM` (multiplier = probability) at or above `spam_threshold` "
        "(default 0.5) and `ML_HAM` (multiplier = 1 - probability) at or below `ham_threshold` "
        "(default 0.2). Probabilities matching the false-positive budgets on the artefact's "
        "held-out mail:",
        "",
    ]
    artefact = next(e for e in evaluations if e.name == "artefact")
    for operating in artefact.metrics.operating:
        probability = model.probability(operating.threshold)
        lines.append(
            f"- {operating.fp_budget:.1%} FP: probability > {probability:.4f} "
            f"(spam recall {operating.recall:.1%})"
        )
    return lines
