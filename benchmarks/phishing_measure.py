"""Measure the phishing checks (issue 27): every message of the given directories through the
default pipeline as `gateway scan` runs it, DNS answering NXDOMAIN (a loopback test server),
`[relay] domains = ["example.org"]`. Prints, per directory, how many messages were quarantined
or rejected, and how often each phishing symbol fired.

    .venv/bin/python -m benchmarks.phishing_measure tests/data/phishing tests/data/brand_mail \
        tests/data/ordinary_mail training/probes/ham training/probes/spam [--list]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections import Counter
from pathlib import Path

from gateway.config import config_from_dict
from gateway.model import Action
from gateway.runtime import build_pipeline
from gateway.scan import ScanEnvelope, scan_bytes
from tests.integration.test_ordinary_mail import envelope_sender
from tests.support.dns_server import DnsTestServer

PHISHING_PREFIXES = ("BRAND_", "LOOKALIKE_", "LINK_", "HARVEST_", "SENDER_")


def return_path(raw: bytes) -> str:
    head = raw.split(b"\n\n", 1)[0].decode("utf-8", "replace")
    for line in head.splitlines():
        if line.lower().startswith("return-path:"):
            return line.split(":", 1)[1].strip().strip("<>")
    return envelope_sender(raw)


async def measure(dirs: list[Path], listing: bool, disabled: list[str]) -> None:
    server = DnsTestServer().start()
    server.set_zone(".", {})  # NXDOMAIN for every name
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = config_from_dict(
                {
                    "storage": {"dir": tmp},
                    "relay": {"domains": ["example.org"]},
                    "dns": {"nameservers": [server.address], "timeout_s": 0.5, "lifetime_s": 1.0},
                    "checks": {
                        "antivirus": {"enabled": False},
                        **{name: {"enabled": False} for name in disabled},
                    },
                }
            )
            pipeline = build_pipeline(config)
            for directory in dirs:
                paths = sorted(directory.glob("*.eml"))
                held = 0
                fired: Counter[str] = Counter()
                for path in paths:
                    raw = path.read_bytes()
                    envelope = ScanEnvelope(
                        "198.51.100.23",
                        "mail.sender.example",
                        return_path(raw),
                        ("anna.berg@example.org",),
                    )
                    verdict = await scan_bytes(pipeline, raw, envelope)
                    is_held = verdict.action in (Action.QUARANTINE, Action.REJECT)
                    held += is_held
                    ours = [s for s in verdict.symbols if s.name.startswith(PHISHING_PREFIXES)]
                    fired.update({s.name for s in ours})
                    if listing:
                        names = " ".join(f"{s.name}" for s in verdict.symbols)
                        action, score = verdict.action.value, verdict.score
                        print(f"  {path.name[:44]:44} {action:10} {score:6.1f} {names}")
                print(f"{directory}: {held}/{len(paths)} quarantined or rejected")
                for name, count in sorted(fired.items()):
                    print(f"    {name:32} {count}")
            await pipeline.close()
    finally:
        server.stop()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    # --disable=brand,link: measure without those checks (what each one adds)
    off = [a.partition("=")[2] for a in sys.argv[1:] if a.startswith("--disable=")]
    names = [name for value in off for name in value.split(",") if name]
    asyncio.run(measure([Path(a) for a in args], "--list" in sys.argv, names))
