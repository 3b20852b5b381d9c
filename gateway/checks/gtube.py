"""The GTUBE test strings admins use to check a deployment: one rejects, one quarantines."""

from __future__ import annotations

from gateway.model import CheckResult, Phase, Symbol, Transaction
from gateway.pipeline.check import Check

GTUBE_REJECT = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_QUARANTINE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-QUARANTINE*C.34X"


class GtubeCheck(Check):
    name = "gtube"
    phase = Phase.DATA
    symbols = frozenset({"GTUBE_REJECT", "GTUBE_QUARANTINE"})

    async def run(self, tx: Transaction) -> CheckResult:
        # Searched in the raw bytes, as SpamAssassin does for the plain-text test message.
        if GTUBE_REJECT in tx.raw:
            return self.result(Symbol("GTUBE_REJECT", "GTUBE reject test string found"))
        if GTUBE_QUARANTINE in tx.raw:
            return self.result(Symbol("GTUBE_QUARANTINE", "GTUBE quarantine test string found"))
        return self.result()
