import shutil
from pathlib import Path

import pytest

from gateway.config import SHIPPED_RULES_DIR, config_from_dict
from gateway.errors import ConfigError
from gateway.runtime import build_pipeline


def config_with_rules(tmp_path: Path, scores_extra: str = "", actions_extra: str = ""):
    rules = tmp_path / "rules"
    shutil.copytree(SHIPPED_RULES_DIR, rules)
    with (rules / "scores.toml").open("a", encoding="utf-8") as f:
        f.write(scores_extra)
    with (rules / "actions.toml").open("a", encoding="utf-8") as f:
        f.write(actions_extra)
    return config_from_dict(
        {
            "pipeline": {"rules_dir": str(rules)},
            "dns": {"nameservers": ["127.0.0.1:9"]},
            "checks": {"antivirus": {"enabled": False}},
        }
    )


def test_shipped_rules_have_no_typos(tmp_path: Path) -> None:
    assert build_pipeline(config_with_rules(tmp_path)).checks


def test_a_misspelt_score_is_reported(tmp_path: Path) -> None:
    config = config_with_rules(tmp_path, "\n[symbol.HDR_MISING_DATE]\nscore = 1.0\n")
    with pytest.raises(ConfigError) as info:
        build_pipeline(config)
    assert info.value.problems == [
        "scores.toml: symbol HDR_MISING_DATE is scored but no check emits it"
    ]


def test_symbols_of_disabled_checks_and_lists_are_not_typos(tmp_path: Path) -> None:
    # AV_* (antivirus off here) and DNSBL_* (every shipped list off) stay in scores.toml.
    pipeline = build_pipeline(config_with_rules(tmp_path))
    assert "AV_VIRUS" not in pipeline.policy.symbols
