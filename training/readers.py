"""Labelled messages from corpora (a directory with `ham/` and `spam/`) and the feedback store.

Each side may be a directory tree of raw messages, a Maildir or an mbox file; see
`gateway.mailsources`. A message the admin labelled through feedback overrides the corpus label
of the same message (see `gateway.feedback.message_digest`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from pathlib import Path

from gateway.content import parse_headers
from gateway.feedback import message_digest
from gateway.mailsources import SkipHandler, iter_messages

SPAM, HAM = 1, 0
LABEL_DIRS = {"ham": HAM, "spam": SPAM}
# Dates outside this range are forged or broken (spam dated 1980 or 2028) and not used to order.
PLAUSIBLE_YEARS = range(1995, datetime.now(UTC).year + 2)
# A discussion list's post (RFC 2919, RFC 2369): List-Unsubscribe alone is not enough, every
# bulk sender sets it. See training/weights.py.
LIST_HEADERS = ("List-Id", "List-Post", "Mailing-List")


@dataclass(frozen=True, slots=True)
class Example:
    raw: bytes
    label: int  # SPAM or HAM
    origin: str
    date: datetime | None
    # From the feedback store (`gateway learn`, quarantine --learn): the admin's own verdicts,
    # always trained on, never held out.
    learnt: bool = False
    list_mail: bool = False  # posted through a discussion list (LIST_HEADERS)
    # From a public corpus (--public-corpus), not this site's mail: its held-out part is no
    # evidence of how the model does on the site's mail (gateway/checks/classifier_tiers.py).
    public: bool = False


class CorpusError(Exception):
    """A corpus directory lacks the expected layout."""


def read_labelled_dir(
    root: Path,
    on_skip: SkipHandler,
    on_read: Callable[[], object] | None = None,
    public: bool = False,
) -> list[Example]:
    """Messages under `root/ham` and `root/spam` (each: directory, Maildir or mbox);
    `on_read` is called after each message (a progress bar); `public`: see Example."""
    sides = [(root / name, label) for name, label in LABEL_DIRS.items() if (root / name).exists()]
    if not sides:
        raise CorpusError(f"{root}: expected a ham/ and/or spam/ entry (directory, Maildir, mbox)")
    examples = []
    for side, label in sides:
        for message in iter_messages(side, on_skip):
            headers = parse_headers(message.raw)
            examples.append(
                Example(
                    message.raw,
                    label,
                    message.origin,
                    message_date(headers),
                    list_mail=is_list_mail(headers),
                    public=public,
                )
            )
            if on_read is not None:
                on_read()
    return examples


def merge(
    corpora: Iterable[list[Example]],
    on_conflict: Callable[[Example, Example], None] | None = None,
) -> list[Example]:
    """One example per distinct message; a later source (feedback) overrides an earlier label.
    `on_conflict(kept, dropped)` hears of one message filed under both labels by corpora
    (a labelling mistake to fix), not of feedback relabelling a corpus message (its purpose)."""
    by_digest: dict[str, Example] = {}
    for examples in corpora:
        for example in examples:
            digest = message_digest(example.raw)
            earlier = by_digest.get(digest)
            if (
                on_conflict is not None
                and earlier is not None
                and earlier.label != example.label
                and not example.learnt
            ):
                on_conflict(example, earlier)
            by_digest[digest] = example
    return list(by_digest.values())


def is_list_mail(headers: Message) -> bool:
    return any(headers.get(name) is not None for name in LIST_HEADERS)


def message_date(headers: Message) -> datetime | None:
    """The Date header as aware UTC datetime, or None when missing, broken or implausible."""
    value = headers.get("Date")
    if value is None:
        return None
    try:
        date = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    return date.astimezone(UTC) if date.year in PLAUSIBLE_YEARS else None
