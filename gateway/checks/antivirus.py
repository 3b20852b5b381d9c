"""Antivirus: the whole message goes to clamd (INSTREAM), which decodes MIME and archives.

A scanner failure raises ScannerError, which the runner turns into AV_ERROR and, with the
default `on_error = "tempfail"`, into a 451: a message is never passed unscanned in silence.
"""

from __future__ import annotations

from gateway.model import CheckResult, OnError, Phase, Symbol, Transaction
from gateway.net.clamd import ClamdClient, ScanStatus
from gateway.pipeline.check import Check

# ClamAV reports "could not look inside" as detections with these prefixes (AlertExceedsMax,
# AlertEncrypted*): not a virus, but not known clean either.
# Without AlertExceedsMax clamd says "OK" about a file over MaxFileSize it skipped: the
# attachments check, which lists archives, reports such entries as AV_UNSCANNABLE itself
# ([checks.antivirus] max_file_bytes, docs/clamd.md).
UNSCANNABLE_PREFIXES = ("Heuristics.Limits.Exceeded", "Heuristics.Encrypted")
_RUNNER_GRACE_S = 1.0


class AntivirusCheck(Check):
    name = "antivirus"
    phase = Phase.DATA
    symbols = frozenset({"AV_VIRUS", "AV_UNSCANNABLE", "AV_OVERSIZE"})

    def __init__(
        self,
        client: ClamdClient,
        max_scan_bytes: int,
        on_error: OnError = OnError.TEMPFAIL,
        max_file_bytes: int | None = None,
    ) -> None:
        # The client's own deadline fires first, with a reason that names clamd's address.
        super().__init__(client.timeout_s + _RUNNER_GRACE_S, on_error)
        self.client = client
        self.max_scan_bytes = max_scan_bytes
        self.max_file_bytes = max_file_bytes  # clamd's MaxFileSize, which the stream obeys too

    @property
    def error_symbol(self) -> str:
        return "AV_ERROR"  # the AV_ prefix of this check's symbols, not ANTIVIRUS_

    async def run(self, tx: Transaction) -> CheckResult:
        size = len(tx.raw)
        if size > self.max_scan_bytes:
            reason = f"size={size} max_scan_bytes={self.max_scan_bytes}"
            return self.result(Symbol("AV_OVERSIZE", reason))
        if self.max_file_bytes is not None and size > self.max_file_bytes:
            # clamd would skip the whole stream as one file over MaxFileSize and say "OK".
            reason = f"size={size} max_file_bytes={self.max_file_bytes}"
            return self.result(Symbol("AV_UNSCANNABLE", reason))
        scan = await self.client.instream(tx.raw)
        if scan.status == ScanStatus.TOO_LARGE:
            reason = f"size={size} exceeds clamd StreamMaxLength at {self.client.address}"
            return self.result(Symbol("AV_OVERSIZE", reason))
        if scan.status == ScanStatus.FOUND:
            if scan.signature.startswith(UNSCANNABLE_PREFIXES):
                return self.result(Symbol("AV_UNSCANNABLE", scan.signature))
            return self.result(Symbol("AV_VIRUS", scan.signature))
        return self.result()
