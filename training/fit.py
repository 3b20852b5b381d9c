"""Fit the classifier: vocabulary, logistic regression, Platt calibration on out-of-fold scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split

from gateway.checks.classifier import ClassifierModel
from gateway.features import Features
from training.evaluate import FloatArray, IntArray

SEED = 42
INVERSE_REGULARISATION = 30.0  # chosen on the stratified split; weaker fits lose low-FP recall
MIN_DOCUMENTS = int(__import__("os").environ.get("MD","2"))  # a feature seen in one message only is noise and bloats the artefact
CALIBRATION_FOLDS = 5


def fit_model(rows: Sequence[Features], labels: IntArray, metadata: dict[str, str]) -> ClassifierModel:
    vectorizer = DictVectorizer()
    counts = vectorizer.fit_transform(rows)
    documents = np.asarray((counts != 0).sum(axis=0)).ravel()
    vectorizer.restrict(documents >= MIN_DOCUMENTS)
    unfitted = ClassifierModel(vectorizer, _estimator(), 1.0, 0.0, metadata=metadata)
    matrix = unfitted.vectorize(list(rows))
    estimator = _estimator().fit(matrix, labels)
    slope, intercept = _platt(matrix, labels)
    return ClassifierModel(vectorizer, estimator, slope, intercept, metadata=metadata)


def _estimator() -> LogisticRegression:
    return LogisticRegression(C=INVERSE_REGULARISATION, solver="liblinear", max_iter=1000, class_weight=__import__("os").environ.get("CW") or None)


def _platt(matrix: object, labels: IntArray) -> tuple[float, float]:
    """Map decision values to probabilities, fitted on scores the model did not train on."""
    folds = StratifiedKFold(min(CALIBRATION_FOLDS, int(np.bincount(labels).min())), shuffle=True,
                            random_state=SEED)
    out_of_fold = np.zeros(len(labels))
    for train, test in folds.split(np.zeros(len(labels)), labels):
        fold = _estimator().fit(matrix[train], labels[train])  # type: ignore[index]
        out_of_fold[test] = fold.decision_function(matrix[test])  # type: ignore[index]
    platt = LogisticRegression(C=1e4).fit(out_of_fold.reshape(-1, 1), labels)
    return float(platt.coef_[0][0]), float(platt.intercept_[0])


def stratified_split(labels: IntArray) -> tuple[IntArray, IntArray]:
    """The benchmark split: 80/20, stratified by label, seed 42."""
    train, test = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=SEED
    )
    return np.sort(train), np.sort(test)


def time_split(dates: Sequence[float | None]) -> tuple[IntArray, IntArray]:
    """Train on the oldest 80% of dated mail (and all undated mail), test on the newest 20%."""
    dated = sorted((d, i) for i, d in enumerate(dates) if d is not None)
    cut = int(len(dated) * 0.8)
    test = np.array(sorted(i for _, i in dated[cut:]), dtype=np.int64)
    train = np.setdiff1d(np.arange(len(dates)), test)
    return train, test


def scores_of(model: ClassifierModel, rows: Sequence[Features]) -> FloatArray:
    return model.decision(list(rows))
