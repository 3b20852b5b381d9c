"""One reusable SMTP connection to the internal server: send a message, probe a recipient.

The only module that talks aiosmtplib. Every reply or failure becomes a RecipientOutcome, so
the delivery side never sees a third-party exception.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import aiosmtplib

from gateway.config import RelayConfig
from gateway.queue.retry import RecipientOutcome

log = logging.getLogger(__name__)

ProbeResult = Literal["ok", "unknown", "unavailable"]
_TLS_MODE: dict[str, bool | None] = {"opportunistic": None, "required": True, "none": False}


def _reply(exc: aiosmtplib.SMTPResponseException) -> RecipientOutcome:
    reply = f"{exc.code} {exc.message}"
    if 500 <= exc.code < 600:
        return RecipientOutcome("permanent", reply)
    return RecipientOutcome("temporary", reply)


class _Stale(Exception):
    """MAIL failed on a reused connection because the connection was gone."""


def _went_stale(exc: aiosmtplib.SMTPException) -> bool:
    return isinstance(exc, aiosmtplib.SMTPServerDisconnected) or (
        isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code == 421
    )


class RelayConnection:
    """An SMTP client session kept open between messages. RSET only when the last transaction
    did not end with the 250 to its data (a probe, a refusal, an error): after that 250 the
    server has reset itself (RFC 5321 4.1.1.4), and an RSET would only cost a round trip."""

    def __init__(self, relay: RelayConfig, hostname: str) -> None:
        self.relay = relay
        self.hostname = hostname
        self._client: aiosmtplib.SMTP | None = None
        self._in_transaction = False  # MAIL sent, and no 250 to DATA or RSET since

    @property
    def target(self) -> str:
        return f"{self.relay.host}:{self.relay.port}"

    async def _ready(self) -> tuple[aiosmtplib.SMTP, bool]:
        """A connected client with no open transaction, and whether it is a reused one;
        reconnects when the old one died."""
        if self._client is not None and self._client.is_connected:
            if not self._in_transaction:
                return self._client, True
            try:
                await self._client.rset()
                self._in_transaction = False
                return self._client, True
            except aiosmtplib.SMTPException:
                await self.close()
        client = aiosmtplib.SMTP(
            hostname=self.relay.host,
            port=self.relay.port,
            local_hostname=self.hostname,
            timeout=self.relay.timeout_s,
            start_tls=_TLS_MODE[self.relay.tls],
            validate_certs=self.relay.tls_verify,
        )
        await client.connect()
        await client.ehlo()
        self._client = client
        return client, False

    async def send(
        self, mail_from: str, recipients: Sequence[str], data: bytes, smtputf8: bool = False
    ) -> list[RecipientOutcome]:
        """Relay `data` byte-for-byte; one outcome per recipient, in order."""
        try:
            return await self._transaction(mail_from, recipients, data, smtputf8)
        except aiosmtplib.SMTPResponseException as exc:
            # A refusal of the whole transaction (greeting, EHLO, MAIL, DATA) applies to all.
            if exc.code == 421 or not self._client or not self._client.is_connected:
                await self.close()
            return [_reply(exc)] * len(recipients)
        except (aiosmtplib.SMTPException, OSError) as exc:
            await self.close()
            reason = f"connection to {self.target} failed: {exc or type(exc).__name__}"
            return [RecipientOutcome("temporary", reason)] * len(recipients)

    async def _transaction(
        self, mail_from: str, recipients: Sequence[str], data: bytes, smtputf8: bool
    ) -> list[RecipientOutcome]:
        client, reused = await self._ready()
        try:
            return await self._on(client, reused, mail_from, recipients, data, smtputf8)
        except _Stale:
            await self.close()
        client, _ = await self._ready()
        return await self._on(client, False, mail_from, recipients, data, smtputf8)

    async def _on(
        self,
        client: aiosmtplib.SMTP,
        reused: bool,
        mail_from: str,
        recipients: Sequence[str],
        data: bytes,
        smtputf8: bool,
    ) -> list[RecipientOutcome]:
        encoding = "ascii"
        options: list[str] = []
        if smtputf8:
            if not client.supports_extension("smtputf8"):
                reason = f"{self.target} does not offer SMTPUTF8, which the envelope needs"
                return [RecipientOutcome("permanent", f"550 5.6.7 {reason}")] * len(recipients)
            options.append("SMTPUTF8")
            encoding = "utf-8"
        if not data.isascii() and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        if client.supports_extension("size"):
            options.append(f"SIZE={len(data)}")
        self._in_transaction = True
        try:
            await client.mail(mail_from, options=options, encoding=encoding)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPResponseException) as exc:
            # A reused connection the server dropped or timed out (421) since its last
            # message, as the RSET this replaces would have found: MAIL once more on a new
            # one. Nothing of the message was sent yet.
            if reused and _went_stale(exc):
                raise _Stale from exc
            raise
        outcomes: list[RecipientOutcome | None] = []
        for rcpt in recipients:
            try:
                await client.rcpt(rcpt, encoding=encoding)
                outcomes.append(None)  # accepted so far; decided by the reply to DATA
            except aiosmtplib.SMTPRecipientRefused as exc:
                outcomes.append(_reply(exc))
        if all(o is not None for o in outcomes):
            await client.rset()
            self._in_transaction = False
            return [o for o in outcomes if o is not None]
        try:
            response = await client.data(data)
        except aiosmtplib.SMTPDataError as exc:
            refused = _reply(exc)  # only for the recipients the server had accepted
            return [o if o is not None else refused for o in outcomes]
        self._in_transaction = False
        delivered = RecipientOutcome("delivered", f"{response.code} {response.message}")
        return [o if o is not None else delivered for o in outcomes]

    async def probe(self, mail_from: str, rcpt: str) -> tuple[ProbeResult, str]:
        """Would the internal server accept `rcpt`? MAIL + RCPT only; the next use resets."""
        encoding = "ascii" if (mail_from + rcpt).isascii() else "utf-8"
        try:
            client, _ = await self._ready()
            if encoding == "utf-8" and not client.supports_extension("smtputf8"):
                return "unavailable", f"{self.target} does not offer SMTPUTF8"
            options = ["SMTPUTF8"] if encoding == "utf-8" else []
            self._in_transaction = True
            await client.mail(mail_from, options=options, encoding=encoding)
            try:
                response = await client.rcpt(rcpt, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                result: ProbeResult = "unknown" if 500 <= exc.code < 600 else "unavailable"
                return result, f"{exc.code} {exc.message}"
            return "ok", f"{response.code} {response.message}"
        except (aiosmtplib.SMTPException, OSError) as exc:
            await self.close()
            return "unavailable", f"probe via {self.target} failed: {exc or type(exc).__name__}"

    async def close(self) -> None:
        client, self._client = self._client, None
        self._in_transaction = False
        if client is None or not client.is_connected:
            return
        try:
            await client.quit(timeout=min(self.relay.timeout_s, 5.0))
        except (aiosmtplib.SMTPException, OSError):
            client.close()
