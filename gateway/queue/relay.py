"""One reusable SMTP connection to the internal server: send a message, probe a recipient.

Every reply or failure becomes a RecipientOutcome, so the delivery side never sees a protocol
exception. The SMTP itself (pipelining, STARTTLS, bounded reads) is in smtp_client.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.config import RelayConfig
from gateway.queue.retry import RecipientOutcome
from gateway.queue.smtp_client import (
    Refused,
    Reply,
    SmtpClient,
    SmtpClientError,
    TlsFailed,
    TlsMode,
)

log = logging.getLogger(__name__)

ProbeResult = Literal["ok", "unknown", "unavailable"]
QUIT_TIMEOUT_S = 5.0


def _outcome(reply: Reply) -> RecipientOutcome:
    if 500 <= reply.code < 600:
        return RecipientOutcome("permanent", str(reply))
    return RecipientOutcome("temporary", str(reply))


@dataclass(frozen=True, slots=True)
class DsnParameters:
    """The client's RFC 3461 parameters in wire form (xtext encoded), relayed only to a server
    that offers DSN: an internal server without it would refuse them (555)."""

    mail: tuple[str, ...] = ()  # RET=, ENVID=
    rcpts: tuple[tuple[str, ...], ...] = ()  # NOTIFY=, ORCPT= of each recipient, in order


class _Stale(Exception):
    """A reused connection turned out to be gone (or 421) before the message was sent."""


class RelayConnection:
    """An SMTP client session kept open between messages. RSET only when the last transaction
    did not end with a 250 to its data (a probe, a refusal, an error): after that reply the
    server has reset itself (RFC 5321 4.1.1.4), and an RSET would only cost a round trip. Not
    every server does after a refused end of data (aiosmtpd keeps the envelope when its
    handler fails), and a 503 to MAIL on a reused connection means it is out of step: the
    message is tried once more on a new connection, not bounced."""

    def __init__(self, relay: RelayConfig, hostname: str) -> None:
        self.relay = relay
        self.hostname = hostname
        self._client: SmtpClient | None = None
        self._in_transaction = False  # MAIL sent, and no final reply to the data or RSET since

    @property
    def target(self) -> str:
        return f"{self.relay.host}:{self.relay.port}"

    async def _ready(self) -> tuple[SmtpClient, bool]:
        """A connected client with no open transaction, and whether it is a reused one;
        reconnects when the old one died."""
        client = self._client
        if client is not None and client.is_connected:
            if not self._in_transaction:
                return client, True
            try:
                if (await client.command("RSET")).code == 250:
                    self._in_transaction = False
                    return client, True
            except SmtpClientError:
                pass
        await self.close()
        try:
            self._client = await self._connect(self.relay.tls)
        except TlsFailed as exc:
            if self.relay.tls != "opportunistic":
                raise
            # As Postfix does at security level "may": TLS was a bonus, the mail is not.
            log.warning("relay: %s: %s; delivering without TLS", self.target, exc)
            self._client = await self._connect("none")
        return self._client, False

    async def _connect(self, tls: TlsMode) -> SmtpClient:
        return await SmtpClient.connect(
            self.relay.host,
            self.relay.port,
            self.hostname,
            self.relay.timeout_s,
            tls=tls,
            tls_verify=self.relay.tls_verify,
        )

    async def send(
        self,
        mail_from: str,
        recipients: Sequence[str],
        data: bytes,
        smtputf8: bool = False,
        dsn: DsnParameters | None = None,
    ) -> list[RecipientOutcome]:
        """Relay `data` byte-for-byte; one outcome per recipient, in order."""
        message = (mail_from, recipients, data, smtputf8, dsn)
        try:
            client, reused = await self._ready()
            try:
                return await self._on(client, reused, *message)
            except _Stale:  # a reused connection gone since its last message: once more, anew
                await self.close()
                client, _ = await self._ready()
                return await self._on(client, False, *message)
        except Refused as exc:
            # The server turned the session away (greeting, EHLO, STARTTLS): a 5xx there says
            # nothing about the recipients, so it defers like Postfix (smtp_skip_5xx_greeting).
            await self.close()
            reason = f"{self.target} refused the session: {exc.reply}"
            return [RecipientOutcome("temporary", reason)] * len(recipients)
        except SmtpClientError as exc:
            await self.close()
            reason = f"connection to {self.target} failed: {exc}"
            return [RecipientOutcome("temporary", reason)] * len(recipients)

    async def _on(
        self,
        client: SmtpClient,
        reused: bool,
        mail_from: str,
        recipients: Sequence[str],
        data: bytes,
        smtputf8: bool,
        dsn: DsnParameters | None,
    ) -> list[RecipientOutcome]:
        encoding = "ascii"
        options: list[str] = []
        if smtputf8:
            if not client.supports("smtputf8"):
                reason = f"{self.target} does not offer SMTPUTF8, which the envelope needs"
                return [RecipientOutcome("permanent", f"550 5.6.7 {reason}")] * len(recipients)
            options.append("SMTPUTF8")
            encoding = "utf-8"
        if not data.isascii() and client.supports("8bitmime"):
            options.append("BODY=8BITMIME")
        if client.supports("size"):
            options.append(f"SIZE={len(data)}")
        dsn_passed = dsn is not None and client.supports("dsn")
        rcpt_options: tuple[tuple[str, ...], ...] = ()
        if dsn is not None and dsn_passed:
            options += dsn.mail
            rcpt_options = dsn.rcpts
        self._in_transaction = True
        try:
            replies = await client.transaction(
                mail_from, options, recipients, encoding, rcpt_options
            )
        except SmtpClientError as exc:
            # A reused connection the server dropped since its last message: nothing of the
            # message was sent yet, so once more on a new one.
            if reused:
                raise _Stale from exc
            raise
        if not replies.mail.positive:
            if reused and replies.mail.code in (421, 503):
                raise _Stale
            if replies.mail.code == 421:
                await self.close()
            return [_outcome(replies.mail)] * len(recipients)
        outcomes = [None if r.positive else _outcome(r) for r in replies.rcpts]
        if replies.data is None or replies.data.code != 354:
            # No recipient left, or DATA refused: the transaction stays open until RSET.
            if replies.data is not None and any(o is None for o in outcomes):
                refused = _outcome(replies.data)
                return [o if o is not None else refused for o in outcomes]
            return [o for o in outcomes if o is not None]
        final = await client.send_data(data, self.relay.data_timeout_s)
        self._in_transaction = not final.positive
        verdict = (
            RecipientOutcome("delivered", str(final), dsn_passed=dsn_passed)
            if final.positive
            else _outcome(final)
        )
        return [o if o is not None else verdict for o in outcomes]

    async def probe(self, mail_from: str, rcpt: str) -> tuple[ProbeResult, str]:
        """Would the internal server accept `rcpt`? MAIL + RCPT only; the next use resets."""
        encoding = "ascii" if (mail_from + rcpt).isascii() else "utf-8"
        try:
            client, _ = await self._ready()
            if encoding == "utf-8" and not client.supports("smtputf8"):
                return "unavailable", f"{self.target} does not offer SMTPUTF8"
            options = ["SMTPUTF8"] if encoding == "utf-8" else []
            self._in_transaction = True
            mail = await client.command(" ".join([f"MAIL FROM:<{mail_from}>", *options]), encoding)
            if not mail.positive:
                return "unavailable", str(mail)
            reply = await client.command(f"RCPT TO:<{rcpt}>", encoding)
        except (Refused, SmtpClientError) as exc:
            await self.close()
            return "unavailable", f"probe via {self.target} failed: {exc}"
        if reply.positive:
            return "ok", str(reply)
        return ("unknown" if 500 <= reply.code < 600 else "unavailable"), str(reply)

    async def close(self) -> None:
        client, self._client = self._client, None
        self._in_transaction = False
        if client is None:
            return
        if not client.is_connected:
            client.close()
            return
        client.timeout_s = min(client.timeout_s, QUIT_TIMEOUT_S)
        await client.quit()
