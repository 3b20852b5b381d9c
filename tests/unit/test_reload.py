"""SIGHUP reload: all rule files and scores are swapped in together, or none of them."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import numpy as np

from gateway.checks.brands import BrandCheck
from gateway.checks.classifier import ClassifierCheck, ClassifierModel
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


def test_reload_brings_in_new_brands(tmp_path: Path) -> None:
    runtime, rules = runtime_with_rules(tmp_path)
    check = next(c for c in runtime.pipeline.checks if isinstance(c, BrandCheck))
    assert check.data.brand_named("Fjordvann Water") is None
    with (rules / "brands.toml").open("a", encoding="utf-8") as handle:
        handle.write('\n[brand.fjordvann]\nnames = ["Fjordvann"]\ndomains = ["fjordvann.no"]\n')
    reload(runtime)
    check = next(c for c in runtime.pipeline.checks if isinstance(c, BrandCheck))
    found = check.data.brand_named("Fjordvann Water")
    assert found is not None and found[0].key == "fjordvann"


def runtime_with_model(tmp_path: Path, weight: float) -> tuple[Runtime, Path]:
    model = tmp_path / "classifier.skops"
    save_model(model, weight)
    config: Config = config_from_dict(
        {
            "storage": {"dir": str(tmp_path / "var")},
            "dns": {"nameservers": ["127.0.0.1:9"]},
            "checks": {
                "antivirus": {"enabled": False},
                # One known word is all this model has: judge on it (min_known_words 0).
                "classifier": {"model": str(model), "min_known_words": 0},
            },
        }
    )
    return Runtime(config), model


def save_model(path: Path, weight: float) -> None:
    """A one-feature model: the word "canary" pushes by `weight`."""
    stamp = time.time_ns() if not path.exists() else path.stat().st_mtime_ns + 10**9
    ClassifierModel(("w:canary",), np.array([weight]), 0.0, 1.0, 0.0).save(path)
    os.utime(path, ns=(stamp, stamp))  # a new file version even within one clock tick


def verdict(runtime: Runtime) -> list[str]:
    check = next(c for c in runtime.pipeline.checks if isinstance(c, ClassifierCheck))
    result = check.classify(b"From: a@example.org\nSubject: hi\n\ncanary canary\n")
    return [s.name for s in result.symbols]


def test_reload_loads_a_retrained_model(tmp_path: Path) -> None:
    runtime, model = runtime_with_model(tmp_path, weight=30.0)
    assert verdict(runtime) == ["ML_SPAM"]
    save_model(model, weight=-30.0)  # what `make train` does to the file
    reload(runtime)
    assert verdict(runtime) == ["ML_HAM"]


def test_a_broken_model_keeps_the_previous_one(tmp_path: Path) -> None:
    runtime, model = runtime_with_model(tmp_path, weight=30.0)
    before = runtime.pipeline.checks
    model.write_bytes(b"not a model")
    reload(runtime)
    assert runtime.pipeline.checks is before and verdict(runtime) == ["ML_SPAM"]
