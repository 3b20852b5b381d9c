"""The learned part of the verdict: a linear model on `gateway.features`, explained per message.

The artefact is a skops file (loading never executes code from the file: every type in it must
be one skops trusts by default or one listed in TRUSTED_TYPES). It holds the fitted vectorizer
and logistic regression, a Platt calibration of the decision value, and the versions it was
built with; a model made for other feature code or another scikit-learn is refused.
"""

from __future__ import annotations

import asyncio
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import skops.io
import sklearn
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression

from gateway import features as feature_code
from gateway.errors import ModelError
from gateway.model import CheckResult, OnError, Phase, Symbol, Transaction
from gateway.pipeline.check import Check

ARTEFACT_FORMAT = "mailgate-classifier/1"
# Types beyond skops' own trusted scikit-learn/numpy set; anything else in a file is refused.
TRUSTED_TYPES: tuple[str, ...] = ()


@dataclass(frozen=True)
class Contribution:
    feature: str
    weight: float  # signed push on the decision value: > 0 towards spam


@dataclass(frozen=True)
class ClassifierModel:
    vectorizer: DictVectorizer
    estimator: LogisticRegression
    platt_slope: float
    platt_intercept: float
    feature_version: int = feature_code.FEATURE_VERSION
    sklearn_version: str = sklearn.__version__
    metadata: dict[str, str] = field(default_factory=dict)  # training date, data, metrics

    def vectorize(self, rows: list[feature_code.Features]) -> sp.csr_matrix:
        matrix = sp.csr_matrix(self.vectorizer.transform(rows))
        # liblinear wants 32-bit indices; DictVectorizer may hand out 64-bit ones.
        matrix.indices = matrix.indices.astype(np.int32)
        matrix.indptr = matrix.indptr.astype(np.int32)
        return matrix

    def decision(self, rows: list[feature_code.Features]) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.asarray(self.estimator.decision_function(self.vectorize(rows)), dtype=float)

    def probability(self, decision: float) -> float:
        """Calibrated spam probability of one decision value (Platt scaling)."""
        z = self.platt_slope * decision + self.platt_intercept
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def explain(self, row: feature_code.Features, top: int) -> tuple[float, list[Contribution]]:
        """The decision value and the features that pushed it most, strongest first."""
        vector = self.vectorize([row])
        weights = self.estimator.coef_[0][vector.indices] * vector.data
        decision = float(weights.sum() + self.estimator.intercept_[0])
        names = self.vectorizer.feature_names_
        side = 1.0 if decision >= 0 else -1.0
        order = np.argsort(-side * weights)[:top]
        pushes = [Contribution(names[vector.indices[i]], float(weights[i])) for i in order]
        return decision, [c for c in pushes if c.weight * side > 0]

    def save(self, path: Path) -> None:
        skops.io.dump(
            {
                "format": ARTEFACT_FORMAT,
                "feature_version": self.feature_version,
                "sklearn_version": self.sklearn_version,
                "vectorizer": self.vectorizer,
                "estimator": self.estimator,
                "platt_slope": self.platt_slope,
                "platt_intercept": self.platt_intercept,
                "metadata": dict(self.metadata),
            },
            path,
        )

    @classmethod
    def load(cls, path: Path) -> ClassifierModel:
        """Load and verify an artefact; every problem becomes a ModelError saying what to do."""
        try:
            untrusted = skops.io.get_untrusted_types(file=path)
            refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
            if refused:
                raise ModelError(f"{path}: refusing model with untrusted types: {refused}")
            data = skops.io.load(path, trusted=list(TRUSTED_TYPES))
        except FileNotFoundError:
            raise ModelError(f"{path}: no such model file (run `make train`)") from None
        except (OSError, zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"{path}: not a readable classifier model: {exc}") from None
        return cls._from_dict(path, data)

    @classmethod
    def _from_dict(cls, path: Path, data: object) -> ClassifierModel:
        if not isinstance(data, dict) or data.get("format") != ARTEFACT_FORMAT:
            raise ModelError(f"{path}: not a {ARTEFACT_FORMAT} artefact")
        if data["feature_version"] != feature_code.FEATURE_VERSION:
            raise ModelError(
                f"{path}: model built for feature version {data['feature_version']}, this "
                f"gateway extracts version {feature_code.FEATURE_VERSION}: retrain (`make train`)"
            )
        if data["sklearn_version"] != sklearn.__version__:
            raise ModelError(
                f"{path}: model built with scikit-learn {data['sklearn_version']}, installed is "
                f"{sklearn.__version__}: retrain (`make train`) or install that version"
            )
        vectorizer, estimator = data["vectorizer"], data["estimator"]
        if not isinstance(vectorizer, DictVectorizer) or not isinstance(
            estimator, LogisticRegression
        ):
            raise ModelError(f"{path}: unexpected model components")
        return cls(
            vectorizer,
            estimator,
            float(data["platt_slope"]),
            float(data["platt_intercept"]),
            int(data["feature_version"]),
            str(data["sklearn_version"]),
            {str(k): str(v) for k, v in dict(data["metadata"]).items()},
        )


class ClassifierCheck(Check):
    name = "classifier"
    phase = Phase.DATA
    symbols = frozenset({"ML_SPAM", "ML_HAM"})

    def __init__(
        self,
        model: ClassifierModel,
        spam_threshold: float = 0.5,
        ham_threshold: float = 0.2,
        explain_features: int = 5,
        timeout_s: float = 10.0,
        on_error: OnError = OnError.IGNORE,
    ) -> None:
        super().__init__(timeout_s, on_error)
        self.model = model
        self.spam_threshold = spam_threshold
        self.ham_threshold = ham_threshold
        self.explain_features = explain_features

    @classmethod
    def from_file(cls, path: Path, **settings: Any) -> ClassifierCheck:
        return cls(ClassifierModel.load(path), **settings)

    async def run(self, tx: Transaction) -> CheckResult:
        # Parsing a large message takes milliseconds: keep the event loop free meanwhile.
        return await asyncio.to_thread(self.classify, tx.raw)

    def classify(self, raw: bytes) -> CheckResult:
        decision, pushes = self.model.explain(feature_code.extract(raw), self.explain_features)
        probability = self.model.probability(decision)
        reason = f"p={probability:.3f} by " + " ".join(
            f"{c.feature}({c.weight:+.2f})" for c in pushes
        )
        if probability >= self.spam_threshold:
            return self.result(Symbol("ML_SPAM", reason, probability))
        if probability <= self.ham_threshold:
            return self.result(Symbol("ML_HAM", reason, 1.0 - probability))
        return self.result()
