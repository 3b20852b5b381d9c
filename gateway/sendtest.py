"""`gateway send-test --gtube reject|quarantine HOST:PORT`: the ready deployment test.

Sends one small message carrying a GTUBE test string over real SMTP and prints every reply,
so an admin sees "554 5.7.1 ..." or "250 ... held as ..." rather than a traceback. Exit 0 when
the gateway did what the string asks for, 1 otherwise (refused earlier, accepted, unreachable).
"""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Callable
from email.utils import formatdate, make_msgid

from gateway.checks.gtube import GTUBE_QUARANTINE, GTUBE_REJECT

TIMEOUT_S = 30.0
GTUBE = {"reject": GTUBE_REJECT, "quarantine": GTUBE_QUARANTINE}


def gtube_message(kind: str, mail_from: str, rcpt: str) -> bytes:
    head = (
        f"From: <{mail_from}>\r\nTo: <{rcpt}>\r\nSubject: mailgate GTUBE test ({kind})\r\n"
        f"Date: {formatdate(usegmt=True)}\r\nMessage-ID: {make_msgid('gtube')}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    body = b"This message tests the mail gateway's spam handling.\r\n\r\n" + GTUBE[kind] + b"\r\n"
    return head.encode() + body


def send_test(
    kind: str,
    host: str,
    port: int,
    mail_from: str,
    rcpt: str,
    helo: str,
    say: Callable[[str], None] = print,
) -> int:
    """One SMTP transaction with the GTUBE string of `kind`; every reply goes to `say`."""
    try:
        with smtplib.SMTP(timeout=TIMEOUT_S, local_hostname=helo) as smtp:
            code, text = smtp.connect(host, port)
            say(f"connect {host}:{port}: {code} {_text(text)}")
            steps: list[tuple[str, Callable[[], tuple[int, bytes]]]] = [
                ("EHLO", lambda: smtp.ehlo(helo)),
                (f"MAIL FROM:<{mail_from}>", lambda: smtp.mail(mail_from)),
                (f"RCPT TO:<{rcpt}>", lambda: smtp.rcpt(rcpt)),
                ("DATA", lambda: smtp.data(gtube_message(kind, mail_from, rcpt))),
            ]
            for name, step in steps:
                code, text = step()
                say(f"{name}: {code} {_text(text).splitlines()[0] if text else ''}")
                if code >= 400:
                    break
            smtp.quit()
    except (OSError, smtplib.SMTPException) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        if isinstance(exc, socket.timeout | TimeoutError):
            reason = f"no reply within {TIMEOUT_S:g} s"
        say(f"send-test: {host}:{port}: {reason}")
        return 1
    expected = (name, code // 100) == ("DATA", 5 if kind == "reject" else 2)
    if kind == "quarantine" and b"held as" not in text:
        expected = False
    say(f"send-test: {'ok' if expected else 'NOT as expected'}: GTUBE {kind}")
    return 0 if expected else 1


def _text(text: bytes) -> str:
    return text.decode("utf-8", "replace")
