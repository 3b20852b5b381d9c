"""A small SMTP client for relaying to the internal server: RFC 5321 with PIPELINING (RFC 2920),
STARTTLS (RFC 3207) and SMTPUTF8 (RFC 6531).

aiosmtplib cannot pipeline (its documentation warns that pipelined replies get lost), so each
message cost MAIL, RCPT..., DATA and the message as separate round trips, and under load the
relay fell behind the front end sharing its event loop. With PIPELINING offered, MAIL, every
RCPT and DATA go out in one write and the message with its final dot in a second: two round
trips per message. Reads are bounded (line length, lines per reply) and every wait has a
timeout, since even an internal server can misbehave.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

MAX_REPLY_LINE = 4096  # bytes; RFC 5321 allows 512
MAX_REPLY_LINES = 100
PIPELINE_BATCH = 100  # commands per write when pipelining
_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -]|\r?\n)(.*?)\r?\n?$", re.DOTALL)
_BARE_LINE_END = re.compile(rb"\r(?!\n)|(?<!\r)\n")

TlsMode = Literal["opportunistic", "required", "none"]


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class SmtpClientError(Exception):
    """The connection failed, timed out, or the server did not speak SMTP."""


class TlsFailed(SmtpClientError):
    """The TLS handshake after STARTTLS failed; the connection is unusable."""


class Refused(Exception):
    """The server refused the session itself (greeting, EHLO/HELO, STARTTLS)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Envelope:
    """Replies to one transaction's commands; `data` is None when DATA was not sent."""

    mail: Reply
    rcpts: tuple[Reply, ...]
    data: Reply | None


class SmtpClient:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout_s: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.timeout_s = timeout_s
        self.extensions: dict[str, str] = {}

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        local_hostname: str,
        timeout_s: float,
        tls: TlsMode = "opportunistic",
        tls_verify: bool = False,
    ) -> SmtpClient:
        """Connected, greeted, EHLO done (and STARTTLS when offered and wanted).

        Raises Refused when the server turns us away, SmtpClientError otherwise."""
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(host, port, limit=MAX_REPLY_LINE)
        except (OSError, TimeoutError) as exc:
            raise SmtpClientError(_describe(exc)) from exc
        client = cls(reader, writer, timeout_s)
        try:
            greeting = await client.read_reply()
            if greeting.code != 220:
                raise Refused(greeting)
            await client._hello(local_hostname)
            if tls != "none" and "starttls" in client.extensions:
                reply = await client.command("STARTTLS")
                if reply.code == 220:
                    await client._start_tls(host, tls_verify)
                    await client._hello(local_hostname)
                elif tls == "required":
                    raise Refused(reply)
                # else opportunistic: a 454 leaves the session usable, in plain text
            elif tls == "required":
                raise SmtpClientError(f"{host}:{port} does not offer STARTTLS, which is required")
        except BaseException:
            client.close()
            raise
        return client

    async def _hello(self, local_hostname: str) -> None:
        reply, lines = await self._command_lines(f"EHLO {local_hostname}")
        if reply.code == 250:
            self.extensions = _extensions(lines[1:])
            return
        if reply.code == 421:  # closing: HELO would only meet a dead connection
            raise Refused(reply)
        reply = await self.command(f"HELO {local_hostname}")
        if reply.code != 250:
            raise Refused(reply)
        self.extensions = {}

    async def _start_tls(self, host: str, verify: bool) -> None:
        context = ssl.create_default_context()
        if not verify:  # internal servers often have self-signed certificates
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._writer.start_tls(context, server_hostname=host)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise TlsFailed(f"TLS handshake failed: {_describe(exc)}") from exc
        # RFC 3207 4.2 (CVE-2011-0411 from this side): plaintext that came after the 220 was
        # not sent under TLS; read as replies, it would put the session out of step.
        self._reader._buffer.clear()  # type: ignore[attr-defined]

    # -- talking ---------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return not self._writer.is_closing() and not self._reader.at_eof()

    def supports(self, extension: str) -> bool:
        return extension.lower() in self.extensions

    async def command(self, line: str, encoding: str = "ascii") -> Reply:
        return (await self._command_lines(line, encoding))[0]

    async def _command_lines(self, line: str, encoding: str = "ascii") -> tuple[Reply, list[str]]:
        await self._write(_encode_line(line, encoding))
        return await self._read_reply_lines()

    async def transaction(
        self,
        mail_from: str,
        options: Sequence[str],
        recipients: Sequence[str],
        encoding: str = "ascii",
        rcpt_options: Sequence[Sequence[str]] = (),
    ) -> Envelope:
        """MAIL, RCPT for each recipient and, if one was accepted, DATA: one write when the
        server offers PIPELINING. Replies in order; the message goes with `send_data`.
        `rcpt_options` are each recipient's RCPT parameters, in order (missing: none)."""
        mail_line = " ".join([f"MAIL FROM:<{mail_from}>", *options])
        rcpt_lines = [
            " ".join([f"RCPT TO:<{rcpt}>", *(rcpt_options[i] if i < len(rcpt_options) else ())])
            for i, rcpt in enumerate(recipients)
        ]
        if self.supports("pipelining"):
            commands = [mail_line, *rcpt_lines, "DATA"]
            replies: list[Reply] = []
            # In batches: a server that stops reading while we do not read its replies would
            # otherwise stall both sides until the timeout (RFC 2920 3.1).
            for start in range(0, len(commands), PIPELINE_BATCH):
                batch = commands[start : start + PIPELINE_BATCH]
                await self._write(b"".join(_encode_line(line, encoding) for line in batch))
                replies += await self._read_replies(len(batch))
            mail, *rcpt_replies, data = replies
            rcpts = tuple(rcpt_replies)
            if data.code == 354 and not any(r.positive for r in rcpts):
                # A server that opened DATA without a recipient: end it at once (RFC 2920 3.1).
                await self._write(b".\r\n")
                await self.read_reply()
                data = Reply(554, "5.5.1 no valid recipients")
            return Envelope(mail, rcpts, data)
        mail = await self.command(mail_line, encoding)
        if not mail.positive:
            return Envelope(mail, (), None)
        rcpts = tuple([await self.command(line, encoding) for line in rcpt_lines])
        if not any(r.positive for r in rcpts):
            return Envelope(mail, rcpts, None)
        return Envelope(mail, rcpts, await self.command("DATA"))

    async def send_data(self, data: bytes, reply_timeout_s: float | None = None) -> Reply:
        """The message after a 354: CRLF line ends, dot-stuffed, with the final dot; its reply
        within `reply_timeout_s` (default: the client's timeout)."""
        crlf = data.count(b"\r\n")
        if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
            # A bare CR or LF: never in spooled mail, and never relayed either (three counts
            # cost far less than the regular expression's scan of every message).
            data = _BARE_LINE_END.sub(b"\r\n", data)
        data = data.replace(b"\r\n.", b"\r\n..")
        if data.startswith(b"."):
            data = b"." + data
        if data and not data.endswith(b"\r\n"):
            data += b"\r\n"
        await self._write(data + b".\r\n")
        return (await self._read_replies(1, reply_timeout_s))[0]

    async def read_reply(self) -> Reply:
        return (await self._read_replies(1))[0]

    async def _read_reply_lines(self) -> tuple[Reply, list[str]]:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._parse_reply()
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: line over the limit
            raise SmtpClientError(f"reading a reply: {_describe(exc)}") from exc

    async def _read_replies(self, count: int, timeout_s: float | None = None) -> list[Reply]:
        """`count` replies to pipelined commands, within one timeout (a timer each would cost
        more than reading them)."""
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s):
                return [(await self._parse_reply())[0] for _ in range(count)]
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: line over the limit
            raise SmtpClientError(f"reading a reply: {_describe(exc)}") from exc

    async def _parse_reply(self) -> tuple[Reply, list[str]]:
        lines: list[str] = []
        first_code = 0
        while len(lines) < MAX_REPLY_LINES:
            raw = await self._reader.readline()
            if not raw.endswith(b"\n"):
                raise SmtpClientError("connection closed by the server")
            match = _REPLY_LINE.fullmatch(raw)
            if match is None:
                raise SmtpClientError(f"not an SMTP reply: {raw[:80]!r}")
            code = int(match.group(1))
            if lines and code != first_code:
                # Replies out of step with our commands: nothing after this can be trusted.
                raise SmtpClientError(f"reply lines with codes {first_code} and {code}")
            first_code = first_code or code
            lines.append(match.group(3).decode("utf-8", "surrogateescape"))
            if match.group(2) != b"-":
                return Reply(code, " ".join(lines)), lines
        raise SmtpClientError(f"reply longer than {MAX_REPLY_LINES} lines")

    async def _write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            transport = self._writer.transport
            if transport.get_write_buffer_size() == 0 and not transport.is_closing():
                return  # all sent at once: drain() could not wait, so no timer for it
            async with asyncio.timeout(self.timeout_s):
                await self._writer.drain()
        except (OSError, TimeoutError) as exc:
            # Drop what is still buffered with the connection: a close() (or QUIT) would send
            # the rest of a message and its final dot after the attempt was given up, and the
            # server would deliver what the next attempt delivers again.
            self._writer.transport.abort()
            raise SmtpClientError(f"sending: {_describe(exc)}") from exc

    async def quit(self) -> None:
        """QUIT politely (errors ignored), then close."""
        try:
            await self.command("QUIT")
        except SmtpClientError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        self._writer.close()


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__  # a timeout has no message


def _encode_line(line: str, encoding: str) -> bytes:
    if "\r" in line or "\n" in line:
        raise SmtpClientError("line break inside an SMTP command")
    try:
        return line.encode(encoding) + b"\r\n"
    except UnicodeEncodeError as exc:
        raise SmtpClientError(f"cannot send {line!r} without SMTPUTF8") from exc


def _extensions(lines: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lines:
        keyword, _, parameters = line.strip().partition(" ")
        if keyword:
            found[keyword.lower()] = parameters
    return found
