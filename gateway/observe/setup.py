"""Process-wide logging to stderr: transaction records as bare JSON lines (one per
transaction, for log shippers), everything else as plain timestamped lines."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
TRANSACTION_LOGGER = "gateway.transaction"


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.name == TRANSACTION_LOGGER:
            return record.getMessage()
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


def configure_logging(level: str, file: str = "") -> None:
    """Log to stderr, or to `file` (opened now: before the drop, as root, when so started)."""
    handler: logging.Handler
    if file:
        try:
            handler = _ReopenableFile(file, encoding="utf-8")
        except OSError as exc:
            from gateway.errors import GatewayError

            raise GatewayError(f"[log] file {file}: {exc.strerror or exc}") from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # aiosmtpd logs every connection at INFO; our transaction line already says it all.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, logging.root.level))
    # libarchive-c says at import, at INFO, that Debian's libarchive lacks a feature we do not
    # use: a line before every CLI error that must be one line.
    logging.getLogger("libarchive").setLevel(max(logging.WARNING, logging.root.level))


def reopen_log_files() -> None:
    """SIGUSR1: reopen [log] file (nothing to do on stderr)."""
    for handler in logging.root.handlers:
        if isinstance(handler, _ReopenableFile):
            handler.reopen()
