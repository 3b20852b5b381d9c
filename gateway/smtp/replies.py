"""Every SMTP reply the front end sends: one place, each with an RFC 3463 enhanced status code.

Fixed replies are constants; replies that carry a value are small functions. Tests assert
against these, so the wording can change here without touching the tests.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^\x20-\x7e]")
MAX_REASON_CHARS = 200


def _printable(text: str) -> str:
    # Reasons can quote what a client sent: never let a CR or LF start a second reply.
    return _UNSAFE.sub("?", text)


def _reason(text: str) -> str:
    return _printable(text)[:MAX_REASON_CHARS]


# -- session -------------------------------------------------------------------------------
CLOSING = "221 2.0.0 Bye"
NO_SERVICE = "503 5.5.1 No service here, only QUIT"
NOOP = "250 2.0.0 Ok"
RESET = "250 2.0.0 Ok: reset"
HELP = "214 2.0.0 See RFC 5321"
VRFY = "252 2.5.2 Cannot VRFY user, but will accept message for valid recipients"
START_MAIL = "354 End data with <CR><LF>.<CR><LF>"
STARTTLS_READY = "220 2.0.0 Ready to start TLS"

# -- protocol errors (each counts as a bad command) ----------------------------------------
UNKNOWN_COMMAND = "500 5.5.2 Command not recognized"
LINE_TOO_LONG = "500 5.5.2 Line too long"
NOT_IMPLEMENTED = "502 5.5.1 Command not implemented"
NEED_HELO = "503 5.5.1 Send HELO or EHLO first"
NEED_MAIL = "503 5.5.1 Need MAIL command first"
NESTED_MAIL = "503 5.5.1 Sender already given"
XCLIENT_DENIED = "550 5.7.0 Error: insufficient authorization"  # Postfix's wording
XCLIENT_IN_TRANSACTION = "503 5.5.1 Error: MAIL transaction in progress"
XFORWARD_OK = "250 2.0.0 Ok"
NEED_RCPT = "503 5.5.1 Need RCPT command first"
ALREADY_TLS = "503 5.5.1 TLS already active"
TLS_UNAVAILABLE = "454 4.7.0 TLS not available"
BAD_SENDER = "553 5.1.7 Malformed sender address"
UNKNOWN_PARAMETER = "555 5.5.4 Unsupported MAIL or RCPT parameter"
BAD_BODY_TYPE = "501 5.5.4 BODY must be 7BIT or 8BITMIME"
BAD_DSN_PARAMETER = "501 5.5.4 Malformed DSN parameter (RFC 3461)"
DUPLICATE_PARAMETER = "501 5.5.4 The same MAIL or RCPT parameter given twice"
NON_ASCII_WITHOUT_SMTPUTF8 = "553 5.6.7 Non-ASCII address needs SMTPUTF8"


def syntax(usage: str) -> str:
    return f"501 5.5.4 Syntax: {usage}"


# -- limits --------------------------------------------------------------------------------
MESSAGE_TOO_BIG = "552 5.3.4 Message too big"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
UNKNOWN_RECIPIENT = "550 5.1.1 Recipient address rejected: user unknown"
RECIPIENT_UNVERIFIED = "451 4.4.3 Recipient address cannot be verified now, try again later"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
TOO_MANY_CONNECTIONS_FROM_IP = "421 4.7.0 Too many connections from your address"
TOO_MANY_ERRORS = "421 4.7.0 Too many errors, closing connection"
IDLE_TIMEOUT = "421 4.4.2 Idle timeout, closing connection"
SESSION_TIMEOUT = "421 4.4.2 Session time limit reached, closing connection"
DATA_TOO_SLOW = "421 4.4.2 Message data arriving too slowly, closing connection"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
BARE_LINE_ENDING = "550 5.6.0 Bare CR or LF in message data (only CRLF ends a line)"
NO_STORAGE = "452 4.3.1 Insufficient system storage, try again later"
QUARANTINE_FULL = "451 4.3.1 Cannot hold this message now (quarantine full), try again later"


def too_big(limit_bytes: int) -> str:
    return f"552 5.3.4 Message too big (limit {limit_bytes} bytes)"


def too_many_hops(hops: int, limit: int) -> str:
    return f"554 5.4.6 Routing loop detected: {hops} Received header fields (limit {limit})"


# -- relay gate ----------------------------------------------------------------------------
def relay_denied(why: str) -> str:
    return f"550 5.7.1 Relay access denied: {why}"


# -- verdicts --------------------------------------------------------------------------------
def sender_ok() -> str:
    return "250 2.1.0 Sender ok"


def recipient_ok() -> str:
    return "250 2.1.5 Recipient ok"


def queued(msg_id: str) -> str:
    return f"250 2.0.0 Ok: queued as {msg_id}"


def held(quarantine_id: str) -> str:
    return f"250 2.0.0 Ok: held as {quarantine_id}"


def rejected(tx_id: str, reason: str) -> str:
    return f"550 5.7.1 Message rejected ({_reason(reason)}), transaction {tx_id}"


def refused(tx_id: str, reason: str) -> str:
    """A reject at HELO, MAIL or RCPT (RFC 5321 4.3.2 lists 550, not 554, for those)."""
    return f"550 5.7.1 Refused ({_reason(reason)}), transaction {tx_id}"


def refused_at_connect(tx_id: str, reason: str) -> str:
    return f"554 5.7.1 Refused ({_reason(reason)}), transaction {tx_id}"


def deferred(tx_id: str, reason: str) -> str:
    return f"451 4.7.1 Try again later ({_reason(reason)}), transaction {tx_id}"


def deferred_at_connect(tx_id: str, reason: str) -> str:
    # Only 421 may close the session at the greeting (RFC 5321 3.8).
    return f"421 4.7.1 Try again later ({_reason(reason)}), transaction {tx_id}"


def internal_error(tx_id: str) -> str:
    return f"451 4.3.0 Internal error, transaction {tx_id}"


def internal_error_closing(tx_id: str) -> str:
    return f"421 4.3.0 Internal error, transaction {tx_id}"


def storage_error(tx_id: str) -> str:
    return f"451 4.3.0 Temporary storage failure, transaction {tx_id}"


def greeting(hostname: str, banner: str) -> str:
    return f"220 {hostname} {banner}"


def ehlo(hostname: str, extensions: list[str]) -> list[str]:
    """The multi-line EHLO reply: our name, then one extension per line."""
    lines = [hostname, *extensions]
    return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]


def helo(hostname: str) -> str:
    return f"250 {hostname}"


def configured(reply: str) -> str:
    """A reply from the rules (actions.toml), with a symbol reason substituted into it."""
    return _printable(reply)[:510]


def code_of(reply: str) -> int:
    return int(reply[:3])
