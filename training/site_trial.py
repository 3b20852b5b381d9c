"""`python -m training.site_trial --corpus DIR [--train-share 0.7]`: an admin's path, measured.

Splits a labelled corpus (ham/ and spam/) by message hash into the part an admin would train on
and a later part, trains a model on the first part as the site's own mail (`python -m training
--corpus`, in a temp dir), and scans the later part through the gateway's pipeline at the
default policy with that model: how much of the later spam is quarantined or rejected, and
whether any later ham is. DNS-based checks are off (offline), so the figures are the content
checks' and the model's, as `gateway scan` gives them with DNS answering nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from gateway.config import SHIPPED_MODEL, config_from_dict
from gateway.mailsources import iter_messages
from gateway.model import Action
from gateway.pipeline.engine import Pipeline
from gateway.pipeline.registry import Services, build_checks
from gateway.pipeline.scoring import load_policy
from gateway.scan import ScanEnvelope, scan_bytes

OFFLINE = ("spf", "dkim", "arc", "dmarc", "dnsbl", "uribl", "antivirus")


def _later(raw: bytes, train_share: float) -> bool:
    return hashlib.sha256(raw).digest()[1] / 256 >= train_share


def _split(corpus: Path, train_share: float, into: Path) -> dict[str, list[bytes]]:
    """Writes the training part under `into` (ham/, spam/); returns the later part."""
    later: dict[str, list[bytes]] = {"ham": [], "spam": []}
    for label in later:
        (into / label).mkdir(parents=True)
        for n, message in enumerate(iter_messages(corpus / label, lambda path, why: None)):
            if _later(message.raw, train_share):
                later[label].append(message.raw)
            else:
                (into / label / f"{n:06d}.eml").write_bytes(message.raw)
    return later


def _pipeline(model: Path, storage: Path) -> Pipeline:
    config = config_from_dict(
        {
            "storage": {"dir": str(storage)},
            "checks": {
                **{name: {"enabled": False} for name in OFFLINE},
                "classifier": {"model": str(model)},
            },
        }
    )
    return Pipeline(build_checks(config, Services()), load_policy(config.rules_dir), 60.0)


def _scan(pipeline: Pipeline, label: str, messages: list[bytes]) -> str:
    actions: Counter[str] = Counter()
    tiers: Counter[str] = Counter()
    for raw in messages:
        verdict = asyncio.run(scan_bytes(pipeline, raw, ScanEnvelope()))
        actions[verdict.action.value] += 1
        tiers.update(s.name for s in verdict.symbols if s.name.startswith("ML_"))
        if label == "ham" and verdict.action in (Action.QUARANTINE, Action.REJECT):
            print(f"  ham held: {verdict.reason}: " + ", ".join(
                f"{s.name}({s.score:+.1f})" for s in verdict.symbols if s.score
            ))  # fmt: skip
    held = actions[Action.QUARANTINE.value] + actions[Action.REJECT.value]
    return (
        f"{len(messages)}; quarantined or rejected {held} ({held / max(1, len(messages)):.1%}); "
        f"actions {dict(actions)}; classifier {dict(tiers)}"
    )


def trial(corpus: Path, train_share: float) -> int:
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        later = _split(corpus, train_share, work / "mail")
        command = [sys.executable, "-m", "training", "--corpus", str(work / "mail")]
        done = subprocess.run([*command, "--out", str(work / "model")], check=False)
        if done.returncode != 0:
            return done.returncode
        for name, model in (
            ("trained", work / "model" / "classifier.skops"),
            ("shipped", SHIPPED_MODEL),
        ):
            pipeline = _pipeline(model, work / "var")
            for label, messages in later.items():
                print(f"{name} model, later {label}: {_scan(pipeline, label, messages)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.site_trial", description=__doc__)
    parser.add_argument("--corpus", type=Path, required=True, metavar="DIR")
    parser.add_argument("--train-share", type=float, default=0.7, metavar="S")
    args = parser.parse_args(argv)
    if not 0.0 < args.train_share < 1.0:
        parser.error("--train-share must be between 0 and 1")
    return trial(args.corpus, args.train_share)


if __name__ == "__main__":
    sys.exit(main())
