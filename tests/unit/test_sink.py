"""`gateway sink` files what it receives into a Maildir, also one that exists but is empty."""

from __future__ import annotations

import asyncio
import mailbox
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import Envelope

from gateway.smtp.sink import MaildirHandler


def test_an_existing_empty_directory_becomes_a_maildir_that_keeps_each_message(
    tmp_path: Path,
) -> None:
    maildir = tmp_path / "maildir"
    maildir.mkdir()  # made by hand: mailbox.Maildir then left out tmp/new/cur
    handler = MaildirHandler(maildir)
    envelope = Envelope()
    envelope.mail_from = "a@sender.test"
    envelope.rcpt_tos = ["bob@example.test"]
    envelope.original_content = b"Subject: hi\r\n\r\nbody\r\n"
    unused: Any = None
    reply = asyncio.run(handler.handle_DATA(unused, unused, envelope))
    assert reply.startswith("250 ")
    [stored] = mailbox.Maildir(maildir).values()
    assert stored["Subject"] == "hi"
    assert stored["X-Sink-Envelope-To"] == "<bob@example.test>"
