"""An admin's rule files over the shipped ones: upgrades do not stop the gateway (issue 32)."""

import re
import shutil
from pathlib import Path

import pytest

from gateway import cli
from gateway.config import SHIPPED_RULES_DIR, config_from_dict
from gateway.errors import ConfigError
from gateway.model import Action
from gateway.runtime import build_pipeline

OFFLINE = {"dns": {"nameservers": ["127.0.0.1:9"]}, "checks": {"antivirus": {"enabled": False}}}


def config_for(rules: Path):
    return config_from_dict({"pipeline": {"rules_dir": str(rules)}, **OFFLINE})


def drop_table(text: str, header: str) -> str:
    """`text` without the TOML table `[header]` (up to the next table)."""
    return re.sub(rf"^\[{re.escape(header)}\]\n(?:(?!\[).*\n)*", "", text, flags=re.M)


def test_a_copy_from_before_a_new_symbol_still_starts_with_its_shipped_score(
    tmp_path: Path,
) -> None:
    """The README's old advice: copy rules/ next to the config. The next release adds a
    symbol (as ML_NOT_JUDGED was added) that the copy lacks; the gateway still starts."""
    rules = tmp_path / "rules"
    shutil.copytree(SHIPPED_RULES_DIR, rules)
    scores = (rules / "scores.toml").read_text()
    old = drop_table(scores, "symbol.ML_NOT_JUDGED")
    assert old != scores
    (rules / "scores.toml").write_text(old)
    pipeline = build_pipeline(config_for(rules))
    assert pipeline.policy.symbols["ML_NOT_JUDGED"].score == 0.0
    assert "ML_NOT_JUDGED" in pipeline.policy.inherited


def test_local_files_hold_only_what_the_admin_changed(tmp_path: Path) -> None:
    (tmp_path / "scores.toml").write_text("[symbol.HDR_MISSING_DATE]\nscore = 2.5\n")
    (tmp_path / "actions.toml").write_text(
        '[thresholds]\nquarantine = 5.0\n[forced]\nSPF_TEMPERROR = "none"\n'
    )
    policy = build_pipeline(config_for(tmp_path)).policy
    assert policy.symbols["HDR_MISSING_DATE"].score == 2.5
    assert policy.symbols["HDR_MISSING_DATE"].group == "headers"  # the rest of the entry stays
    assert policy.symbols["HDR_MISSING_FROM"].score == 3.0  # not mentioned: shipped
    assert (policy.thresholds.quarantine, policy.thresholds.reject) == (5.0, 15.0)
    assert "SPF_TEMPERROR" not in policy.forced
    assert policy.forced["DMARC_REJECT"].action == Action.REJECT


def test_a_misspelt_local_score_is_still_an_error(tmp_path: Path) -> None:
    (tmp_path / "scores.toml").write_text("[symbol.HDR_MISING_DATE]\nscore = 1.0\n")
    with pytest.raises(ConfigError) as info:
        build_pipeline(config_for(tmp_path))
    assert info.value.problems == [
        "scores.toml: symbol HDR_MISING_DATE is scored but no check emits it"
    ]


def test_check_config_lists_what_the_local_files_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A short config in its own directory (no rules copied) is valid; the one changed score
    and threshold are listed with their shipped values."""
    path = tmp_path / "gateway.toml"
    path.write_text('[relay]\ndomains = ["example.test"]\n[checks.antivirus]\nenabled = false\n')
    assert cli.main(["check-config", "--config", str(path)]) == 0
    assert f"local {tmp_path}: none" in capsys.readouterr().out
    (tmp_path / "scores.toml").write_text(
        "[symbol.HDR_MISSING_DATE]\nscore = 2.5\n[symbol.HDR_MISSING_FROM]\nscore = 3.0\n"
    )
    (tmp_path / "actions.toml").write_text("[thresholds]\nquarantine = 5.0\n")
    assert cli.main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"rules: shipped {SHIPPED_RULES_DIR}; local {tmp_path}: actions.toml, scores.toml" in out
    assert "  override scores.toml: symbol.HDR_MISSING_DATE: score 2.5 (shipped: score 1.0)" in out
    assert "  override scores.toml: 1 entries equal to the shipped ones (may be deleted)" in out
    assert "  override actions.toml: thresholds.quarantine: 5.0 (shipped: 6.0)" in out
