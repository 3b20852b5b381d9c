"""One reading of every message, proved differentially: hostile variants of one message with
an attachment (tests/support/mime_variants.py) are read by the gateway's checks and by two
independent readers, a real clamd (does it decode the EICAR payload?) and a header reader
written to Postfix's is_header() rule. Wherever clamd decodes the payload, the checks must not
let the message through; wherever Postfix would read other header fields, that is a failure.

`python -m tests.integration.test_one_reading --seconds 600` runs the same comparison for as
long as asked, with random seeds, and prints every variant that got through.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

from gateway.config import SHIPPED_RULES_DIR, config_from_dict
from gateway.model import Action, Phase
from gateway.net.clamd import ClamdClient, ScanStatus, parse_address
from gateway.pipeline.engine import Pipeline
from gateway.pipeline.registry import Services, build_checks
from gateway.pipeline.scoring import load_policy
from tests.support.attachments_mail import transaction
from tests.support.clamd_fixture import EICAR, ClamdServer, start_clamd, stop_clamd
from tests.support.gateway_fixture import only_checks
from tests.support.mime_variants import Draft, postfix_header_fields, variant

VARIANTS = 150  # in `make test`; the fuzz command runs as many as time allows


def _pipeline() -> Pipeline:
    config = config_from_dict({"checks": only_checks("headers", "mime", "attachments")})
    return Pipeline(build_checks(config, Services()), load_policy(SHIPPED_RULES_DIR), 30.0)


def _clamd_decodes(client: ClamdClient, raw: bytes) -> bool:
    return asyncio.run(client.instream(raw)).status == ScanStatus.FOUND


def disagreement(draft: Draft, pipeline: Pipeline, client: ClamdClient) -> str | None:
    """What the checks missed of `draft` that another reader saw, or None."""
    raw = draft.raw()
    tx = transaction(raw)
    ours = [name.lower() for name in tx.message]
    theirs = [name for name, _ in postfix_header_fields(raw)]
    if ours != theirs:
        return f"{draft.tricks}: header fields {ours} where Postfix reads {theirs}"
    if not _clamd_decodes(client, raw):
        return None
    outcome = asyncio.run(pipeline.run_phase(Phase.DATA, tx, final=True))
    if outcome.verdict.action == Action.ACCEPT:
        names = [s.name for s in outcome.verdict.symbols]
        return f"{draft.tricks}: clamd decodes the attachment, the checks accept ({names})"
    return None


def test_what_clamd_and_postfix_read_the_checks_read(clamd_server: ClamdServer) -> None:
    client = ClamdClient(parse_address(clamd_server.address), 10.0)
    pipeline = _pipeline()
    rng = random.Random(31)
    drafts = [variant(rng, EICAR) for _ in range(VARIANTS)]
    found = [d for d in drafts if _clamd_decodes(client, d.raw())]
    # The oracle must see the payload in most variants, or the comparison proves nothing.
    assert len(found) >= VARIANTS // 2
    failures = [f for d in drafts if (f := disagreement(d, pipeline, client))]
    assert failures == []


def test_the_plain_message_is_rejected_for_its_attachment() -> None:
    raw = Draft(EICAR).raw()
    outcome = asyncio.run(_pipeline().run_phase(Phase.DATA, transaction(raw), final=True))
    assert outcome.verdict.action == Action.REJECT
    assert "ATTACH_EXECUTABLE" in [s.name for s in outcome.verdict.symbols]


def _fuzz(seconds: float, seed: int) -> int:
    with tempfile.TemporaryDirectory() as directory:
        server, process = start_clamd(Path(directory))
        try:
            client = ClamdClient(parse_address(server.address), 10.0)
            pipeline = _pipeline()
            rng = random.Random(seed)
            deadline = time.monotonic() + seconds
            tried = failed = 0
            while time.monotonic() < deadline:
                tried += 1
                draft = variant(rng, EICAR)
                if (failure := disagreement(draft, pipeline, client)) is not None:
                    failed += 1
                    print(failure)
        finally:
            stop_clamd(process)
    print(f"{tried} variants, {failed} disagreements (seed {seed})")
    return 1 if failed else 0


if __name__ == "__main__":
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--seconds", type=float, default=60.0)
    arguments.add_argument("--seed", type=int, default=random.randrange(2**32))
    options = arguments.parse_args()
    sys.exit(_fuzz(options.seconds, options.seed))
