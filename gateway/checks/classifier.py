"""The learned part of the verdict: a linear model on `gateway.features`, explained per message.

The artefact is a skops file holding only plain data: the feature names, their weights, the
intercept, a Platt calibration of the decision value, and the versions it was built with.
Loading never executes code from the file (any type outside skops' trusted set and
TRUSTED_TYPES is refused), and a model made for other feature code or another scikit-learn
is refused. Scoring is a dictionary lookup per named feature and one binary search for all
the character 4-grams of a message: no scikit-learn in the gateway process (skops, which
needs it, runs in a short-lived child while loading).
"""

from __future__ import annotations

import functools
import json
import math
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import Message
from importlib.metadata import version
from itertools import islice, repeat
from pathlib import Path
from typing import Any

import numpy as np

from gateway import features as feature_code
from gateway.checks.classifier_tiers import Tiers, configured_tiers
from gateway.config import ClassifierCheckConfig
from gateway.errors import ModelError
from gateway.model import CheckResult, OnError, Phase, Symbol, Transaction
from gateway.pipeline.check import INLINE_MAX_BYTES, Check
from gateway.threads import in_thread

ARTEFACT_FORMAT = "mailgate-classifier/3"
# Types beyond skops' own trusted set (numpy arrays, builtins); anything else is refused.
TRUSTED_TYPES: tuple[str, ...] = ()
# The library that fitted the weights; read from metadata so scoring need not import it.
SKLEARN_VERSION = version("scikit-learn")
LOAD_TIMEOUT_S = 60.0
CHAR_GRAMS_NAMED = 3  # an explanation names the strongest few 4-grams of their sum
FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


@dataclass(frozen=True)
class Contribution:
    feature: str
    weight: float  # signed push on the decision value: > 0 towards spam


@dataclass(frozen=True)
class ClassifierModel:
    feature_names: tuple[str, ...]
    weights: FloatArray
    intercept: float
    platt_slope: float
    platt_intercept: float
    feature_version: int = feature_code.FEATURE_VERSION
    sklearn_version: str = SKLEARN_VERSION
    metadata: dict[str, str] = field(default_factory=dict)  # training date, data, metrics
    # The share of `intercept` that the 4-gram model brought (training/fit.py): explanations
    # show the 4-grams' push relative to it, as the other features' pushes are to the rest.
    char_gram_intercept: float = 0.0
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    _is_char_gram: BoolArray = field(init=False, repr=False, compare=False)
    # The model's 4-grams as `gram_key` numbers, sorted, and their columns: a message's grams
    # are found by one binary search over all of them, not a lookup each.
    _gram_keys: np.ndarray[Any, np.dtype[np.uint64]] = field(init=False, repr=False, compare=False)
    _gram_columns: IntArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {name: i for i, name in enumerate(self.feature_names)}
        object.__setattr__(self, "_index", index)
        prefix = feature_code.CHAR_GRAM_PREFIX
        grams = np.array([name.startswith(prefix) for name in self.feature_names], dtype=bool)
        object.__setattr__(self, "_is_char_gram", grams)
        columns = np.flatnonzero(grams)
        keys = np.array(
            [feature_code.gram_key(self.feature_names[i][len(prefix) :]) for i in columns],
            dtype=np.uint64,
        )
        # Only names that extraction can produce: a longer one, or one with a character beyond
        # 16 bits (a surrogate pair joins into one on the artefact's round trip), would take
        # the key of another gram, which the named path would never match.
        canonical = [
            prefix + text == self.feature_names[i]
            for i, text in zip(columns, feature_code.gram_texts(keys), strict=True)
        ]
        columns, keys = columns[canonical], keys[canonical]
        order = np.argsort(keys, kind="stable")
        object.__setattr__(self, "_gram_keys", keys[order])
        object.__setattr__(self, "_gram_columns", columns[order])

    def _pushes(self, row: feature_code.Features) -> tuple[list[str], IntArray, FloatArray]:
        """The names of `row`, their columns (-1: unknown to the model) and their signed pushes
        on the decision value (0 for the unknown). Lookups run in C: a message has hundreds of
        features besides its 4-grams."""
        names = list(row)
        columns = np.fromiter(map(self._index.get, names, repeat(-1)), np.int64, len(names))
        values = np.fromiter(row.values(), np.float64, len(names))
        return names, columns, np.where(columns >= 0, self.weights[columns] * values, 0.0)

    def _gram_pushes(self, grams: feature_code.CharGrams) -> FloatArray:
        """The signed push of each of `grams` (0 for those the model does not know)."""
        if not len(self._gram_keys):
            return np.zeros(len(grams.keys))
        at = np.minimum(np.searchsorted(self._gram_keys, grams.keys), len(self._gram_keys) - 1)
        known = self._gram_keys[at] == grams.keys
        return np.where(known, self.weights[self._gram_columns[at]] * grams.weights, 0.0)

    def known_words(self, row: feature_code.Features, stop_at: int | None = None) -> int:
        """How many of the body's distinct words the model knows (trained artefacts keep only
        features with a weight); counting stops at `stop_at`: a check only asks whether there
        are that many, and counting them all cost 4% of scoring time."""
        prefix = feature_code.BODY_WORD_PREFIX
        known = (name for name in row if name.startswith(prefix) and name in self._index)
        return sum(1 for _ in islice(known, stop_at))

    def decision(self, rows: Sequence[feature_code.Features]) -> FloatArray:
        """Decision values of rows named as `extract` gives them, to the bit as `explain`."""
        return np.array([self.explain(row, 0)[0] for row in rows])

    def probability(self, decision: float) -> float:
        """Calibrated spam probability of one decision value (Platt scaling)."""
        z = self.platt_slope * decision + self.platt_intercept
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def explain(
        self,
        row: feature_code.Features,
        top: int,
        grams: feature_code.CharGrams = feature_code.NO_CHAR_GRAMS,
    ) -> tuple[float, list[Contribution]]:
        """The decision value and the features that pushed it most its way, strongest first.
        `grams`: the message's 4-grams as `extract_split` keeps them apart from `row`.
        The character 4-grams each weigh little but together much: they are one entry, named
        after its strongest grams, e.g. `c:[' cli' 'ick ' 'ree!']`."""
        names, columns, pushes = self._pushes(row)
        known = columns >= 0
        in_row = known & self._is_char_gram[columns]
        row_grams = np.flatnonzero(in_row)
        gram_pushes = np.concatenate((pushes[row_grams], self._gram_pushes(grams)))
        # Summed without the zeros of unknown features, which sit in another array when the
        # grams come apart: both ways then add the same numbers in the same order.
        gram_known = gram_pushes != 0
        gram_total = float(gram_pushes[gram_known].sum())
        decision = self.intercept + float(pushes[known & ~in_row].sum()) + gram_total
        side = 1.0 if self.probability(decision) >= 0.5 else -1.0  # the way the verdict went
        candidates = [
            Contribution(names[i], float(pushes[i]))
            for i in _strongest(known & ~in_row, pushes, side, top)
        ]
        if top and gram_known.any():
            prefix = len(feature_code.CHAR_GRAM_PREFIX)
            strongest = _strongest(gram_known, gram_pushes, side, CHAR_GRAMS_NAMED)
            # The first pushes are of the grams named in `row` (if any), the rest of `grams`.
            in_keys = strongest[strongest >= len(row_grams)] - len(row_grams)
            decoded = iter(feature_code.gram_texts(grams.keys[in_keys]))
            named = " ".join(
                repr(names[row_grams[i]][prefix:] if i < len(row_grams) else next(decoded))
                for i in strongest
            )
            total = self.char_gram_intercept + gram_total
            candidates.append(Contribution(f"{feature_code.CHAR_GRAM_PREFIX}[{named}]", total))
        candidates.sort(key=lambda c: -side * c.weight)
        return decision, [c for c in candidates[:top] if c.weight * side > 0]

    def save(self, path: Path) -> None:
        import skops.io  # imports all of scikit-learn (~120 MiB): only when a model is used

        skops.io.dump(
            {
                "format": ARTEFACT_FORMAT,
                "feature_version": self.feature_version,
                "sklearn_version": self.sklearn_version,
                # One string: skops stores a list of 20k strings far less compactly.
                "feature_names": "\n".join(self.feature_names),
                "weights": np.asarray(self.weights, dtype=np.float64),
                "intercept": self.intercept,
                "platt_slope": self.platt_slope,
                "platt_intercept": self.platt_intercept,
                "char_gram_intercept": self.char_gram_intercept,
                "metadata": dict(self.metadata),
            },
            path,
        )

    @classmethod
    def load(cls, path: Path) -> ClassifierModel:
        """Load and verify an artefact; every problem becomes a ModelError saying what to do.
        An unchanged file is read once per process (checks are rebuilt on SIGHUP)."""
        if not path.is_file():
            raise ModelError(f"{path}: no such model file (run `make train`)")
        stat = path.stat()
        return _load_once(path.resolve(), stat.st_mtime_ns, stat.st_size)

    @classmethod
    def read_verified(cls, path: Path) -> ClassifierModel:
        """skops imports all of scikit-learn (~120 MiB resident), which scoring never uses; so
        the file is read and checked by a short-lived child process (`read_artefact`), and
        only plain data (names, weights, numbers) comes back into this process."""
        command = [sys.executable, "-m", "gateway.checks.classifier", str(path)]
        try:
            child = subprocess.run(
                command, capture_output=True, timeout=LOAD_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise ModelError(f"{path}: loading took more than {LOAD_TIMEOUT_S}s") from None
        if child.returncode != 0:
            lines = child.stderr.decode(errors="replace").strip().splitlines()
            raise ModelError(lines[-1] if lines else f"{path}: loader exited {child.returncode}")
        try:
            return cls.from_data(path, json.loads(child.stdout))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: incomplete classifier model ({exc!r})") from None

    @classmethod
    def from_data(cls, path: Path, data: object) -> ClassifierModel:
        """A model from the artefact's data (see `read_artefact`), if it fits this code."""
        if not isinstance(data, dict) or data.get("format") != ARTEFACT_FORMAT:
            raise ModelError(f"{path}: not a {ARTEFACT_FORMAT} artefact")
        if data["feature_version"] != feature_code.FEATURE_VERSION:
            raise ModelError(
                f"{path}: model built for feature version {data['feature_version']}, this "
                f"gateway extracts version {feature_code.FEATURE_VERSION}: retrain (`make train`)"
            )
        if data["sklearn_version"] != SKLEARN_VERSION:
            raise ModelError(
                f"{path}: model built with scikit-learn {data['sklearn_version']}, installed is "
                f"{SKLEARN_VERSION}: retrain (`make train`) or install that version"
            )
        names = tuple(str(data["feature_names"]).split("\n"))
        if len(set(names)) != len(names):
            raise ModelError(f"{path}: a feature name occurs twice: not an artefact we wrote")
        weights = np.asarray(data["weights"], dtype=np.float64)
        if weights.shape != (len(names),):
            raise ModelError(f"{path}: {len(names)} feature names but {weights.size} weights")
        numbers = [float(data[key]) for key in _NUMBERS]
        if not (np.isfinite(weights).all() and all(map(math.isfinite, numbers))):
            # NaN or infinity would make every verdict the same, silently.
            raise ModelError(f"{path}: a weight or calibration is not a finite number")
        intercept, slope, platt_intercept, char_gram_intercept = numbers
        return cls(
            names,
            weights,
            intercept,
            slope,
            platt_intercept,
            int(data["feature_version"]),
            str(data["sklearn_version"]),
            {str(k): str(v) for k, v in dict(data["metadata"]).items()},
            char_gram_intercept,
        )


_NUMBERS = ("intercept", "platt_slope", "platt_intercept", "char_gram_intercept")


def _strongest(
    among: BoolArray, pushes: FloatArray, side: float, count: int
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Positions of the `count` pushes `among` the selected ones furthest towards `side`."""
    selected = np.flatnonzero(among)
    return selected[np.argsort(-side * pushes[selected])[:count]]


@functools.lru_cache(maxsize=4)
def _load_once(path: Path, mtime_ns: int, size: int) -> ClassifierModel:
    """`ClassifierModel.read_verified`, remembered per file version (path, mtime, size)."""
    return ClassifierModel.read_verified(path)


class ClassifierCheck(Check):
    name = "classifier"
    phase = Phase.DATA
    symbols = frozenset(
        {"ML_SPAM", "ML_SPAM_HIGH", "ML_HAM", "ML_HAM_HIGH", "ML_UNSURE", "ML_NOT_JUDGED"}
    )

    def __init__(
        self,
        model: ClassifierModel,
        spam_threshold: float = ClassifierCheckConfig.spam_threshold,
        ham_threshold: float = ClassifierCheckConfig.ham_threshold,
        explain_features: int = ClassifierCheckConfig.explain_features,
        min_known_words: int = ClassifierCheckConfig.min_known_words,
        timeout_s: float = ClassifierCheckConfig.timeout_s,
        on_error: OnError = ClassifierCheckConfig.on_error,
        tiers: Tiers | None = None,
    ) -> None:
        if min_known_words < 0:
            raise ValueError(f"min_known_words {min_known_words}: must be 0 or more")
        super().__init__(timeout_s, on_error)
        self.model = model
        self.spam_threshold = spam_threshold
        self.ham_threshold = ham_threshold
        self.explain_features = explain_features
        self.min_known_words = min_known_words
        # Strong tiers (classifier_tiers): none unless given, as for the shipped model.
        self.tiers = tiers or configured_tiers(model.metadata, "off", 0.0, 0.0)

    @classmethod
    def from_file(
        cls,
        path: Path,
        tiers: str = ClassifierCheckConfig.tiers,
        spam_high_threshold: float = ClassifierCheckConfig.spam_high_threshold,
        ham_high_threshold: float = ClassifierCheckConfig.ham_high_threshold,
        **settings: Any,
    ) -> ClassifierCheck:
        model = ClassifierModel.load(path)
        chosen = configured_tiers(model.metadata, tiers, spam_high_threshold, ham_high_threshold)
        return cls(model, tiers=chosen, **settings)

    async def run(self, tx: Transaction) -> CheckResult:
        # Parsing a large message takes milliseconds: keep the event loop free meanwhile. A
        # small one costs less than the thread hop (which also holds the GIL to hand over).
        if len(tx.raw) <= INLINE_MAX_BYTES:
            return self.classify(tx.raw, tx.message)
        return await in_thread(self.classify, tx.raw, tx.message)

    def classify(self, raw: bytes, message: Message | None = None) -> CheckResult:
        features, grams = feature_code.extract_split(raw, message)
        decision, pushes = self.model.explain(features, self.explain_features, grams)
        probability = self.model.probability(decision)
        strongest = " ".join(f"{c.feature}({c.weight:+.2f})" for c in pushes)
        reason = f"p={probability:.3f} by {strongest}"
        known = self.model.known_words(features, stop_at=self.min_known_words)
        if known < self.min_known_words and not feature_code.has_disguised_word(features):
            # Encrypted, image-only, empty, or in a script the training mail never had: with
            # no words to go on the model judges by layout alone, and its training mail's
            # layout (2002 lists: plain text, links in every footer) put such mail anywhere
            # from p 0.04 to 0.93, ham and spam alike. Look-alike letters are no excuse.
            return self.result(
                Symbol(
                    "ML_NOT_JUDGED",
                    f"{known} body word(s) known to the model, fewer than min_known_words "
                    f"{self.min_known_words}; unscored, the model alone: {reason}",
                )
            )
        above, below = self.tiers.spam_high_above, self.tiers.ham_high_below
        # A strong tier's multiplier is 1: the measured point decides, not the last digits.
        if probability >= self.spam_threshold:
            if above is not None and probability > above:
                tier = f"p={probability:.3f} > {above:.3f}, {self.tiers.why}; by {strongest}"
                return self.result(Symbol("ML_SPAM_HIGH", tier))
            return self.result(Symbol("ML_SPAM", reason, probability))
        if probability <= self.ham_threshold:
            if below is not None and probability < below:
                tier = f"p={probability:.3f} < {below:.3f}, {self.tiers.why}; by {strongest}"
                return self.result(Symbol("ML_HAM_HIGH", tier))
            return self.result(Symbol("ML_HAM", reason, 1.0 - probability))
        # Scored 0 as shipped: the verdict, log and headers still show what the model thought.
        return self.result(Symbol("ML_UNSURE", reason))


def read_artefact(path: Path) -> dict[str, Any]:
    """The artefact's content as JSON-ready data; refuses any type outside the trusted set."""
    import skops.io  # imports all of scikit-learn: the reason this runs in a child process

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
    if not isinstance(data, dict):
        raise ModelError(f"{path}: not a {ARTEFACT_FORMAT} artefact")
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in data.items()}


def _load_in_child(argv: list[str]) -> int:
    """`python -m gateway.checks.classifier PATH`: print the artefact's data as JSON."""
    try:
        data = read_artefact(Path(argv[0]))
        sys.stdout.write(json.dumps(data))
    except ModelError as exc:
        print(exc, file=sys.stderr)
        return 1
    except TypeError:  # a trusted but unexpected type that is not plain data
        print(f"{argv[0]}: not a {ARTEFACT_FORMAT} artefact", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_load_in_child(sys.argv[1:]))
