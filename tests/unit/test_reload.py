"""SIGHUP reload: all rule files and scores are swapped in together, or none of them."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from gateway.config import SHIPPED_RULES_DIR, Config, config_from_dict
from gateway.runtime import Runtime

NEW_RULE = """
[rule.RULE_BODY_RELOAD_TEST]
target = "body"
pattern = "reload canary"
score = 1.0
description = "added after start"
"""


def runtime_with_rules(tmp_path: Path) -> tuple[Runtime, Path]:
    rules = tmp_path / "rules"
    shutil.copytree(SHIPPED_RULES_DIR, rules)
    config: Config = config_from_dict(
        {
            "storage": {"dir": str(tmp_path / "var")},
            "pipeline": {"rules_dir": str(rules)},
            "dns": {"nameservers": ["127.0.0.1:9"]},
            "checks": {"antivirus": {"enabled": False}, "classifier": {"enabled": False}},
        }
    )
    return Runtime(config), rules


def emitted(runtime: Runtime) -> set[str]:
    return set().union(*(c.all_symbols() for c in runtime.pipeline.checks))


def reload(runtime: Runtime) -> None:
    async def go() -> None:
        runtime.reload_rules()

    asyncio.run(go())


def test_reload_brings_in_new_rules_and_their_scores(tmp_path: Path) -> None:
    runtime, rules = runtime_with_rules(tmp_path)
    with (rules / "body.toml").open("a", encoding="utf-8") as handle:
        handle.write(NEW_RULE)
    reload(runtime)
    assert "RULE_BODY_RELOAD_TEST" in emitted(runtime)
    assert runtime.pipeline.policy.symbols["RULE_BODY_RELOAD_TEST"].score == 1.0


def test_a_broken_file_keeps_every_previous_rule(tmp_path: Path) -> None:
    runtime, rules = runtime_with_rules(tmp_path)
    before_checks, before_policy = runtime.pipeline.checks, runtime.pipeline.policy
    with (rules / "body.toml").open("a", encoding="utf-8") as handle:
        handle.write(NEW_RULE)  # valid on its own ...
    (rules / "scores.toml").write_text("[symbol.BROKEN\n", encoding="utf-8")  # ... but this is not
    reload(runtime)
    assert runtime.pipeline.checks is before_checks
    assert runtime.pipeline.policy is before_policy
    assert "RULE_BODY_RELOAD_TEST" not in emitted(runtime)
