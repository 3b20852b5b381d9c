"""Ordinary mail of many kinds through the whole default pipeline: never refused for good.

`tests/data/ordinary_mail/` holds 75 legitimate messages written for a review of what an MX
really receives (Outlook with TNEF, Gmail, Apple Mail, lists, DSNs, read receipts, calendar
invites, S/MIME and PGP, office attachments, zips, SMTPUTF8 and non-Latin scripts, cron
mail...). Some are quarantined on content (see docs/measurements.md); none may be
rejected, deferred, or judged by a check that failed. Each of these once was: a zipped
screenshot and log file rejected as zip bombs, SMTPUTF8 From domains deferred for good.
"""

from __future__ import annotations

import asyncio
import email.utils
from pathlib import Path

from gateway.model import Action
from gateway.runtime import build_pipeline
from gateway.scan import ScanEnvelope, scan_bytes
from tests.support.dns_server import DnsTestServer
from tests.support.gateway_fixture import scan_config

MESSAGES = sorted((Path(__file__).parent.parent / "data" / "ordinary_mail").glob("*.eml"))
# A policy, not a mistake: scripts (.sh, .js) inside a zip are refused like bare ones.
REFUSED_BY_POLICY = {"47_zip_source_scripts.eml": "ATTACH_SCRIPT"}


def envelope_sender(raw: bytes) -> str:
    head = raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    for line in head.splitlines():
        if line.lower().startswith("from:"):
            return email.utils.parseaddr(line[5:])[1]
    return ""


def test_the_ordinary_mail_is_all_there() -> None:
    assert len(MESSAGES) == 75


def test_ordinary_mail_is_never_refused_deferred_or_judged_by_a_failed_check(
    dns_server: DnsTestServer, tmp_path: Path
) -> None:
    dns_server.set_zone(".", {})  # NXDOMAIN for every name
    config = scan_config(tmp_path, dns_server.address)
    pipeline = build_pipeline(config)
    problems = []
    for path in MESSAGES:
        raw = path.read_bytes()
        sender = envelope_sender(raw) if path.name[:2] not in ("10", "11", "12") else ""
        envelope = ScanEnvelope(
            "198.51.100.23", "mail.sender.example", sender, ("bob@example.org",)
        )
        verdict = asyncio.run(scan_bytes(pipeline, raw, envelope))
        errors = [s.name for s in verdict.symbols if s.name.endswith(("_ERROR", "TEMPERROR"))]
        refused = verdict.action in (Action.REJECT, Action.TEMPFAIL)
        forced = verdict.forced_by.name if verdict.forced_by else None
        if errors or (refused and forced != REFUSED_BY_POLICY.get(path.name)):
            problems.append(f"{path.name}: {verdict.action} {verdict.reason} {errors}")
    asyncio.run(pipeline.close())
    assert problems == []
