"""One training run: read, extract, evaluate on held-out splits, guard, write artefact and card."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gateway.checks import classifier_tiers
from gateway.checks.classifier import ClassifierCheck, ClassifierModel
from gateway.errors import ModelError
from gateway.features import FEATURE_VERSION, Features, extract
from training.card import Performance, write_card
from training.evaluate import Evaluation, FloatArray, IntArray, evaluate, plot_roc
from training.fit import (
    SECOND_SEED,
    FeatureTable,
    cross_validated_scores,
    fit_linear,
    fit_model_scored,
    stratified_split,
    time_split,
)
from training.readers import HAM, SPAM, Example, merge, read_labelled_dir
from training.tiers import TierClaim, claim_of, describe_claim
from training.weights import LIST_MAIL_SHARE, describe, sample_weights

MODEL_FILE = "classifier.skops"
CARD_FILE = "MODEL_CARD.md"
ROC_FILE = "roc.png"
PREVIOUS_SUFFIX = ".previous"
PLOT_LABELS = {
    "cv": "CV inside the 80% (selection)",
    "stratified": "seed 42 split (benchmark)",
    "seed7": "seed 7 split",
    "time": "time-ordered split",
    "artefact": "this artefact's held-out mail",
}
FEW_MESSAGES = 200  # of either label: fewer gets a warning, the figures rest on a handful
SHRINK_WARNED = 2  # fewer than half the messages of the current model: a warning
AUC_TOLERANCE = 1e-4  # re-fitting the same data must not count as "worse"
SCORING_PASSES = 3


class TrainingRefused(Exception):
    """The run cannot or must not produce a model (no data, or worse than the current one)."""


@dataclass(frozen=True)
class Sources:
    corpora: list[Path]  # the site's own labelled mail
    feedback: Path | None
    public_corpora: list[Path] = field(default_factory=list)  # e.g. the SpamAssassin corpus


def run(sources: Sources, out_dir: Path, force: bool, list_share: float = LIST_MAIL_SHARE) -> Path:
    """Train, evaluate and write the model to `out_dir`; returns the artefact path.
    `list_share`: see training/weights.py."""
    started = time.perf_counter()
    examples = _read(sources)
    labels = np.array([e.label for e in examples], dtype=np.int64)
    n_ham, n_spam = np.bincount(labels, minlength=2)
    if min(n_ham, n_spam) < 5:
        raise TrainingRefused(
            f"need at least 5 ham and 5 spam messages to train and evaluate (read {n_ham} ham, "
            f"{n_spam} spam)"
        )
    if min(n_ham, n_spam) < FEW_MESSAGES:
        print(
            f"warning: {n_ham} ham and {n_spam} spam: the held-out figures rest on a handful of "
            f"messages and the model will be weak; a useful one needs {FEW_MESSAGES} or more "
            "of each",
            file=sys.stderr,
        )
    rows = [extract(e.raw) for e in tqdm(examples, desc="features", unit="msg", file=sys.stderr)]
    dates = [e.date.timestamp() if e.date else None for e in examples]
    holdout = _stable_holdout(examples)
    benchmark = stratified_split(labels)
    splits = {
        "stratified": ("stratified 80/20, seed 42 (benchmark)", benchmark),
        "seed7": (
            f"stratified 80/20, seed {SECOND_SEED} (variance check)",
            stratified_split(labels, SECOND_SEED),
        ),
        "time": ("time-ordered: oldest 80% train, newest 20% test", time_split(dates)),
        "artefact": ("the shipped artefact: 20% held out by message hash", holdout),
    }
    table = FeatureTable.of(rows)

    def training_part(train: IntArray) -> FeatureTable:
        """A split's training rows, weighted by what is in that split (training/weights.py);
        cross-validation folds inside it keep these weights."""
        return table.subset(train, sample_weights([examples[i] for i in train], list_share))

    artefact_train = [examples[i] for i in holdout[0]]
    weighting = describe(artefact_train, sample_weights(artefact_train, list_share), list_share)
    print(weighting, file=sys.stderr)
    evaluations: dict[str, Evaluation] = {}
    model: ClassifierModel | None = None
    out_of_fold = np.zeros(0)
    for name, (description, (train, test)) in tqdm(
        splits.items(), desc="fit+evaluate", unit="split", file=sys.stderr
    ):
        if len(set(labels[test])) < 2 or len(set(labels[train])) < 2:
            continue  # e.g. dated mail of one label only: nothing to measure
        # Only the artefact needs probabilities; the other splits are judged on ranking.
        if name == "artefact":
            fitted, out_of_fold = fit_model_scored(training_part(train), labels[train])
        else:
            fitted = fit_linear(training_part(train), labels[train], calibrate=False)
        scores = fitted.decision([rows[i] for i in test])
        evaluations[name] = Evaluation(
            name, description, evaluate(labels[test], scores), labels[test], scores
        )
        if name == "artefact":
            model = fitted
    if model is None:
        raise TrainingRefused(
            f"the held-out split lacks ham or spam ({n_ham} ham, {n_spam} spam read): add more "
            "messages"
        )
    if min(np.bincount(labels[benchmark[0]], minlength=2)) >= 2:
        evaluations = {
            "cv": _cross_validation(training_part(benchmark[0]), labels[benchmark[0]]),
            **evaluations,
        }
    held_out = [rows[i] for i in holdout[1]]
    for evaluation in evaluations.values():
        print(_summary(evaluation), file=sys.stderr)
    claim = _tier_claim(model, examples, holdout, out_of_fold, evaluations["artefact"])
    _guard(out_dir / MODEL_FILE, held_out, evaluations["artefact"], len(examples), force)
    _guard_evidence(claim, force)
    performance = Performance(
        time.perf_counter() - started,
        _scoring_rate(model, [examples[i] for i in holdout[1]]),
        SCORING_PASSES,
    )
    artefact = _write(out_dir, model, examples, weighting, evaluations, performance, claim)
    print(describe_claim(claim), file=sys.stderr)
    return artefact


def _tier_claim(
    model: ClassifierModel,
    examples: list[Example],
    holdout: tuple[IntArray, IntArray],
    out_of_fold: FloatArray,
    artefact: Evaluation,
) -> TierClaim:
    """What the model may claim on the site's own mail (not a public corpus): each of its
    messages scored by a model that never saw it, the training part by the calibration's
    fold models (`out_of_fold`), the held-out part by the artefact."""
    train, test = holdout
    unseen = [*zip(train, out_of_fold, strict=True), *zip(test, artefact.scores, strict=True)]
    own = [
        (examples[i].label, model.probability(float(d)))
        for i, d in unseen
        if not examples[i].public
    ]
    return claim_of(
        [p for label, p in own if label == HAM],
        [p for label, p in own if label == SPAM],
        own_messages=sum(not e.public for e in examples),
        public_messages=sum(e.public for e in examples),
        learnt_messages=sum(e.learnt for e in examples),
    )


def _guard_evidence(claim: TierClaim, force: bool) -> None:
    """A run on the site's own corpora with too few ham to measure where the model may
    quarantine alone is refused: its strong tier would be a guess."""
    own_corpus = claim.own_messages > claim.learnt_messages
    if own_corpus and claim.spam_high_above is None and not force:
        raise TrainingRefused(
            f"{claim.unseen_ham} unseen ham of your own mail, fewer than "
            f"{classifier_tiers.MIN_UNSEEN}: too few to measure where the model may quarantine "
            "on its own. Add mail, or --force to write a model that only adds ML_SPAM's score"
        )


def _cross_validation(portion: FeatureTable, labels: IntArray) -> Evaluation:
    """5-fold CV inside the benchmark's training portion: the figure model choices are made
    on (`python -m training.cv`), reported next to the test figures it never looked at."""
    scores = cross_validated_scores(portion, labels)
    return Evaluation(
        "cv",
        "5-fold CV inside the benchmark's 80% (pooled out-of-fold, fold seed 0; model selection)",
        evaluate(labels, scores),
        labels,
        scores,
    )


def _scoring_rate(model: ClassifierModel, examples: list[Example]) -> float:
    """Messages per CPU second through the check: parse, extract, score, explain; the best
    of SCORING_PASSES passes, as timeit does, since this machine's speed drifts."""
    check = ClassifierCheck(model)
    fastest = math.inf
    for _ in range(SCORING_PASSES):
        started = time.process_time()
        for example in examples:
            check.classify(example.raw)
        fastest = min(fastest, time.process_time() - started)
    return len(examples) / max(fastest, 1e-9)


def _read(sources: Sources) -> list[Example]:
    skipped: list[str] = []

    def note(path: Path, reason: str) -> None:
        skipped.append(f"{path}: {reason}")

    with tqdm(desc="read", unit="msg", file=sys.stderr) as progress:
        corpora = [
            *(
                read_labelled_dir(p, note, progress.update, public=True)
                for p in sources.public_corpora
            ),
            *(read_labelled_dir(p, note, progress.update) for p in sources.corpora),
        ]
    if sources.feedback is not None:
        corpora.append(_read_feedback(sources.feedback, note))
    conflicts: list[str] = []

    def conflict(kept: Example, dropped: Example) -> None:
        conflicts.append(f"{kept.origin} (kept) and {dropped.origin}")

    merged = merge(corpora, conflict)
    for line in skipped[:20]:
        print(f"skipped {line}", file=sys.stderr)
    if len(skipped) > 20:
        print(f"... and {len(skipped) - 20} more skipped", file=sys.stderr)
    if conflicts:
        print(
            f"{len(conflicts)} message(s) filed as both ham and spam, the later label kept: "
            + "; ".join(conflicts[:5])
            + (" ..." if len(conflicts) > 5 else ""),
            file=sys.stderr,
        )
    duplicates = sum(map(len, corpora)) - len(merged) - len(conflicts)
    if duplicates > 0:
        print(f"{duplicates} duplicate message(s) read once", file=sys.stderr)
    return merged


def _summary(evaluation: Evaluation) -> str:
    metrics = evaluation.metrics
    low = metrics.operating[0]
    return (
        f"{evaluation.description}: AUC {metrics.auc:.5f}, spam recall {low.recall:.1%} at "
        f"{low.fp_budget:.1%} FP ({metrics.n_ham} ham, {low.fp_allowed} allowed; "
        f"{metrics.n_spam} spam)"
    )


def _read_feedback(store: Path, note: Callable[[Path, str], None]) -> list[Example]:
    """The feedback store's messages, marked as learnt; a store not there yet is said, not an
    error (nothing learnt yet), so a wrong path cannot silently train without the feedback."""
    if not store.is_dir():
        print(f"feedback: {store} does not exist: nothing learnt is used", file=sys.stderr)
        return []
    learnt = [dataclasses.replace(e, learnt=True) for e in read_labelled_dir(store, note)]
    spam = sum(e.label == SPAM for e in learnt)
    print(
        f"feedback: {len(learnt)} message(s) from {store} ({len(learnt) - spam} ham, {spam} spam)",
        file=sys.stderr,
    )
    return learnt


def _stable_holdout(examples: list[Example]) -> tuple[IntArray, IntArray]:
    """Held out by content hash: the same message stays held out as the corpus grows, so the
    current model never trained on what it is compared on. Learnt messages are never held
    out: an admin's correction must reach the model that is shipped."""
    held = np.array([not e.learnt and hashlib.sha256(e.raw).digest()[0] % 5 == 0 for e in examples])
    return np.flatnonzero(~held), np.flatnonzero(held)


def _guard(
    current: Path, rows: list[Features], new: Evaluation, messages: int, force: bool
) -> None:
    if not current.exists():
        return
    try:
        old = ClassifierModel.load(current)
    except ModelError as exc:
        print(f"current model not comparable, replacing it: {exc}", file=sys.stderr)
        return
    # On a few held-out messages both models score perfectly: the comparison below cannot
    # tell a toy from the model it would replace, and a forgotten CORPUS= makes such a toy.
    # Said, not refused (the rule is "worse on the same held-out mail"); `_write` keeps the
    # replaced model.
    old_messages = int(old.metadata.get("messages", "0") or 0)
    if messages * SHRINK_WARNED < old_messages:
        print(
            f"warning: this run has {messages} messages, the current model was trained on "
            f"{old_messages}: is a corpus missing?",
            file=sys.stderr,
        )
    old_auc = evaluate(new.labels, old.decision(rows)).auc
    print(f"held-out AUC: current {old_auc:.5f}, new {new.metrics.auc:.5f}", file=sys.stderr)
    if new.metrics.auc < old_auc - AUC_TOLERANCE and not force:
        raise TrainingRefused(
            f"new model is worse on the same held-out mail (AUC {new.metrics.auc:.5f} < "
            f"{old_auc:.5f}); keeping {current} (use --force to replace it)"
        )


def _write(
    out_dir: Path,
    model: ClassifierModel,
    examples: list[Example],
    weighting: str,
    evaluations: dict[str, Evaluation],
    performance: Performance,
    claim: TierClaim,
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    artefact = evaluations["artefact"].metrics
    metadata = {
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "messages": str(len(examples)),
        "heldout_auc": f"{artefact.auc:.5f}",
        "feature_version": str(FEATURE_VERSION),
        "learnt_messages": str(sum(e.learnt for e in examples)),
        **claim.metadata(),
    }
    final = dataclasses.replace(model, metadata=metadata)
    target = out_dir / MODEL_FILE
    tmp = out_dir / f".{MODEL_FILE}.tmp"
    final.save(tmp)
    if target.exists():  # one step back stays possible: `mv classifier.skops.previous ...`
        previous = out_dir / f"{MODEL_FILE}{PREVIOUS_SUFFIX}"
        shutil.copy2(target, previous)
        print(f"the model it replaces is kept as {previous}", file=sys.stderr)
    os.replace(tmp, target)  # a running gateway or a crash never sees half a model
    plot_roc(
        {PLOT_LABELS.get(e.name, e.name): (e.labels, e.scores) for e in evaluations.values()},
        out_dir / ROC_FILE,
    )
    write_card(
        out_dir / CARD_FILE,
        final,
        examples,
        weighting,
        list(evaluations.values()),
        performance,
        ROC_FILE,
        claim,
    )
    return target
