"""Rule files carry their own scores: the pipeline merges them, scores.toml may override them,
and a reload that adds a rule is scored once the policy is swapped (SIGHUP order)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.checks.rules import RulesCheck
from gateway.model import Connection, Envelope, Transaction
from gateway.pipeline.engine import Pipeline
from gateway.pipeline.scoring import Policy, SymbolPolicy, Thresholds

RULE = """
[rule.RULE_{name}]
target = "body"
pattern = '{pattern}'
score = {score}
description = "test rule"
"""


def policy(symbols: dict[str, SymbolPolicy]) -> Policy:
    return Policy({"RULES_ERROR": SymbolPolicy(0.0), **symbols}, {}, Thresholds(5.0, 10.0), {})


def score(pipeline: Pipeline, body: str) -> float:
    raw = f"Subject: x\r\n\r\n{body}\r\n".encode()
    tx = Transaction("t", Connection("t", "192.0.2.1"), Envelope("a@b.example", ("c@d.test",)), raw)
    return asyncio.run(pipeline.run_message(tx)).verdict.score


def test_rule_scores_come_from_the_rule_file_unless_overridden(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        RULE.format(name="A", pattern="alpha", score=2.5)
        + RULE.format(name="B", pattern="beta", score=1.0)
    )
    check = RulesCheck([path])
    pipeline = Pipeline([check], policy({"RULE_B": SymbolPolicy(7.0)}), 5.0)
    assert score(pipeline, "alpha") == 2.5
    assert score(pipeline, "beta") == 7.0  # scores.toml wins over the rule file
