"""Process-wide logging: one format per stream ([log] format).

- "json": every line a JSON object, for log shippers. Transaction records are the bare record
  (one per transaction, as before); other lines are {"ts", "level", "logger", "pid", "msg"}.
- "text": readable lines for a terminal; a transaction is one short summary line.
- "auto" (default): "text" when stderr is a terminal, else "json".

With [log] syslog set ("/dev/log", or "host:port" over UDP) lines go to syslog (facility mail)
instead of stderr, in the chosen format.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from typing import Any

from gateway.errors import GatewayError

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
TRANSACTION_LOGGER = "gateway.transaction"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.name == TRANSACTION_LOGGER:
            return record.getMessage()
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        tx = getattr(record, "transaction", None)
        if record.name == TRANSACTION_LOGGER and isinstance(tx, dict):
            record = logging.makeLogRecord({**record.__dict__, "msg": summary(tx), "args": ()})
        return super().format(record)


class _ReopenableFile(logging.FileHandler):
    """[log] file: appended to; `reopen()` (SIGUSR1) starts writing to whatever file now has
    the name, after logrotate moved the old one away."""

    def reopen(self) -> None:
        self.acquire()
        try:
            old, self.stream = self.stream, self._open()
            if old is not None:
                old.close()
        finally:
            self.release()


def summary(tx: dict[str, Any]) -> str:
    """A transaction record as one readable line (the JSON form has everything)."""
    score = "-" if tx.get("score") is None else f"{tx['score']:.2f}"
    sender = "-" if tx.get("sender") is None else f"<{tx['sender']}>"
    symbols = ",".join(f"{s['name']}({s['score']:g})" for s in tx.get("symbols", [])) or "-"
    return (
        f"{tx.get('id')} {tx.get('outcome')} score={score} client={tx.get('client_ip')} "
        f"from={sender} to={','.join(tx.get('recipients', [])) or '-'} "
        f"reply={tx.get('reply')!r} symbols={symbols} {tx.get('total_s', 0):.3f}s"
    )


def configure_logging(level: str, fmt: str = "auto", syslog: str = "", file: str = "") -> None:
    """Log to syslog, else to `file` (opened now: before the privilege drop, as root, when so
    started), else to stderr, in format `fmt`."""
    handler: logging.Handler
    if syslog:
        try:
            handler = logging.handlers.SysLogHandler(
                address=_syslog_address(syslog),
                facility=logging.handlers.SysLogHandler.LOG_MAIL,
            )
        except OSError as exc:
            raise GatewayError(f"[log] syslog {syslog}: {exc.strerror or exc}") from None
    elif file:
        try:
            handler = _ReopenableFile(file, encoding="utf-8")
        except OSError as exc:
            raise GatewayError(f"[log] file {file}: {exc.strerror or exc}") from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    if fmt == "auto":
        fmt = "text" if not syslog and not file and sys.stderr.isatty() else "json"
    handler.setFormatter(TextFormatter() if fmt == "text" else JsonFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # aiosmtpd logs every connection at INFO; our transaction line already says it all.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, logging.root.level))
    # libarchive-c says at import, at INFO, that Debian's libarchive lacks a feature we do not
    # use: a line before every CLI error that must be one line.
    logging.getLogger("libarchive").setLevel(max(logging.WARNING, logging.root.level))


def reopen_log_files() -> None:
    """SIGUSR1: reopen [log] file (nothing to do on stderr or syslog)."""
    for handler in logging.root.handlers:
        if isinstance(handler, _ReopenableFile):
            handler.reopen()


def _syslog_address(value: str) -> str | tuple[str, int]:
    if value.startswith("/"):
        return value  # a local socket, e.g. /dev/log
    host, _, port = value.rpartition(":")
    return (host or value, int(port) if port.isdigit() else 514)
