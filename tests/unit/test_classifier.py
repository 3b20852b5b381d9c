"""The classifier check: a model trained on the tiny corpus, its artefact, its explanations."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import skops.io

from gateway.checks.classifier import (
    ARTEFACT_FORMAT,
    ClassifierCheck,
    ClassifierModel,
    Contribution,
    read_artefact,
)
from gateway.errors import ModelError
from gateway.features import CHAR_GRAM_PREFIX, extract, extract_split
from gateway.model import Connection, Envelope, Transaction
from tests.support.mailcorpus import ham_message, spam_message
from training.evaluate import evaluate
from training.fit import FeatureTable, _label_ratio, cross_validated_scores, fit_model
from training.readers import read_labelled_dir

NOW = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def model(tiny_corpus: Path) -> ClassifierModel:
    examples = read_labelled_dir(tiny_corpus, lambda path, reason: None)
    labels = np.array([e.label for e in examples])
    return fit_model(FeatureTable.of([extract(e.raw) for e in examples]), labels)


def transaction(raw: bytes) -> Transaction:
    return Transaction("t1", Connection("t1", "127.0.0.1"), Envelope("a@b.example", ()), raw)


def test_spam_and_ham_get_symbols_with_probability_multipliers(model: ClassifierModel) -> None:
    check = ClassifierCheck(model)
    rng = random.Random(99)  # messages the model has not seen
    spam = asyncio.run(check.run(transaction(spam_message(rng, 1000, NOW)))).symbols
    ham = asyncio.run(check.run(transaction(ham_message(rng, 1001, NOW)))).symbols
    assert [s.name for s in spam] == ["ML_SPAM"] and spam[0].multiplier > 0.9
    assert [s.name for s in ham] == ["ML_HAM"] and ham[0].multiplier > 0.9
    assert spam[0].reason.startswith(f"p={spam[0].multiplier:.3f} by ")


def test_explanation_names_features_of_this_message_and_the_model(model: ClassifierModel) -> None:
    raw = spam_message(random.Random(5), 2000, NOW)
    decision, pushes = model.explain(extract(raw), top=3)
    assert decision > 0 and len(pushes) == 3
    assert all(p.weight > 0 for p in pushes)
    assert [p.weight for p in pushes] == sorted((p.weight for p in pushes), reverse=True)
    known = extract(raw).keys() & set(model.feature_names)
    for push in pushes:
        if push.feature.startswith(f"{CHAR_GRAM_PREFIX}["):  # the 4-grams' summed push
            assert any(name.startswith(CHAR_GRAM_PREFIX) for name in known)
        else:
            assert push.feature in known
    reason = ClassifierCheck(model, explain_features=3).classify(raw).symbols[0].reason
    assert all(f"{p.feature}({p.weight:+.2f})" in reason for p in pushes)


def test_the_char_grams_are_one_push_relative_to_their_own_intercept() -> None:
    features = {"w:win": 1.0, "c: win": 0.6, "c:win ": 0.8}
    weights = np.array([1.0, 2.0, 0.5])
    model = ClassifierModel(
        ("w:win", "c: win", "c:win "), weights, -1.5, 1.0, 0.0, char_gram_intercept=-1.0
    )
    decision, pushes = model.explain(features, top=5)
    assert decision == pytest.approx(-1.5 + 1.0 + 1.2 + 0.4)
    assert pushes == [
        Contribution("w:win", 1.0),
        Contribution("c:[' win' 'win ']", pytest.approx(-1.0 + 1.2 + 0.4)),
    ]


def test_grams_looked_up_in_bulk_score_and_explain_as_the_named_features(
    model: ClassifierModel,
) -> None:
    rng = random.Random(8)
    raws = [spam_message(rng, i, NOW) for i in range(20)] + [
        ham_message(rng, i, NOW) for i in range(20, 40)
    ]
    raws.append(
        b"Subject: caf\xc3\xa9 \xf0\x9f\x98\x80 now\n\nfree \xf0\x9f\x8e\x81 a gift for you"
    )
    for raw in raws:
        named = model.explain(extract(raw), top=5)
        features, grams = extract_split(raw)
        assert len(grams.keys) and not any(n.startswith(CHAR_GRAM_PREFIX) for n in features)
        assert model.explain(features, 5, grams) == named  # to the bit
        assert model.decision([extract(raw)])[0] == named[0]


def test_gram_names_extraction_cannot_produce_match_in_neither_way() -> None:
    # An emoji gram name (a surrogate pair joins into one on an artefact's round trip) and a
    # five-character one must not take the key of the gram they fold or cut to.
    names = ("c:\U0001f600bcd", "c: abcd", "c: ab ")
    model = ClassifierModel(names, np.array([5.0, 7.0, 1.0]), 0.0, 1.0, 0.0)
    raw = "Subject: x\n\n\U0001f601bcd abcde ab".encode()
    features, grams = extract_split(raw)
    decision = model.explain(features, 3, grams)[0]
    assert decision == model.decision([extract(raw)])[0] == pytest.approx(extract(raw)["c: ab "])


def test_the_explanation_follows_the_calibrated_verdict_not_the_raw_sign() -> None:
    # A decision value below 0 that calibration still turns into spam (p > 0.5): the reason
    # must name what pushed towards spam.
    model = ClassifierModel(("w:offer", "w:meeting"), np.array([0.8, -1.0]), 0.0, 1.0, 2.0)
    decision, pushes = model.explain({"w:offer": 1.0, "w:meeting": 1.0}, top=2)
    assert decision < 0 < model.probability(decision) - 0.5
    assert pushes == [Contribution("w:offer", 0.8)]


def test_undecided_middle_band_says_so_with_the_reason(model: ClassifierModel) -> None:
    check = ClassifierCheck(model, spam_threshold=1.0, ham_threshold=0.0)
    (symbol,) = check.classify(ham_message(random.Random(1), 1, NOW)).symbols
    assert symbol.name == "ML_UNSURE" and symbol.reason.startswith("p=0.")
    assert " by " in symbol.reason


# Layout alone says spam here (an HTML root), as the shipped model's 2002 layout cues often do.
LAYOUT_MODEL = ClassifierModel(
    ("mime:root=text/html", "w:one", "w:two", "w:three", "w:four", "w:five", "s:notes"),
    np.array([8.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]),
    0.0,
    1.0,
    0.0,
)


def html_message(body: str) -> bytes:
    return (
        "From: a@b.example\nSubject: notes\nContent-Type: text/html; charset=utf-8\n\n"
        f"<html><body><p>{body}</p></body></html>\n"
    ).encode()


@pytest.mark.parametrize(
    ("body", "known"),
    [
        ("", 0),  # an empty body: the subject and layout alone
        ("one two three four", 4),
        ("zq\u00e4rk vlm\u00f6x qwyrtz plonkify gribble snorf", 0),  # words it never saw
        ("\u4f60\u597d \u4e16\u754c one", 1),  # a script the training mail lacked
    ],
)
def test_a_body_with_too_few_words_the_model_knows_is_not_judged(body: str, known: int) -> None:
    raw = html_message(body)
    assert LAYOUT_MODEL.known_words(extract(raw)) == known
    (symbol,) = ClassifierCheck(LAYOUT_MODEL).classify(raw).symbols
    assert symbol.name == "ML_NOT_JUDGED" and symbol.multiplier == 1.0
    assert symbol.reason.startswith(
        f"{known} body word(s) known to the model, fewer than min_known_words 5; unscored, "
        "the model alone: p=1.000 by mime:root=text/html(+8.00)"
    )
    (every,) = ClassifierCheck(LAYOUT_MODEL, min_known_words=0).classify(raw).symbols
    assert every.name == "ML_SPAM"  # 0: every message judged


def test_enough_known_words_or_a_disguised_one_is_judged() -> None:
    check = ClassifierCheck(LAYOUT_MODEL)
    (five,) = check.classify(html_message("one two three four five")).symbols
    assert five.name == "ML_SPAM" and five.reason.startswith("p=1.000 by ")
    # Cyrillic look-alikes in Latin words hide them from the model: not a reason to look away.
    disguised = html_message("p\u0430ypal \u0430ccount v\u0435rify")
    assert LAYOUT_MODEL.known_words(extract(disguised)) == 0
    assert [s.name for s in check.classify(disguised).symbols] == ["ML_SPAM"]
    # Whole words in Cyrillic or Greek are another language, not a disguise.
    russian = html_message(
        "\u043f\u0440\u0438\u0432\u0435\u0442 pdf-\u0444\u0430\u0439\u043b \u03ba\u03b1\u03bb\u03b7"
    )
    assert [s.name for s in check.classify(russian).symbols] == ["ML_NOT_JUDGED"]


def test_a_negative_min_known_words_is_refused() -> None:
    with pytest.raises(ValueError, match="min_known_words -1: must be 0 or more"):
        ClassifierCheck(LAYOUT_MODEL, min_known_words=-1)


def test_known_words_counts_body_words_the_model_knows_up_to_stop_at() -> None:
    model = ClassifierModel(("w:a", "w:b", "w:c", "s:d"), np.ones(4), 0.0, 1.0, 0.0)
    row = {"w:a": 1.0, "w:b": 1.0, "w:c": 1.0, "w:zz": 1.0, "s:d": 1.0, "c:abcd": 1.0}
    assert model.known_words(row) == 3  # not the subject's s:d, not the unknown w:zz
    assert model.known_words(row, stop_at=2) == 2


def test_artefact_round_trip_keeps_scores(model: ClassifierModel, tmp_path: Path) -> None:
    path = tmp_path / "m.skops"
    dataclasses.replace(model, metadata={"trained_at": "today"}).save(path)
    loaded = ClassifierModel.load(path)
    rows = [extract(ham_message(random.Random(3), 3, NOW))]
    assert loaded.metadata == {"trained_at": "today"}
    assert loaded.decision(rows)[0] == pytest.approx(model.decision(rows)[0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"feature_version": 999}, "feature version 999"),
        ({"sklearn_version": "0.1"}, "scikit-learn 0.1"),
    ],
)
def test_version_mismatch_is_refused(
    model: ClassifierModel, tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = tmp_path / "old.skops"
    dataclasses.replace(model, **change).save(path)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=message):
        ClassifierModel.from_data(path, read_artefact(path))


def test_an_artefact_naming_a_feature_twice_is_refused(
    model: ClassifierModel, tmp_path: Path
) -> None:
    # Scoring by name would take one weight and scoring in bulk the other.
    path = tmp_path / "twice.skops"
    model.save(path)
    data = read_artefact(path)
    names = data["feature_names"].split("\n")
    data["feature_names"] = "\n".join([names[0], *names[:-1]])
    with pytest.raises(ModelError, match="occurs twice"):
        ClassifierModel.from_data(path, data)


@pytest.mark.parametrize("key", ["weights", "intercept", "platt_slope", "char_gram_intercept"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_an_artefact_with_a_non_finite_number_is_refused(
    model: ClassifierModel, tmp_path: Path, key: str, bad: float
) -> None:
    # NaN or infinity would turn every verdict into the same one without a word.
    path = tmp_path / "broken.skops"
    model.save(path)
    data = read_artefact(path)
    data[key] = [bad, *list(data[key])[1:]] if key == "weights" else bad
    with pytest.raises(ModelError, match="not a finite number"):
        ClassifierModel.from_data(path, data)


class Payload:
    """Stands for code an attacker would like to run at load time."""


def test_untrusted_types_missing_or_garbage_files_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.skops"
    skops.io.dump({"format": ARTEFACT_FORMAT, "payload": Payload()}, evil)
    with pytest.raises(ModelError, match="untrusted types"):
        read_artefact(evil)
    garbage = tmp_path / "garbage.skops"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="not a readable classifier model"):
        read_artefact(garbage)
    with pytest.raises(ModelError, match="no such model file"):
        read_artefact(tmp_path / "absent.skops")
    partial = tmp_path / "partial.skops"
    skops.io.dump({"format": ARTEFACT_FORMAT, "feature_version": 1}, partial)
    with pytest.raises(ModelError):
        ClassifierModel.from_data(partial, read_artefact(partial))


def test_load_reports_the_child_loaders_error(model: ClassifierModel, tmp_path: Path) -> None:
    path = tmp_path / "old.skops"
    dataclasses.replace(model, feature_version=999).save(path)
    with pytest.raises(ModelError, match="feature version 999"):
        ClassifierModel.load(path)
    with pytest.raises(ModelError, match="no such model file"):
        ClassifierModel.load(tmp_path / "absent.skops")


def test_feature_names_with_line_breaks_never_reach_the_artefact(tmp_path: Path) -> None:
    rows = [
        {"w:ok": 1.0, "att:type=text/\n html": 1.0},
        {"w:ok": 1.0, "att:type=text/\n html": 1.0},
    ]
    rows += [{"w:bad": 1.0}, {"w:bad": 1.0}]
    fitted = fit_model(FeatureTable.of(rows * 3), np.array([0, 0, 1, 1] * 3))
    assert set(fitted.feature_names) == {"w:ok", "w:bad"}


def test_features_that_tell_the_labels_apart_are_scaled_up_before_the_fit() -> None:
    # Columns: spam only, ham only, both alike.
    matrix = sp.csr_matrix(np.array([[1, 0, 1], [1, 0, 1], [0, 1, 1], [0, 1, 1]], dtype=float))
    scale = _label_ratio(matrix, np.array([1, 1, 0, 0]))
    assert scale[0] == pytest.approx(scale[1]) and scale[0] > 0.5 and scale[2] == 0.0


def test_a_table_subset_is_the_table_of_those_rows_alone() -> None:
    rng = random.Random(4)
    rows = [{f"w:{rng.randrange(40)}": rng.random() + 0.1 for _ in range(5)} for _ in range(30)]
    indices = np.array(sorted(rng.sample(range(30), 9)))
    subset, alone = (
        FeatureTable.of(rows).subset(indices),
        FeatureTable.of([rows[i] for i in indices]),
    )
    assert subset.rows == alone.rows and subset.names == alone.names
    assert len(subset.names) < len(FeatureTable.of(rows).names)  # features seen once dropped
    assert (subset.matrix != alone.matrix).nnz == 0 and subset.matrix.shape == alone.matrix.shape


def test_cross_validation_scores_each_message_by_a_model_that_never_saw_it(
    tiny_corpus: Path,
) -> None:
    examples = read_labelled_dir(tiny_corpus, lambda path, reason: None)
    rows = [extract(e.raw) for e in examples]
    labels = np.array([e.label for e in examples])
    table = FeatureTable.of(rows)
    true = evaluate(labels, cross_validated_scores(table, labels))
    assert true.auc > 0.95  # the generated spam and ham are easy to tell apart
    # Labels shuffled: a model scoring mail it was fitted on would still rank them well;
    # out-of-fold scores cannot beat chance by much.
    shuffled = np.random.default_rng(3).permutation(labels)
    in_sample = fit_model(table, shuffled).decision(rows)
    assert evaluate(shuffled, in_sample).auc > 0.9
    assert evaluate(shuffled, cross_validated_scores(table, shuffled)).auc < 0.75
