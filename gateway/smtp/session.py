"""One SMTP session: aiosmtpd's protocol with our command loop, limits and DATA reader.

aiosmtpd gives the transport and stream plumbing, connection-lost handling (also under TLS)
and a backstop timer. Its command loop and command methods are replaced because every reply
must carry an enhanced status code from `replies`, every limit must be ours (line length, bad
commands, idle and session time with a 421), and DATA must be cut at every LF to catch bare
line ends (see `data`). Policy (relay gate, phases, storage, logging) is the handler's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import math
import re
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP
from aiosmtpd.smtp import __ident__ as aiosmtpd_ident

from gateway.config import SmtpConfig
from gateway.model import CheckResult, Connection, new_id
from gateway.net.dns import begin_scope
from gateway.observe import metrics
from gateway.smtp import replies
from gateway.smtp.addresses import (
    helo_problem,
    sender_problem,
    split_path_argument,
    strip_source_route,
)
from gateway.smtp.data import TRANSPARENCY_EXTRA, DataCollector
from gateway.smtp.handler import SessionState, SmtpHandler
from gateway.smtp.limits import ConnectionLimiter
from gateway.smtp.lines import READ_SIZE, LineReader
from gateway.smtp.proxy import HEADER_TIMEOUT_S, ProxyHeaderError, read_proxy_header, trusted
from gateway.threads import holding

if TYPE_CHECKING:
    from gateway.smtp.server import SmtpFrontEnd

log = logging.getLogger(__name__)

Reply = str | list[str] | None
CLOSE_REPLY_TIMEOUT_S = 5.0
# Commands RFC 5321 knows that an inbound MX has no reason to offer.
NOT_OFFERED = frozenset({"EXPN", "TURN", "ETRN", "AUTH", "BDAT", "SEND", "SOML", "SAML"})
# Commands that move no mail: past [smtp] max_junk_commands of them each counts as a bad one.
JUNK_COMMANDS = frozenset({"NOOP", "RSET", "VRFY", "HELP"})


# RFC 3461: xtext is printable ASCII except "+" and "=", with "+HH" for any other byte.
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})*")
_ADDRESS_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# Printable ASCII or real (not surrogate-escaped) non-ASCII characters, nothing else.
_UTF8_ADDR = re.compile(r"[!-~\u0080-\ud7ff\ue000-\U0010ffff]+")
_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})
MAX_ENVID_CHARS = 100  # RFC 3461 4.4
MAX_ORCPT_CHARS = 500  # RFC 3461 4.2


def dsn_parameter_ok(key: str, value: str) -> bool:
    """Whether a DSN parameter of MAIL (RET, ENVID) or RCPT (NOTIFY, ORCPT) is well formed."""
    if key == "RET":
        return value.upper() in ("FULL", "HDRS")
    if key == "ENVID":
        # Decoded, printable ASCII only (RFC 3461 4.4): it goes into a header of the DSN.
        return (
            0 < len(value) <= MAX_ENVID_CHARS
            and bool(_XTEXT.fullmatch(value))
            and _xtext_printable(value)
        )
    if key == "NOTIFY":
        values = {v.upper() for v in value.split(",")}
        return values == {"NEVER"} or (bool(values) and values <= _NOTIFY_VALUES)
    address_type, semicolon, address = value.partition(";")  # ORCPT=type;xtext
    return (
        bool(semicolon and _ADDRESS_TYPE.fullmatch(address_type) and address)
        and len(value) <= MAX_ORCPT_CHARS
        # RFC 6533 utf-8-addr-xtext: xtext, and UTF-8 characters as they are.
        and bool(
            (_XTEXT.fullmatch(address) and _xtext_printable(address))
            or (address_type.upper() == "UTF-8" and _UTF8_ADDR.fullmatch(address))
        )
    )


def _xtext_printable(text: str) -> bool:
    """No "+HH" that decodes to a control character (CR LF would split the DSN's header)."""
    return all(0x20 <= int(code, 16) < 0x7F for code in re.findall(r"\+([0-9A-Fa-f]{2})", text))


MAX_SIZE_DIGITS = 20


class Hangup(Exception):
    """End the session: send `reply` (if any) and close the connection."""

    def __init__(self, reply: str | None) -> None:
        super().__init__(reply)
        self.reply = reply


class GatewaySMTP(SMTP):
    def __init__(
        self,
        config: SmtpConfig,
        handler: SmtpHandler,
        limiter: ConnectionLimiter,
        front_end: SmtpFrontEnd,
        tls_context: ssl.SSLContext | None,
        backstop_timeout_s: float,
    ) -> None:
        # aiosmtpd sizes its StreamReader by this: the transport pauses above twice as much.
        self.line_length_limit = max(config.max_line_bytes, READ_SIZE)
        # SMTP.__init__ is skipped: per connection it builds its AUTH, hook and command tables
        # with inspect.getmembers/dir over the session and the handler (~5% of the gateway's
        # CPU per message), tables this class never reads (it dispatches from `_commands`,
        # calls the handler directly and offers no AUTH). Here is everything else it sets that
        # the inherited transport code (connection_made/lost, timeout, push) uses;
        # tests/unit/test_session_init.py checks the attribute set against aiosmtpd's.
        loop = asyncio.get_running_loop()
        self.loop = loop
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(loop=loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected,
            loop=loop,
        )
        self.__ident__ = aiosmtpd_ident
        self.event_handler = handler
        self.data_size_limit = None  # ours: DataCollector enforces max_message_bytes
        self.enable_SMTPUTF8 = True
        self._decode_data = False
        self.hostname = config.hostname
        self.tls_context = tls_context
        self.require_starttls = False
        self._timeout_duration = backstop_timeout_s  # aiosmtpd's timer: a last resort
        self._timeout_handle: asyncio.TimerHandle | None = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport: asyncio.BaseTransport | None = None
        self.session = None
        self.envelope = None
        self.transport: asyncio.BaseTransport | None = None
        self._handler_coroutine: asyncio.Task[None] | None = None
        self._auth_require_tls = True
        self._proxy_timeout = None
        self._authenticator = None
        self._auth_callback = None
        self._auth_required = False
        self._auth_methods = {}
        self._handle_hooks = {}
        self._ehlo_hook_ver = None
        self._smtp_methods = {}
        self._enforce_call_limit = False
        self.config = config
        self.gateway = handler
        self.limiter = limiter
        self.front_end = front_end
        self.state: SessionState | None = None
        self._peer_ip = ""  # the connected peer's address (set on connect), for XCLIENT
        # XFORWARD: the session's own client and results while a forwarded one stands in for
        # the next transaction, and whether that transaction has begun.
        self._own_client: tuple[Connection, dict[str, CheckResult]] | None = None
        self._xforward_pending = False
        self.busy = False  # between reading a command and sending its reply
        self.shutdown_requested = False
        self._bad_commands = 0
        self._recipient_overshoot = 0
        self._junk_commands = 0  # since the last message taken
        # 503s that follow from a refused MAIL or RCPT, not counted (see `_excuse_followers`).
        self._excused_503s = 0
        self._session_deadline = 0.0
        # The timer of a write waiting for the client to read (a reply's drain, a STARTTLS
        # handshake): stress_began shortens it as it does a waiting read.
        self._write_timer: asyncio.Timeout | None = None
        self._commands: dict[str, Callable[[str], Awaitable[Reply]]] = {
            "HELO": self.smtp_HELO,
            "EHLO": self.smtp_EHLO,
            "MAIL": self.smtp_MAIL,
            "RCPT": self.smtp_RCPT,
            "DATA": self.smtp_DATA,
            "RSET": self.smtp_RSET,
            "NOOP": self.smtp_NOOP,
            "QUIT": self.smtp_QUIT,
            "VRFY": self.smtp_VRFY,
            "HELP": self.smtp_HELP,
            "STARTTLS": self.smtp_STARTTLS,
            "XCLIENT": self.smtp_XCLIENT,
            "XFORWARD": self.smtp_XFORWARD,
        }

    # -- the session ---------------------------------------------------------------------------

    async def _handle_client(self) -> None:
        assert self.transport is not None
        begin_scope()  # after one DNS lookup of this connection timed out, the next fail at once
        peer: Any = self.transport.get_extra_info("peername")
        client_ip, client_port = str(peer[0]), int(peer[1])
        self._peer_ip = client_ip  # who is really connected: may it use XCLIENT?
        if self.config.proxy_protocol and trusted(client_ip, self.config.trusted_proxies):
            try:
                proxied = await asyncio.wait_for(read_proxy_header(self._reader), HEADER_TIMEOUT_S)
            except (ProxyHeaderError, TimeoutError, asyncio.IncompleteReadError) as exc:
                log.warning("PROXY header from %s: %s; connection closed", client_ip, exc or "EOF")
                self._close()
                return
            if proxied is not None:
                client_ip, client_port = proxied
        state = self.state = SessionState(Connection(new_id(), client_ip, client_port))
        refusal = self.limiter.acquire(client_ip)
        if refusal is not None:
            self.gateway.refused_by_limit(state, refusal)
            await self._close_with(refusal)
            return
        self._lines = LineReader(self._reader, self.config.max_line_bytes)
        self.front_end.session_started(self)
        started = time.monotonic()
        self._session_deadline = self.loop.time() + self.config.session_timeout_s
        try:
            refusal = await self.gateway.connect(state)
            if refusal is not None and refusal.startswith("554"):
                await self.push(refusal)
                await self._wait_for_quit()
                raise Hangup(None)
            if refusal is not None:
                raise Hangup(refusal)
            await self.push(replies.greeting(self.config.hostname, self.config.banner))
            await self._command_loop()
        except Hangup as hangup:
            self.gateway.abandon(self.state or state, hangup.reply or "")
            await self._close_with(hangup.reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            self._close()
        except asyncio.CancelledError:
            self._close()  # connection lost or the backstop timer: nothing left to answer
            raise
        finally:
            self.gateway.abandon(self.state or state)  # XCLIENT may have replaced the state
            self.limiter.release(client_ip)
            self.front_end.session_ended(self)
            metrics.session_ended(time.monotonic() - started)

    async def _command_loop(self) -> None:
        while self.transport is not None:
            if self.shutdown_requested:
                raise Hangup(replies.SHUTTING_DOWN)
            line = await self._read_command()
            self.busy = True
            try:
                try:
                    reply = await self._dispatch(line)
                except (Hangup, ConnectionError, asyncio.IncompleteReadError):
                    raise
                except Exception:
                    # A bug here must not reach the client, nor leave the stream out of step.
                    tx_id = self._state().next_id
                    log.exception("SMTP command failed, transaction %s", tx_id)
                    raise Hangup(replies.internal_error_closing(tx_id)) from None
                if isinstance(reply, list):
                    await self.push("\r\n".join(reply))
                elif reply is not None:
                    await self.push(reply)
            finally:
                self.busy = False

    async def _wait_for_quit(self) -> None:
        """RFC 5321 3.1: after a 554 greeting the client may only QUIT; anything else gets
        503 (as Postfix's postscreen does), bounded by the bad-command limit and timeouts."""
        for _ in range(self.config.max_bad_commands):
            line = await self._read_command()
            if line is not None and line.strip().upper() == b"QUIT":
                await self.push(replies.CLOSING)
                return
            await self.push(replies.NO_SERVICE)

    async def _read_command(self) -> bytes | None:
        """The next command line, or None when it was longer than max_line_bytes."""
        line, complete = await self._read()
        if complete:
            return line
        while not complete:  # skip the rest of the over-long line
            _, complete = await self._read()
        return None

    async def _dispatch(self, line: bytes | None) -> Reply:
        if line is None:
            return self._bad(replies.LINE_TOO_LONG)
        text = line.rstrip(b"\r\n")
        verb, _, arg_bytes = text.partition(b" ")
        if not verb.isascii():
            return self._bad(replies.UNKNOWN_COMMAND)
        command = verb.decode("ascii").upper()
        # Arguments may be UTF-8 (SMTPUTF8); surrogateescape keeps any other bytes recoverable.
        arg = arg_bytes.strip().decode("utf-8", "surrogateescape")
        method = self._commands.get(command)
        if method is None:
            return self._bad(
                replies.NOT_IMPLEMENTED if command in NOT_OFFERED else replies.UNKNOWN_COMMAND
            )
        reply = await method(arg)
        first = reply[0] if isinstance(reply, list) else reply
        if first in (replies.NEED_MAIL, replies.NEED_RCPT) and self._excused_503s:
            self._excused_503s -= 1
            return reply
        self._excuse_followers(command, first)
        if first is not None and first.startswith("421"):
            # RFC 5321 3.8: 421 closes the channel (a forced action's reply may say so, e.g.
            # RATELIMIT_EXCEEDED configured to end the session instead of 450).
            raise Hangup(first)
        if first is not None and first.startswith("5"):
            return self._bad(first)
        if command == "MAIL" and first is not None and first.startswith("4"):
            # Deferred senders count too (as Postfix counts soft errors): a client that
            # retries MAIL at once, each time deferred (memory, spool, an SPF temperror from
            # its own DNS), could otherwise go on for the whole session timeout.
            self._count_bad()
        if command in JUNK_COMMANDS:
            self._junk_commands += 1
            if self._junk_commands > self.config.max_junk_commands:
                self._count_bad()
        elif command == "DATA" and first is None:
            self._junk_commands = 0  # a message came in: the client is doing real work
        if first == replies.TOO_MANY_RECIPIENTS:
            self._recipient_overshoot += 1
            if self._recipient_overshoot > self.config.max_recipient_overshoot:
                return self._bad(first)  # else a client could send RCPTs for ever
        return reply

    def _excuse_followers(self, command: str, reply: str | None) -> None:
        """A pipelining client sends MAIL, its RCPTs and DATA before it reads a reply (RFC
        2920): when MAIL is refused (452 for memory, a full spool, an SPF temperror), up to
        max_recipients RCPTs and the DATA behind it get 503 through no further fault of the
        client; when a RCPT is refused, so may the DATA. Counted, they hung up on any client
        with more than max_bad_commands recipients. The excuse is bounded, and ends with the
        next MAIL, RSET, HELO or EHLO."""
        if reply is not None and reply.startswith("503"):
            return  # out of order (a nested MAIL, RCPT before MAIL): nothing was refused
        if command == "MAIL":
            refused = reply is not None and not reply.startswith("2")
            self._excused_503s = self.config.max_recipients + 1 if refused else 0
        elif command == "RCPT" and reply is not None and reply[:1] in ("4", "5"):
            self._excused_503s = max(self._excused_503s, 1)
        elif command in ("RSET", "HELO", "EHLO"):
            self._excused_503s = 0

    def _bad(self, reply: str) -> str:
        """A 5xx answer to a command: the client's fault, counted towards max_bad_commands."""
        self._count_bad()
        return reply

    def _count_bad(self) -> None:
        self._bad_commands += 1
        if self._bad_commands > self.config.max_bad_commands:
            raise Hangup(replies.TOO_MANY_ERRORS)

    def stress_began(self) -> None:
        """The worker came under stress: a read or write waiting now ends within the stress
        timeout."""
        deadline = self.loop.time() + self.config.stress_idle_timeout_s
        self._lines.shorten_deadline(deadline)
        timer = self._write_timer
        if timer is not None and (timer.when() or math.inf) > deadline:
            timer.reschedule(deadline)

    def _idle_timeout(self) -> float:
        if self.limiter.under_stress:
            return min(self.config.idle_timeout_s, self.config.stress_idle_timeout_s)
        return self.config.idle_timeout_s

    def _timed_out(self, data_deadline: float) -> Hangup:
        """The 421 of the limit that ran out during a read."""
        now = self.loop.time()
        if now >= self._session_deadline:
            return Hangup(replies.SESSION_TIMEOUT)
        if now >= data_deadline:
            return Hangup(replies.DATA_TOO_SLOW)
        return Hangup(replies.IDLE_TIMEOUT)

    async def _read(self, extra: int = 0, data_deadline: float = math.inf) -> tuple[bytes, bool]:
        """The next line (or piece of an over-long one) within the idle and session limits,
        and `data_deadline` (the DATA rate); `extra` bytes beyond max_line_bytes are allowed
        (the transparency dot in DATA)."""
        deadline = min(self.loop.time() + self._idle_timeout(), self._session_deadline)
        try:
            return await self._lines.next(min(deadline, data_deadline), extra)
        except TimeoutError:
            raise self._timed_out(data_deadline) from None

    async def push(self, status: Any) -> None:
        # A client that does not read its replies must not hold the session forever. Most
        # replies go out at once: with nothing left buffered, drain() cannot wait, and the
        # timer (a heap entry per reply) is skipped.
        reply = status.encode() if isinstance(status, str) else status
        metrics.reply(reply[:3].decode("ascii", "replace"))
        self._writer.write(reply + b"\r\n")
        if not self._writer.transport.get_write_buffer_size():
            await self._writer.drain()
            return
        try:
            async with self._write_timeout(self._idle_timeout()):
                await self._writer.drain()
        except TimeoutError:
            raise Hangup(None) from None

    @contextlib.asynccontextmanager
    async def _write_timeout(self, timeout_s: float) -> AsyncIterator[None]:
        """At most `timeout_s` (and not past the session time limit) for a write to the
        client; the stress timeout from the moment the worker comes under stress."""
        deadline = min(self.loop.time() + timeout_s, self._session_deadline)
        async with asyncio.timeout_at(deadline) as timer:
            self._write_timer = timer
            try:
                yield
            finally:
                self._write_timer = None

    async def _close_with(self, reply: str | None) -> None:
        if reply is not None and self.transport is not None:
            self._writer.write(reply.encode() + b"\r\n")
            if self._writer.transport.get_write_buffer_size():  # rare: no timer otherwise
                try:
                    async with asyncio.timeout(CLOSE_REPLY_TIMEOUT_S):
                        await self._writer.drain()
                except (TimeoutError, ConnectionError):
                    pass  # _close() drops a connection whose reply is still buffered
        self._close()

    def _close(self) -> None:
        if self.transport is None:
            return
        if self._writer.transport.get_write_buffer_size():
            # Replies the client has not read: close() would wait for ever to hand them over
            # (the socket outliving its session), so the connection is dropped.
            self._writer.transport.abort()
        else:
            self.transport.close()

    def eof_received(self) -> bool | None:
        """The client half-closed (FIN). aiosmtpd cancels the session here, which dropped the
        replies to commands already received (a pipelined message and its end of DATA got no
        250, yet stayed open) and left the socket open. Instead the reader sees EOF: every
        command read before it is answered, then `_read` ends the session and closes."""
        log.debug("EOF from %s", self.state.connection.client_ip if self.state else "?")
        reader: asyncio.StreamReader | None = getattr(self, "_reader", None)
        if reader is not None:
            reader.feed_eof()
        # Over TLS, True has no effect (and warns): the TLS layer closes, connection_lost follows.
        return self.session is None or self.session.ssl is None

    def request_shutdown(self) -> None:
        """Server stopping: an idle session is told 421 now, a busy one after its reply."""
        self.shutdown_requested = True
        if not self.busy and self.transport is not None:
            self._writer.write(replies.SHUTTING_DOWN.encode() + b"\r\n")
            self.transport.close()

    def abort(self) -> None:
        self._close()

    # -- commands ------------------------------------------------------------------------------

    def _state(self) -> SessionState:
        # A method, not a property: aiosmtpd's __init__ (skipped here, see there) calls getattr
        # on every member of its instances.
        assert self.state is not None
        return self.state

    async def smtp_HELO(self, arg: str) -> Reply:
        if not arg or helo_problem(arg):
            return replies.syntax("HELO hostname")
        refusal = await self.gateway.helo(self._state(), arg, esmtp=False)
        return refusal or replies.helo(self.config.hostname)

    async def smtp_EHLO(self, arg: str) -> Reply:
        if not arg or helo_problem(arg):
            return replies.syntax("EHLO hostname")
        refusal = await self.gateway.helo(self._state(), arg, esmtp=True)
        if refusal is not None:
            return refusal
        extensions = [
            f"SIZE {self.config.max_message_bytes}",
            "8BITMIME",
            "PIPELINING",
            "ENHANCEDSTATUSCODES",
            "DSN",
            "SMTPUTF8",
        ]
        if self.tls_context is not None and not self._state().connection.tls:
            extensions.append("STARTTLS")
        if self._xclient_allowed():
            extensions.append("XCLIENT ADDR PORT NAME HELO PROTO")
        if self._allowed(self.config.xforward_networks):
            extensions.append("XFORWARD NAME ADDR PORT PROTO HELO SOURCE IDENT")
        return replies.ehlo(self.config.hostname, extensions)

    def _xclient_allowed(self) -> bool:
        return self._allowed(self.config.xclient_networks)

    def _allowed(self, networks: tuple[str, ...]) -> bool:
        return bool(networks) and trusted(self._peer_ip, networks)

    async def smtp_XFORWARD(self, arg: str) -> Reply:
        """Postfix's XFORWARD (a content filter's upstream, smtp_send_xforward_command): the
        client named stands in for the session's own for the next mail transaction only; the
        connect checks run for it (www.postfix.org/XFORWARD_README.html)."""
        state = self._state()
        if not self._allowed(self.config.xforward_networks):
            return replies.XCLIENT_DENIED
        if state.open is not None:
            return replies.XCLIENT_IN_TRANSACTION
        usage = "XFORWARD ADDR=address [PORT=port] [HELO=name] [NAME=name] ..."
        attributes = parse_xclient(arg)
        if attributes is None:
            return replies.syntax(usage)
        # Postfix may spread the attributes over several XFORWARD commands: each adds to what
        # stands in for the next transaction.
        if self._own_client is None or not self._xforward_pending:
            self._own_client = self._own_client or (state.connection, state.results)
            state.connection = dataclasses.replace(self._own_client[0])
            state.results = dict(self._own_client[1])
            self._xforward_pending = True
        connection = state.connection
        if "HELO" in attributes:
            connection.helo = attributes["HELO"]
        if attributes.get("PORT", "").isdigit():
            connection.client_port = int(attributes["PORT"])
        if "ADDR" in attributes:
            try:
                address = ipaddress.ip_address(attributes["ADDR"].removeprefix("IPV6:"))
            except ValueError:
                return replies.syntax(usage)
            connection.client_ip = str(address)
            refusal = await self.gateway.connect(state)  # the connect checks, for this client
            if refusal is not None:
                raise Hangup(refusal)
        return replies.XFORWARD_OK

    def _end_xforward(self) -> None:
        """At MAIL: a forwarded client stands in for one transaction, then the session's own
        client is back (unless XFORWARD named another since)."""
        if self._own_client is not None and not self._xforward_pending:
            state = self._state()
            state.connection, state.results = self._own_client
            self._own_client = None
        self._xforward_pending = False

    async def smtp_XCLIENT(self, arg: str) -> Reply:
        """Postfix's XCLIENT from a trusted front end: the client it names becomes this
        session's client, as if it had connected (connect checks run again), and the session
        starts over with a 220 greeting (www.postfix.org/XCLIENT_README.html)."""
        state = self._state()
        if not self._xclient_allowed():
            return replies.XCLIENT_DENIED
        if state.open is not None:
            return replies.XCLIENT_IN_TRANSACTION
        usage = "XCLIENT ADDR=address [PORT=port] [NAME=name] [HELO=name] [PROTO=proto]"
        attributes = parse_xclient(arg)
        if attributes is None:
            return replies.syntax(usage)
        old = state.connection
        address = attributes.get("ADDR", old.client_ip)
        port = attributes.get("PORT", str(old.client_port))
        try:
            client_ip = str(ipaddress.ip_address(address.removeprefix("IPV6:")))
            client_port = int(port) if port.isdigit() else 0
        except ValueError:
            return replies.syntax(usage)
        connection = Connection(new_id(), client_ip, client_port, tls=old.tls)
        new = self.state = SessionState(connection)
        refusal = await self.gateway.connect(new)
        if refusal is not None:
            raise Hangup(refusal)
        return replies.greeting(self.config.hostname, self.config.banner)

    async def smtp_MAIL(self, arg: str) -> Reply:
        if self._state().open is None:
            self._end_xforward()
        state = self._state()
        if not state.connection.helo:
            return replies.NEED_HELO
        if state.open is not None:
            return replies.NESTED_MAIL
        usage = "MAIL FROM:<address> [parameters]"
        if arg[:5].upper() != "FROM:":
            return replies.syntax(usage)
        parsed = split_path_argument(arg[5:])
        if parsed is None or (parsed.params and not state.connection.esmtp):
            return replies.syntax(usage)
        smtputf8, size = False, 0
        if _repeated(parsed.params):
            return replies.DUPLICATE_PARAMETER
        for param in parsed.params:
            key, _, value = param.partition("=")
            key = key.upper()
            if key == "SIZE" and value.isdigit() and value.isascii():
                # More digits than any real size (and than int() takes): simply too big.
                size = int(value) if len(value) <= MAX_SIZE_DIGITS else sys.maxsize
            elif key == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
                pass  # 8BITMIME is advertised: both are fine as they are
            elif key == "BODY":
                return replies.BAD_BODY_TYPE
            elif key == "SMTPUTF8" and not value:
                smtputf8 = True
            elif key in ("RET", "ENVID"):
                if not dsn_parameter_ok(key, value):
                    return replies.BAD_DSN_PARAMETER
            else:
                return replies.UNKNOWN_PARAMETER
        if size > self.config.max_message_bytes:
            return replies.too_big(self.config.max_message_bytes)
        sender = strip_source_route(parsed.path)
        problem = sender_problem(sender, smtputf8)
        if problem is not None:
            return (
                replies.NON_ASCII_WITHOUT_SMTPUTF8 if "SMTPUTF8" in problem else replies.BAD_SENDER
            )
        options = tuple(p.upper() for p in parsed.params)
        return await self.gateway.mail(state, sender, options, smtputf8, size, parsed.params)

    async def smtp_RCPT(self, arg: str) -> Reply:
        state = self._state()
        if not state.connection.helo:
            return replies.NEED_HELO
        if state.open is None:
            return replies.NEED_MAIL
        if arg[:3].upper() != "TO:":
            return replies.syntax("RCPT TO:<address>")
        parsed = split_path_argument(arg[3:])
        if parsed is None:
            return replies.syntax("RCPT TO:<address>")
        if parsed.params and not state.connection.esmtp:
            return replies.syntax("RCPT TO:<address>")
        if _repeated(parsed.params):
            return replies.DUPLICATE_PARAMETER
        for param in parsed.params:
            key, _, value = param.partition("=")
            if key.upper() not in ("NOTIFY", "ORCPT"):
                return replies.UNKNOWN_PARAMETER
            if not dsn_parameter_ok(key.upper(), value):
                return replies.BAD_DSN_PARAMETER
        return await self.gateway.rcpt(state, parsed.path, parsed.params)

    async def smtp_DATA(self, arg: str) -> Reply:
        state = self._state()
        if not state.connection.helo:
            return replies.NEED_HELO
        if state.open is None:
            return replies.NEED_MAIL
        if not state.open.tx.envelope.rcpt_tos:
            return replies.NEED_RCPT
        if arg:
            return replies.syntax("DATA")
        await self.push(replies.START_MAIL)
        collected = DataCollector(
            self.config.max_message_bytes,
            self.config.max_line_bytes,
            normalize=self.config.bare_lf == "normalize",
            memory=self.gateway.message_memory.account(state.connection.client_ip),
        )
        # As Postfix's smtpd_min_data_rate: one idle timeout, plus time for what has come in
        # (bytes as they came: a bare LF that "normalize" turns into CRLF counts once).
        allowance_start = self.loop.time() + self._idle_timeout()
        rate = self.config.min_data_rate
        data_start = self._lines.received - self._lines.buffered_bytes()

        def read_data() -> Awaitable[tuple[bytes, bool]]:
            data_deadline = allowance_start + (self._lines.received - data_start) / rate
            return self._read(extra=TRANSPARENCY_EXTRA, data_deadline=data_deadline)

        # Given back before the reply (a client that sends its next message at once must
        # not find this one still counted), or when the last thread checking it is done.
        with holding(collected.release):
            await collected.read_from(self._lines, read_data)
            reply = await self.gateway.data(state, collected)
        # Sent here, not returned: a refused message is not a bad command.
        await self.push(reply)
        return None

    async def smtp_RSET(self, arg: str) -> Reply:
        if arg:
            return replies.syntax("RSET")
        self.gateway.abandon(self._state())
        return replies.RESET

    async def smtp_NOOP(self, arg: str) -> Reply:
        return replies.NOOP

    async def smtp_VRFY(self, arg: str) -> Reply:
        return replies.VRFY if arg else replies.syntax("VRFY address")

    async def smtp_HELP(self, arg: str) -> Reply:
        return replies.HELP

    async def smtp_QUIT(self, arg: str) -> Reply:
        if arg:
            return replies.syntax("QUIT")
        raise Hangup(replies.CLOSING)

    async def smtp_STARTTLS(self, arg: str) -> Reply:
        if self.tls_context is None:
            return replies.NOT_IMPLEMENTED
        if arg:
            return replies.syntax("STARTTLS")
        state = self._state()
        if state.connection.tls:
            return replies.ALREADY_TLS
        await self.push(replies.STARTTLS_READY)
        try:
            timeout_s = min(self.config.tls_handshake_timeout_s, self._idle_timeout())
            async with self._write_timeout(timeout_s):
                await self._writer.start_tls(self.tls_context)
        except (TimeoutError, ssl.SSLError, OSError) as exc:
            log.info("TLS handshake with %s failed: %s", state.connection.client_ip, exc)
            raise Hangup(None) from None
        tls_transport = self._writer.transport
        # aiosmtpd's connection_lost closes the plain transport under the TLS one.
        self._original_transport = self.transport
        self.transport = tls_transport
        # The reader pauses and resumes its transport: it must be the TLS one now.
        self._reader._transport = tls_transport  # type: ignore[attr-defined]
        # RFC 3207 4.2, CVE-2011-0411: plaintext pipelined after STARTTLS is dropped unread.
        self._lines.discard_buffered()
        self._reader._buffer.clear()  # type: ignore[attr-defined]
        if self.session is not None:
            self.session.ssl = {"cipher": tls_transport.get_extra_info("cipher")}
        self.gateway.reset_after_tls(state)
        return None


def parse_xclient(arg: str) -> dict[str, str] | None:
    """`NAME=value ...` (values xtext-encoded) -> {NAME: value}; None when malformed.
    "[UNAVAILABLE]" and "[TEMPUNAVAIL]" values mean "not known" and are left out."""
    attributes: dict[str, str] = {}
    for item in arg.split():
        name, equals, value = item.partition("=")
        if not equals or not name.isalpha():
            return None
        decoded = xtext_decode(value)
        if decoded is None:
            return None
        if decoded.upper() not in ("[UNAVAILABLE]", "[TEMPUNAVAIL]"):
            attributes[name.upper()] = decoded
    return attributes if arg.strip() else None


def xtext_decode(value: str) -> str | None:
    """RFC 3461 4: "+XX" is the byte 0xXX."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "+":
            code = value[i + 1 : i + 3]
            if len(code) != 2 or not all(c in "0123456789ABCDEF" for c in code):
                return None
            out.append(chr(int(code, 16)))
            i += 3
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _repeated(params: Sequence[str]) -> bool:
    """A parameter given twice (RET=FULL RET=HDRS, NOTIFY=NEVER NOTIFY=SUCCESS): the last one
    silently won, and NOTIFY=NEVER's "alone" rule was passed that way."""
    keys = [param.partition("=")[0].upper() for param in params]
    return len(set(keys)) != len(keys)
