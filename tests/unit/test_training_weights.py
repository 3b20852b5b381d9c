"""training.weights: list mail weighed down to its share of a label, and the fits obeying it."""

from __future__ import annotations

import numpy as np
import pytest

from training.fit import FeatureTable, fit_linear
from training.readers import HAM, SPAM, Example
from training.weights import LIST_MAIL_SHARE, describe, is_list_mail, sample_weights


def message(n: int, header: str = "") -> bytes:
    return f"From: a{n}@example.org\nSubject: s{n}\n{header}\nbody {n}\n".encode()


def example(n: int, label: int, header: str = "", learnt: bool = False) -> Example:
    return Example(message(n, header), label, f"m{n}", None, learnt)


@pytest.mark.parametrize(
    ("header", "listed"),
    [
        ("List-Id: Users <users.lists.example.org>\n", True),
        ("List-Post: <mailto:users@lists.example.org>\n", True),
        ("Mailing-List: contact users-help@example.org\n", True),
        ("list-id: <lower.case.example>\n", True),
        # Every bulk sender sets List-Unsubscribe: newsletters and receipts are not list mail.
        ("List-Unsubscribe: <https://example.com/u>\n", False),
        ("", False),
    ],
)
def test_list_mail_is_told_by_its_list_headers(header: str, listed: bool) -> None:
    assert is_list_mail(message(1, header)) is listed


def test_list_mail_is_brought_to_its_share_of_each_label() -> None:
    listed = "List-Id: <l.example>\n"
    examples = [
        *(example(n, HAM, listed) for n in range(90)),
        *(example(n, HAM) for n in range(100, 110)),
        *(example(n, SPAM, listed) for n in range(200, 202)),  # 2 of 12: 1 is 10%
        *(example(n, SPAM) for n in range(300, 310)),
    ]
    weights = sample_weights(examples)
    ham = np.array([e.label == HAM for e in examples])
    on_lists = np.array([is_list_mail(e.raw) for e in examples])
    for label_mask in (ham, ~ham):
        share = weights[label_mask & on_lists].sum() / weights[label_mask].sum()
        assert share == pytest.approx(LIST_MAIL_SHARE)
    assert set(weights[~on_lists]) == {1.0}
    assert "90 ham at 0.012, 2 spam at 0.556" in describe(examples, weights)


def test_list_mail_under_its_share_only_list_mail_and_learnt_mail_count_in_full() -> None:
    listed = "List-Post: <mailto:l@example.org>\n"
    examples = [
        example(1, HAM, listed),  # 1 of 21 ham: under 10% already
        *(example(n, HAM) for n in range(10, 30)),
        *(example(n, SPAM, listed) for n in range(40, 45)),  # nothing else to weigh against
        example(50, SPAM, listed, learnt=True),  # the admin's own verdict
    ]
    assert set(sample_weights(examples)) == {1.0}
    assert describe(examples, sample_weights(examples)).startswith("list mail: none weighed")
    assert set(sample_weights(examples, list_share=1.0)) == {1.0}


def test_a_table_keeps_its_weights_through_subsets_and_refuses_a_wrong_count() -> None:
    rows = [{"a": 1.0}, {"a": 1.0, "b": 1.0}, {"b": 1.0}]
    table = FeatureTable.of(rows, np.array([0.5, 1.0, 2.0]))
    assert table.subset(np.array([2, 0])).weights.tolist() == [2.0, 0.5]
    assert FeatureTable.of(rows).weights.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="3 rows but"):
        FeatureTable.of(rows, np.ones(2))


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
