"""training.weights: list mail weighed down to its share of a label, and the fits obeying it."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from gateway.content import parse_headers
from training.fit import FeatureTable, fit_linear
from training.readers import HAM, SPAM, Example, is_list_mail, read_labelled_dir
from training.weights import LIST_MAIL_SHARE, describe, sample_weights, share_argument

LISTED = "List-Id: Users <users.lists.example.org>\n"


def message(n: int, header: str = "") -> bytes:
    return f"From: a{n}@example.org\nSubject: s{n}\n{header}\nbody {n}\n".encode()


def example(n: int, label: int, list_mail: bool = False, learnt: bool = False) -> Example:
    return Example(message(n), label, f"m{n}", None, learnt, list_mail)


@pytest.mark.parametrize(
    ("header", "listed"),
    [
        (LISTED, True),
        ("List-Post: <mailto:users@lists.example.org>\n", True),
        ("Mailing-List: contact users-help@example.org\n", True),
        ("list-id: <lower.case.example>\n", True),
        # Every bulk sender sets List-Unsubscribe: newsletters and receipts are not list mail.
        ("List-Unsubscribe: <https://example.com/u>\n", False),
        ("", False),
    ],
)
def test_list_mail_is_told_by_its_list_headers(header: str, listed: bool) -> None:
    assert is_list_mail(parse_headers(message(1, header))) is listed


def test_the_corpus_reader_marks_list_mail(tmp_path: Path) -> None:
    for name, header in (("ham/1.eml", LISTED), ("ham/2.eml", ""), ("spam/1.eml", "")):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(message(len(name), header))
    read = read_labelled_dir(tmp_path, lambda *_: None)
    assert sorted((e.origin.rsplit("/", 2)[-2], e.list_mail) for e in read) == [
        ("ham", False),
        ("ham", True),
        ("spam", False),
    ]


def test_list_mail_is_brought_to_its_share_of_each_label() -> None:
    examples = [
        *(example(n, HAM, list_mail=True) for n in range(90)),
        *(example(n, HAM) for n in range(100, 110)),
        *(example(n, SPAM, list_mail=True) for n in range(200, 202)),  # 2 of 12: 1 is 10%
        *(example(n, SPAM) for n in range(300, 310)),
    ]
    weights = sample_weights(examples)
    ham = np.array([e.label == HAM for e in examples])
    on_lists = np.array([e.list_mail for e in examples])
    for label_mask in (ham, ~ham):
        share = weights[label_mask & on_lists].sum() / weights[label_mask].sum()
        assert share == pytest.approx(LIST_MAIL_SHARE)
    assert set(weights[~on_lists]) == {1.0}
    assert "90 list ham at 0.012 each, 2 list spam at 0.556 each" in describe(
        examples, weights, LIST_MAIL_SHARE
    )
    assert set(sample_weights(examples, list_share=1.0)) == {1.0}  # 1: in full
    half = sample_weights(examples, list_share=0.5)
    assert half[0] == pytest.approx(10 / 90) and half[100] == 1.0  # spam: 2 of 12 is under half


def test_learnt_mail_counts_in_full_and_is_not_what_list_mail_is_weighed_against() -> None:
    examples = [
        *(example(n, HAM, list_mail=True) for n in range(9)),
        example(10, HAM),
        example(11, HAM, list_mail=True, learnt=True),  # the admin's own verdict
        *(example(n, HAM, learnt=True) for n in range(20, 30)),  # not corpus ham: no share
    ]
    weights = sample_weights(examples)
    assert weights[10] == 1.0 and set(weights[11:]) == {1.0}
    assert weights[0] == pytest.approx(0.1 * 1 / (0.9 * 9))  # against the one corpus ham


def test_a_label_of_list_mail_only_counts_in_full_and_the_line_says_why() -> None:
    examples = [
        example(1, HAM, list_mail=True),  # 1 of 21 ham: under 10% already
        *(example(n, HAM) for n in range(10, 30)),
        *(example(n, SPAM, list_mail=True) for n in range(40, 45)),  # nothing to weigh against
    ]
    weights = sample_weights(examples)
    assert set(weights) == {1.0}
    line = describe(examples, weights, LIST_MAIL_SHARE)
    assert "1 list ham in full (no more than its share)" in line
    assert "5 list spam in full (no other spam to weigh against)" in line
    assert "no list ham, no list spam" in describe([example(1, HAM)], np.ones(1), 0.1)


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5, float("nan")])
def test_a_share_out_of_range_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="must be above 0 and at most 1"):
        sample_weights([example(1, HAM)], share)


@pytest.mark.parametrize(
    ("text", "message"), [("0", "0: must be above 0"), ("1.5", "1.5: must be"), ("x", "x: not a")]
)
def test_the_share_option_refuses_what_sample_weights_would(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        share_argument(text)
    assert share_argument("0.25") == 0.25 and share_argument("1") == 1.0


def test_a_table_keeps_its_weights_through_subsets_and_refuses_bad_ones() -> None:
    rows = [{"a": 1.0}, {"a": 1.0, "b": 1.0}, {"b": 1.0}]
    table = FeatureTable.of(rows, np.array([0.5, 1.0, 2.0]))
    assert table.subset(np.array([2, 0])).row_weights.tolist() == [2.0, 0.5]
    assert table.subset(np.array([2, 0]), np.array([3.0, 4.0])).row_weights.tolist() == [3, 4]
    assert FeatureTable.of(rows).row_weights.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="3 rows but"):
        FeatureTable.of(rows, np.ones(2))
    for bad in (np.array([1.0, np.nan, 1.0]), np.array([1.0, -1.0, 1.0])):
        with pytest.raises(ValueError, match="finite and not negative"):
            FeatureTable.of(rows, bad)


def test_the_fit_follows_the_weighted_messages() -> None:
    """`shared` comes with 20 ham of weight 0.01 and 4 spam of weight 1: weighted, it is a spam
    cue; unweighted, a ham cue. A fit that ignored the weights would get it the wrong way."""
    rows: list[dict[str, float]] = []
    labels: list[int] = []
    weights: list[float] = []
    for n in range(30):
        rows += [{f"ham{n % 5}": 1.0}, {f"spam{n % 5}": 1.0}]
        labels += [HAM, SPAM]
        weights += [1.0, 1.0]
    for n in range(20):
        rows.append({"shared": 1.0, f"ham{n % 5}": 1.0})
        labels.append(HAM)
        weights.append(0.01)
    for n in range(4):
        rows.append({"shared": 1.0, f"spam{n % 5}": 1.0})
        labels.append(SPAM)
        weights.append(1.0)
    y = np.array(labels)

    def shared_weight(table: FeatureTable) -> float:
        model = fit_linear(table, y, calibrate=False)
        return float(model.weights[model.feature_names.index("shared")])

    assert shared_weight(FeatureTable.of(rows, np.array(weights))) > 0
    assert shared_weight(FeatureTable.of(rows)) < 0
