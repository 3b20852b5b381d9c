"""What an admin does to a held message: release it to the queue or delete it, and teach the
classifier with it. Works on one id at a time; the CLI picks the ids and reports."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable
from typing import Protocol

from gateway.errors import AlreadyQueued, GatewayError, QuarantineError
from gateway.ourfields import remove_our_fields
from gateway.quarantine.store import QuarantineStore

RELEASE_HEADER = "X-Quarantine-Released"

# Records one raw message as feedback (ham for a release, spam for a confirmed deletion).
Learn = Callable[[bytes], object]


class MessageSink(Protocol):
    """Where released mail goes: the durable queue (gateway.queue.spool.Spool)."""

    def enqueue(self, msg_id: str, mail_from: str, rcpt_tos: list[str], data: bytes) -> object: ...


def release(
    store: QuarantineStore,
    sink: MessageSink,
    qid: str,
    *,
    released_by: str,
    authserv_id: str,
    learn_ham: Learn | None = None,
    now: float | None = None,
) -> str:
    """Hand the original message to the queue at most once; returns its queue id.

    The store row is claimed first, so two admins releasing at the same moment enqueue it once;
    if the queue refuses the message, the claim is given back and the message stays held.

    The row is marked released *before* the queue gets the message: a release retaking the
    claim of one that died after queueing then finds it released, even once the message has
    been delivered and left the queue (where AlreadyQueued could no longer say so). The price
    is that a crash during the enqueue itself leaves a message marked released that never
    reached the queue; it stays in the store for the admin, whereas a second delivery could
    not be taken back.
    """
    entry = store.claim_release(qid, now=now)
    try:
        raw = store.read_message(qid)
        relayed = remove_our_fields(raw, authserv_id, below_our_stamp=True)
        data = with_release_header(relayed, qid, released_by, now)
    except BaseException:
        store.abandon_release(entry)
        raise
    store.mark_released(entry, now=now)
    try:
        sink.enqueue(entry.release_id, entry.mail_from, list(entry.rcpt_tos), data)
    except AlreadyQueued:
        # A claim left by an older gateway that died after queueing (it marked the row only
        # afterwards), retaken: the queue has the message, so it is released.
        pass
    except Exception:
        # The queue refused it, having written nothing (SpoolFull, SpoolError): held again.
        # Not on KeyboardInterrupt and the like, which may come after the message was queued.
        store.abandon_release(entry)
        raise
    if learn_ham is not None:
        try:
            learn_ham(raw)  # the message as received, without our release header
        except (GatewayError, OSError) as exc:
            raise QuarantineError(
                f"{qid} was released as queue id {entry.release_id}, "
                f"but recording it as ham failed: {exc}"
            ) from exc
    return entry.release_id


def delete(store: QuarantineStore, qid: str, *, learn_spam: Learn | None = None) -> None:
    """Remove a held message; with `learn_spam`, first record it as confirmed spam."""
    if learn_spam is not None:
        learn_spam(store.read_message(qid))
    store.delete(qid)


# Our own verdict field, which the gateway put on top of the held message (smtp/stamp.py).
_OUR_SPAM_STATUS = re.compile(rb"(?im)^(X-Spam-Status:[ \t]*)Yes\b")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def with_release_header(raw: bytes, qid: str, released_by: str, now: float | None) -> bytes:
    """The original message with one header on top saying who released it and when, and our
    X-Spam-Status turned to "No": a person decided it is not spam, so the users' Junk rules
    must not file it away again."""
    newline = b"\r\n" if raw.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
    who = "".join(c for c in released_by if c.isascii() and c.isprintable() and c != ";")
    who = who or "unknown"
    value = f"id={qid}; by={who}; {email.utils.formatdate(now, usegmt=True)}"
    return f"{RELEASE_HEADER}: {value}".encode() + newline + _as_released(raw)


def _as_released(raw: bytes) -> bytes:
    """The first X-Spam-Status of the header section (ours: stamped on top) saying No."""
    blank = _BLANK_LINE.search(raw)
    head_end = len(raw) if blank is None else blank.start()
    match = _OUR_SPAM_STATUS.search(raw, 0, head_end)
    if match is None:
        return raw
    return raw[: match.start()] + match.group(1) + b"No" + raw[match.end() :]
