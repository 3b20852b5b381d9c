"""`gateway sink`: a tiny SMTP server that files every message into a Maildir.

For trying the gateway without an internal mail server (`make run` starts one as the relay
target); not for production.
"""

from __future__ import annotations

import asyncio
import mailbox
import signal
import threading
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class MaildirHandler:
    def __init__(self, maildir: Path) -> None:
        # mailbox.Maildir makes tmp/new/cur only when the directory itself is new: given an
        # existing empty one, every message failed with FileNotFoundError.
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        self.maildir = mailbox.Maildir(maildir, create=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        header = (
            f"X-Sink-Envelope-From: <{envelope.mail_from}>\r\n"
            f"X-Sink-Envelope-To: {', '.join(f'<{r}>' for r in envelope.rcpt_tos)}\r\n"
        ).encode()
        key = await asyncio.to_thread(self.maildir.add, header + content)
        return f"250 2.0.0 Ok: stored as {key}"


def run_sink(host: str, port: int, maildir: Path) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    handler = MaildirHandler(maildir)
    controller = Controller(
        handler,
        hostname=host,
        port=port,
        decode_data=False,
        data_size_limit=100 * 1024 * 1024,
        enable_SMTPUTF8=True,
    )
    controller.start()
    print(f"sink: listening on {host}:{port}, filing mail into {maildir}/new", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
