from pathlib import Path

import pytest

from gateway.config import SHIPPED_RULES_DIR
from gateway.errors import ConfigError
from gateway.model import Action, CheckResult, OnError, Symbol
from gateway.pipeline.scoring import (
    ForcedAction,
    Policy,
    SymbolPolicy,
    Thresholds,
    decide,
    load_policy,
)


def policy(**extra: object) -> Policy:
    base: dict = {
        "symbols": {
            "A": SymbolPolicy(4.0, group="g"),
            "B": SymbolPolicy(4.0, group="g"),
            "C": SymbolPolicy(3.0),
            "GOOD": SymbolPolicy(-5.0),
            "VIRUS": SymbolPolicy(0.0),
            "HOLD": SymbolPolicy(0.0),
        },
        "group_caps": {"g": 5.0},
        "thresholds": Thresholds(6.0, 10.0),
        "forced": {
            "VIRUS": ForcedAction(Action.REJECT, "554 5.7.0 Virus found: {reason}"),
            "HOLD": ForcedAction(Action.QUARANTINE),
        },
    }
    base.update(extra)
    return Policy(**base)


def result(check: str, *names: str, error: str | None = None) -> CheckResult:
    return CheckResult(check, tuple(Symbol(n, f"why {n}") for n in names), error=error)


def test_scores_add_up_and_groups_are_capped() -> None:
    verdict = decide(policy(), [result("x", "A", "B", "C")], {})
    assert [s.score for s in verdict.symbols] == [4.0, 1.0, 3.0]
    assert verdict.score == 8.0
    assert verdict.action is Action.QUARANTINE
    assert "quarantine threshold 6" in verdict.reason


def test_multiplier_scales_and_is_clamped() -> None:
    r = CheckResult("ml", (Symbol("C", "p=0.5", 0.5), Symbol("A", "", 7.0)))
    assert [s.score for s in decide(policy(), [r], {}).symbols] == [1.5, 4.0]


def test_negative_scores_lower_the_total() -> None:
    verdict = decide(policy(), [result("x", "A", "C", "GOOD")], {})
    assert verdict.score == 2.0
    assert verdict.action is Action.ACCEPT


def test_reject_threshold() -> None:
    p = policy(thresholds=Thresholds(2.0, 3.0))
    assert decide(p, [result("x", "C")], {}).action is Action.REJECT


def test_forced_reject_beats_an_allowlist_and_carries_its_reply() -> None:
    verdict = decide(policy(), [result("av", "VIRUS"), result("lists", "GOOD")], {})
    assert verdict.action is Action.REJECT
    assert verdict.forced_by is not None and verdict.forced_by.name == "VIRUS"
    assert verdict.reply == "554 5.7.0 Virus found: why VIRUS"


def test_forced_quarantine_only_when_final() -> None:
    assert decide(policy(), [result("x", "HOLD")], {}).action is Action.QUARANTINE
    assert decide(policy(), [result("x", "HOLD")], {}, final=False).action is Action.ACCEPT


def test_scores_apply_only_when_final() -> None:
    verdict = decide(policy(), [result("x", "A", "B", "C")], {}, final=False)
    assert verdict.action is Action.ACCEPT


def test_failed_check_tempfails_only_when_configured() -> None:
    failed = result("av", error="timed out")
    assert decide(policy(), [failed], {"av": OnError.IGNORE}).action is Action.ACCEPT
    verdict = decide(policy(), [failed], {"av": OnError.TEMPFAIL})
    assert verdict.action is Action.TEMPFAIL
    assert "av failed: timed out" in verdict.reason
    # A known virus is rejected even when another check could not decide.
    both = decide(policy(), [failed, result("x", "VIRUS")], {"av": OnError.TEMPFAIL})
    assert both.action is Action.REJECT


def test_unknown_symbols_score_zero() -> None:
    verdict = decide(policy(), [result("x", "NEVER_HEARD")], {})
    assert verdict.symbols[0].score == 0.0


def test_per_domain_thresholds_take_the_strictest() -> None:
    p = policy(domain_thresholds={"strict.test": Thresholds(2.0, 4.0)})
    assert p.thresholds_for(["a@lax.test"]) == Thresholds(6.0, 10.0)
    assert p.thresholds_for(["a@lax.test", "b@STRICT.test"]) == Thresholds(2.0, 4.0)
    verdict = decide(p, [result("x", "C")], {}, recipients=["b@strict.test"])
    assert verdict.action is Action.QUARANTINE


def test_symbol_consistency_is_checked_at_startup() -> None:
    p = policy()
    with pytest.raises(ConfigError) as info:
        p.check_symbols({"x": frozenset({"A", "B", "C", "GOOD", "VIRUS", "HOLD", "NEW"})})
    assert info.value.problems == ["scores.toml: symbol NEW (emitted by check x) has no score"]
    with pytest.raises(ConfigError, match="GOOD is scored but no enabled check emits it"):
        p.check_symbols({"x": frozenset({"A", "B", "C", "VIRUS", "HOLD"})})


def test_shipped_policy_loads() -> None:
    p = load_policy(SHIPPED_RULES_DIR)
    assert p.thresholds.quarantine < p.thresholds.reject
    assert p.forced["GTUBE_REJECT"].action is Action.REJECT


def write_rules(tmp_path: Path, scores: str, actions: str) -> Path:
    (tmp_path / "scores.toml").write_text(scores, encoding="utf-8")
    (tmp_path / "actions.toml").write_text(actions, encoding="utf-8")
    return tmp_path


def test_bad_policy_files_are_explained(tmp_path: Path) -> None:
    rules = write_rules(
        tmp_path,
        '[symbol.lower]\nscore = "x"\n[symbol.OK]\nscore = 1\ngroup = "nope"\n',
        '[thresholds]\nquarantine = 9\nreject = 3\n[forced]\nOK = "explode"\n'
        'X = { action = "reject", reply = "250 fine" }\n',
    )
    with pytest.raises(ConfigError) as info:
        load_policy(rules)
    text = "\n".join(info.value.problems)
    assert "symbol.lower: symbol names are UPPER_SNAKE" in text
    assert "symbol.lower.score must be a number" in text
    assert "symbol.OK.group: 'nope' is not defined" in text
    assert "quarantine (9) must not exceed reject (3)" in text
    assert "forced.OK: action must be one of" in text
    assert "forced.X.reply: must start with a 5xx" in text


def test_tag_threshold_marks_mail_between_accept_and_quarantine() -> None:
    tagging = policy(thresholds=Thresholds(6.0, 10.0, tag=3.0), subject_prefix="[SPAM] ")
    verdict = decide(tagging, [result("x", "C")], {})
    assert (verdict.action, verdict.tag_at, verdict.subject_prefix) == (Action.TAG, 3.0, "[SPAM] ")
    assert "tag threshold 3" in verdict.reason
    assert decide(tagging, [result("x", "A", "C")], {}).action is Action.QUARANTINE
    assert decide(policy(), [result("x", "C")], {}).action is Action.ACCEPT  # no tag: accept
    # Before DATA a tag is not applied: the message is not known yet.
    assert decide(tagging, [result("x", "C")], {}, final=False).action is Action.ACCEPT


def test_shipped_actions_tag_below_quarantine(tmp_path: Path) -> None:
    shipped = load_policy(SHIPPED_RULES_DIR).thresholds
    assert shipped.tag is not None and shipped.tag < shipped.quarantine
    (tmp_path / "actions.toml").write_text("[thresholds]\ntag = 7.0\n")
    with pytest.raises(ConfigError) as info:
        load_policy(tmp_path, SHIPPED_RULES_DIR)
    assert info.value.problems == [
        "actions.toml: thresholds: tag must be a number not above quarantine (6.0)"
    ]
