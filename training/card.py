"""The model card: what the model was trained on, with what, and how well it did held out."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import scipy
import sklearn
import skops
from sklearn.metrics import roc_auc_score

from gateway.checks.classifier import ClassifierCheck, ClassifierModel, Contribution
from gateway.config import SHIPPED_RULES_DIR, ClassifierCheckConfig
from gateway.features import CHAR_GRAM_PREFIX, FEATURE_VERSION, extract
from gateway.pipeline.scoring import Policy, load_policy
from training.evaluate import Evaluation, recall_allowing
from training.fit import INVERSE_REGULARISATION
from training.readers import HAM, SPAM, Example
from training.tiers import TierClaim, describe_claim

PROBES_DIR = Path(__file__).parent / "probes"
PROBES_LISTED = 12  # of each label, the model's worst, named in the card
SYMBOLS = ("ML_SPAM", "ML_UNSURE", "ML_NOT_JUDGED", "ML_HAM")


@dataclass(frozen=True)
class Performance:
    training_s: float  # reading, features, all fits and evaluations of this run
    messages_per_cpu_s: float  # extract + score + explain, one thread
    scoring_passes: int  # the rate is the best of this many passes


def write_card(
    path: Path,
    model: ClassifierModel,
    examples: list[Example],
    weighting: str,
    evaluations: list[Evaluation],
    performance: Performance,
    roc_file: str,
    claim: TierClaim,
) -> None:
    probes = _score_probes(model)
    policy = load_policy(SHIPPED_RULES_DIR)  # the shipped scores the card's advice refers to
    artefact_auc = next(e for e in evaluations if e.name == "artefact").metrics.auc
    lines = [
        "# Spam classifier model card",
        "",
        f"- Trained: {model.metadata.get('trained_at', '?')}; artefact `classifier.skops` "
        "(skops), fitted on the 80% of the mail not held out by message hash, so the "
        "artefact's own metrics below are honest and a later retraining is compared on "
        "mail neither model saw.",
        "- Model: the sum of two logistic regressions (C fixed at "
        f"{INVERSE_REGULARISATION:g}, chosen by cross-validation inside the SpamAssassin public "
        "corpus benchmark's training portion, never on a test split; `python -m training.cv` "
        "re-checks it on other mail), which is one linear model: "
        "one on `gateway.features`' readable sparse features (MIME structure, charsets, URL "
        "domains and TLDs, sender relations, header defects, how the text is built (amounts of "
        "money, percentages, link density), subject and body words), one on the character "
        "4-grams of the subject and the text's first 3000 characters, scaled by inverse "
        "document frequency. They err on different mail: the sum ranks better than either. "
        "Probability by Platt scaling on out-of-fold decision values.",
        f"- Feature version {FEATURE_VERSION}; Python {platform.python_version()}, scikit-learn "
        f"{sklearn.__version__}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"skops {skops.__version__}. A model is refused when feature or scikit-learn "
        "version differ.",
        f"- Vocabulary: {len(model.feature_names)} weighted features, {_char_grams(model)} of "
        "them 4-grams.",
        "",
        "## Data",
        "",
        "| label | messages | Date range (min .. max) | 5% .. 95% | no plausible Date |",
        "|---|---|---|---|---|",
        _data_row("ham", [e for e in examples if e.label == HAM]),
        _data_row("spam", [e for e in examples if e.label == SPAM]),
        "",
        _learnt_line(examples),
        "",
        f"Weighting in the fits: {weighting}. Discussion lists are most of the public "
        "corpus' ham and a small part of an MX's mail; at full weight their easy ham is what "
        "the model learns ham from (`training/weights.py`). Evaluation, calibration and the "
        "figures below count every message once.",
        "",
        "Not learnt from, because it would not carry over to an MX: Received lines, list and "
        "collector headers (List-*, Delivered-To, X-Keywords...), recipient addresses, the "
        "Date's year, a leading mbox `From ` line, and headers our gateway adds. Nor, since "
        "feature version 5, cues that any sender meets today but that split the 2002 mail by "
        "label: Message-ID domain equal to the From domain, links to the sender's own domain, "
        "mailer family (and its absence), text transfer encoding, a plain-text root type, "
        "the From TLD (see `gateway/features.py`). Left in: header defects (no Message-ID, no "
        "time zone, no display name), which can only push towards spam.",
        "",
        "## Held-out metrics",
        "",
        "Recall = share of held-out spam scored above the threshold that lets at most the "
        "given share of held-out ham through as spam (the number of ham that allows is shown). "
        "The first row is what model choices were made on: out-of-fold scores of 5-fold "
        "cross-validation inside the benchmark split's 80% training portion. The test rows "
        "were measured once, after those choices; the seed-7 row shows how much a different "
        "random split moves the figures. "
        f"{_budget_note(evaluations)} The next column shows the recall when one more ham may "
        "pass.",
        "",
        "| split | test ham | test spam | ROC AUC | spam recall at 0.1% FP | one more ham "
        "allowed | at 1% FP |",
        "|---|---|---|---|---|---|---|",
        *(_metrics_row(e) for e in evaluations),
        "",
        f"![ROC curves]({roc_file})",
        "",
        "## Operating thresholds",
        "",
        *_thresholds(model, evaluations),
        "",
        "## What the gateway lets this model do",
        "",
        "The strong tiers (`ML_SPAM_HIGH`, `ML_HAM_HIGH`, which decide alone) rest on the "
        "site's own mail (`--corpus` and learnt mail), each message scored by a model that "
        "never saw it, never on a public corpus (`--public-corpus`); see docs/learning.md.",
        "",
        "```",
        describe_claim(claim),
        "```",
        "",
        "## Performance (this machine, this run)",
        "",
        f"- Training run (read, features, 5 CV fits, 3 test-split fits, 6 fits for the "
        "artefact and its calibration, evaluation): "
        f"{performance.training_s:.1f} s.",
        f"- Scoring: {performance.messages_per_cpu_s:.0f} messages per CPU second through "
        "the check, parsing, feature extraction and explanation included (held-out mail, one "
        "thread, best of "
        f"{performance.scoring_passes} passes).",
        "- Memory: `benchmarks/bench_classifier.py` measures what a loaded model adds to a "
        "gateway process (numpy and the model data; skops and scikit-learn, ~120 MiB, only "
        "live in a short-lived child process while the file is read).",
        "",
        "## Mail unlike the training data",
        "",
        "Hand-written messages in today's style (`training/probes/`: 60 from 2026-12-04, 150 "
        "(`NNN-...`) written on 2026-12-07 by a helper who saw neither the model nor the first "
        "set, and 120 (`p3-...`) by another, for a European manufacturer's MX, 41% of them not "
        "in English: transactional mail, SaaS and CI "
        "notifications, newsletters and lists, person-to-person mail with and without "
        "attachments, in a dozen languages and charsets; phishing, BEC, scams, cold "
        "outreach, malware lures), scored by this model and its check's default settings. "
        "Made up, so a check of how the training mail carries over to today's, not a metric. "
        "No weight was fitted on them; `min_known_words` was chosen looking at the first set "
        "and at the ordinary-mail test messages (`tests/data/ordinary_mail/`); the third set "
        "was scored once, after every choice of that day.",
        "",
        *_probe_summary(probes, artefact_auc, policy),
        "",
        f"The {PROBES_LISTED} ham the model rates most spam-like and the {PROBES_LISTED} spam "
        "it rates least:",
        "",
        "| expected | message | spam probability | check | strongest features |",
        "|---|---|---|---|---|",
        *(_probe_row(p) for p in _worst(probes)),
        "",
        "## Using it",
        "",
        *_using_it(probes, policy),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Probe:
    expected: str  # "ham" or "spam": the probe's directory
    name: str
    probability: float
    pushes: list[Contribution]
    symbol: str  # what the check emits with its default settings


def _score_probes(model: ClassifierModel) -> list[Probe]:
    check = ClassifierCheck(model)
    probes = []
    for path in sorted(PROBES_DIR.glob("*/*.eml")):
        raw = path.read_bytes()
        decision, pushes = model.explain(extract(raw), 4)
        (symbol,) = check.classify(raw).symbols
        probes.append(
            Probe(path.parent.name, path.stem, model.probability(decision), pushes, symbol.name)
        )
    return probes


def _worst(probes: list[Probe]) -> list[Probe]:
    ham = sorted((p for p in probes if p.expected == "ham"), key=lambda p: -p.probability)
    spam = sorted((p for p in probes if p.expected == "spam"), key=lambda p: p.probability)
    return ham[:PROBES_LISTED] + spam[:PROBES_LISTED]


def _probe_summary(probes: list[Probe], held_out_auc: float, policy: Policy) -> list[str]:
    """What the check emits for each kind, and how well the probes rank."""
    ham = [p for p in probes if p.expected == "ham"]
    spam = [p for p in probes if p.expected == "spam"]
    if not ham or not spam:
        return []
    defaults = ClassifierCheckConfig()
    auc = roc_auc_score([0] * len(ham) + [1] * len(spam), [p.probability for p in ham + spam])
    return [
        f"- ham: {_symbol_counts(ham)}; {sum(p.probability >= 0.9 for p in ham)} scored 0.9 "
        f"or more. {_ml_spam_alone(policy)}",
        f"- spam: {_symbol_counts(spam)}; {sum(p.probability >= 0.9 for p in spam)} scored 0.9 "
        "or more.",
        f"- `ML_SPAM` at p >= {defaults.spam_threshold}, `ML_HAM` at p <= "
        f"{defaults.ham_threshold}, `ML_UNSURE` between them; `ML_NOT_JUDGED` whatever p, for a "
        f"body with fewer than {defaults.min_known_words} words the model knows (MIME-encrypted, "
        "image-only, empty, scripts the 2002 mail never had), unless a word hides behind "
        "Cyrillic or Greek look-alike letters.",
        f"- ROC AUC over the probes: {auc:.3f}, against {held_out_auc:.5f} on the training "
        "corpus' held-out mail. How much learning some of today's mail helps: `python -m "
        "training.feedback_gain` fits on the corpus plus half of the probes (as `gateway "
        "learn` and `make train` would) and scores the other half.",
    ]


def _ml_spam_alone(policy: Policy) -> str:
    """Whether the shipped policy lets a certain `ML_SPAM` quarantine a message on its own."""
    most = policy.symbols["ML_SPAM"].score  # multiplier = probability, at most 1
    quarantine = policy.thresholds.quarantine
    if most < quarantine:
        return (
            f"With the shipped scores `ML_SPAM` alone never quarantines (at most {most:g}, "
            f"quarantine at {quarantine:g})."
        )
    return f"With the shipped scores a certain `ML_SPAM` alone quarantines ({most:g})."


def _using_it(probes: list[Probe], policy: Policy) -> list[str]:
    """What an admin does with these figures: they hold for mail like the training mail."""
    score = policy.symbols["ML_SPAM"].score
    ham_over = [p for p in probes if p.expected == "ham" and p.probability >= 0.9]
    return [
        f"- Points: `ML_SPAM` adds {score:g} x probability to the verdict's score and "
        f"`ML_HAM` {policy.symbols['ML_HAM'].score:g} x (1 - probability) (rules/scores.toml); "
        f"quarantine at {policy.thresholds.quarantine:g}, reject at "
        f"{policy.thresholds.reject:g} (rules/actions.toml).",
        "- The false-positive rates above hold for mail like the training mail. "
        + (
            f"{len(ham_over)} of today's ham probes score 0.9 or more "
            f"({', '.join(p.name for p in ham_over[:4])}{' ...' if len(ham_over) > 4 else ''}): "
            "do not raise `ML_SPAM`'s score, or lower `spam_threshold`, on these figures alone."
            if ham_over
            else "None of today's ham probes scores 0.9 or more."
        ),
        "- To fit it to your mail: `gateway learn --ham` the ham it flags and `--spam` the spam "
        "it misses (quarantine release/delete `--learn` do the same), then `make train` "
        "(`FEEDBACK=<[storage] dir>/feedback`) and SIGHUP the gateway. Once the card's probes "
        "and your own mail score well, raising `ML_SPAM` to 6.5 lets a near-certain verdict "
        "quarantine alone.",
    ]


def _symbol_counts(probes: list[Probe]) -> str:
    counts = {name: sum(p.symbol == name for p in probes) for name in SYMBOLS}
    return f"{len(probes)} scored: " + ", ".join(f"{n} `{name}`" for name, n in counts.items())


def _probe_row(probe: Probe) -> str:
    named = ", ".join(f"`{c.feature}` {c.weight:+.2f}" for c in probe.pushes)
    return (
        f"| {probe.expected} | {probe.name} | {probe.probability:.3f} | {probe.symbol} | {named} |"
    )


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


def _budget_note(evaluations: list[Evaluation]) -> str:
    """What the 0.1% budget means on the benchmark split's actual number of test ham."""
    benchmark = next((e for e in evaluations if e.name == "stratified"), evaluations[-1])
    low = benchmark.metrics.operating[0]
    n_ham = benchmark.metrics.n_ham
    if low.fp_allowed == 0:
        return (
            f"{low.fp_budget:.1%} of {n_ham} test ham allows none: that column is decided by "
            f"the single highest-scoring test ham (it takes {round(1 / low.fp_budget)} or "
            f"more test ham to measure a {low.fp_budget:.1%} rate)."
        )
    return f"{low.fp_budget:.1%} of {n_ham} test ham allows {low.fp_allowed}."


def _learnt_line(examples: list[Example]) -> str:
    learnt = [e for e in examples if e.learnt]
    if not learnt:
        return "Nothing learnt through feedback (`gateway learn`, quarantine `--learn`) is in it."
    spam = sum(e.label == SPAM for e in learnt)
    return (
        f"Of these, {len(learnt)} learnt through feedback ({len(learnt) - spam} ham, {spam} "
        "spam): always trained on, never held out, and a learnt label overrides a corpus's."
    )


def _day(date: datetime) -> str:
    return date.strftime("%Y-%m-%d")


def _metrics_row(evaluation: Evaluation) -> str:
    m = evaluation.metrics
    low, high = m.operating
    one_more = recall_allowing(evaluation.labels, evaluation.scores, low.fp_allowed + 1)
    return (
        f"| {evaluation.description} | {m.n_ham} | {m.n_spam} | {m.auc:.5f} | "
        f"{low.recall:.1%} ({low.fp_allowed} ham allowed) | {one_more:.1%} | "
        f"{high.recall:.1%} ({high.fp_allowed} ham allowed) |"
    )


def _char_grams(model: ClassifierModel) -> int:
    return sum(name.startswith(CHAR_GRAM_PREFIX) for name in model.feature_names)


def _thresholds(model: ClassifierModel, evaluations: list[Evaluation]) -> list[str]:
    lines = [
        "The check emits `ML_SPAM` (multiplier = probability) at or above `spam_threshold` "
        "(default 0.5), `ML_HAM` (multiplier = 1 - probability) at or below `ham_threshold` "
        "(default 0.2), and `ML_UNSURE` (score 0, so that the verdict shows the model's view) "
        "in between; `ML_NOT_JUDGED` (score 0) instead of any of them when the body has fewer "
        f"than `min_known_words` (default {ClassifierCheckConfig.min_known_words}) words the "
        "model knows. Probabilities matching the "
        "false-positive budgets on the artefact's held-out mail:",
        "",
    ]
    artefact = next(e for e in evaluations if e.name == "artefact")
    n_ham = artefact.metrics.n_ham
    for operating in artefact.metrics.operating:
        probability = model.probability(operating.threshold)
        basis = f"{operating.fp_allowed} of {n_ham} held-out ham above it"
        if operating.fp_allowed == 0:
            basis += ": the highest-scoring held-out ham's probability, not a measured rate"
        lines.append(
            f"- {operating.fp_budget:.1%} FP: probability > {probability:.4f} "
            f"(spam recall {operating.recall:.1%}; {basis})"
        )
    return lines
