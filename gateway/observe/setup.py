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


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # aiosmtpd logs every connection at INFO; our transaction line already says it all.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, logging.root.level))
    # libarchive-c says at import, at INFO, that Debian's libarchive lacks a feature we do not
    # use: a line before every CLI error that must be one line.
    logging.getLogger("libarchive").setLevel(max(logging.WARNING, logging.root.level))
