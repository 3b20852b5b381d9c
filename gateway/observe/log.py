"""One structured JSON log line per SMTP transaction (logger `gateway.transaction`).

A transaction ends with a reply to DATA, or earlier: refused at connect, HELO, MAIL or RCPT,
or abandoned (RSET, QUIT, new EHLO, disconnect) after MAIL. Every such end logs exactly one
line, so every decision can be explained from the log alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from gateway.model import CheckResult, Connection, Verdict
from gateway.observe import metrics

log = logging.getLogger("gateway.transaction")


@dataclass(slots=True)
class TransactionRecord:
    id: str
    client_ip: str
    client_port: int
    helo: str
    tls: bool
    sender: str | None  # None: no MAIL FROM yet; "" is the null sender
    recipients: list[str]
    refused_recipients: list[dict[str, str]]  # {"rcpt": ..., "reply": ...}
    outcome: str  # an Action value, or "abandoned"
    reply: str
    score: float | None
    reason: str
    symbols: list[dict[str, Any]]  # name, score, reason, check
    size: int
    check_times_s: dict[str, float]
    total_s: float
    queue_id: str = ""
    quarantine_id: str = ""
    refused_recipients_omitted: int = 0  # refusals beyond those listed (a bounded line)


def verdict_fields(verdict: Verdict | None) -> dict[str, Any]:
    """score, reason and symbols of a verdict (empty when no phase ran)."""
    if verdict is None:
        return {"score": None, "reason": "", "symbols": []}
    return {
        "score": verdict.score,
        "reason": verdict.reason,
        "symbols": [s.to_json() for s in verdict.symbols],
    }


def check_times(results: Iterable[CheckResult]) -> dict[str, float]:
    return {r.check: round(r.elapsed_s, 6) for r in results}


def connection_fields(connection: Connection) -> dict[str, Any]:
    return {
        "client_ip": connection.client_ip,
        "client_port": connection.client_port,
        "helo": connection.helo,
        "tls": connection.tls,
    }


def log_transaction(record: TransactionRecord) -> None:
    """Emit the record as one JSON line; also attached as `record.transaction` for handlers."""
    metrics.transaction(record.outcome, record.symbols, record.check_times_s)
    if not log.isEnabledFor(logging.INFO):
        return  # nobody would see it: not worth the JSON
    # Shallow: the record holds plain lists and dicts already (asdict deep-copies, slowly).
    data = {f.name: getattr(record, f.name) for f in fields(record)}
    # ASCII escapes keep client bytes that were not UTF-8 (surrogates) from breaking a handler.
    log.info(json.dumps(data, separators=(",", ":")), extra={"transaction": data})
