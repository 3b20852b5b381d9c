"""The feedback store: raw messages an admin labelled as ham or spam, for the next `make train`.

Layout: `<storage_dir>/feedback/{ham,spam}/<message_digest>.eml`. Naming by content makes
recording idempotent, and a message relabelled later moves to the other side instead of
appearing under both labels; the digest reads CRLF as LF, so the quarantine's copy (SMTP line
ends) and a mailbox's copy of one message are one message. Writes are atomic (temp file,
fsync, rename, fsync the directory), so a crash never leaves a half-written message for
training to read.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Literal

from gateway.errors import GatewayError
from gateway.files import private_dir, write_durably
from gateway.mailsources import iter_messages

Label = Literal["ham", "spam"]
LABELS: tuple[Label, Label] = ("ham", "spam")
FEEDBACK_DIR = "feedback"


def feedback_dir(storage_dir: str | Path) -> Path:
    return Path(storage_dir) / FEEDBACK_DIR


def message_digest(raw: bytes) -> str:
    """sha256 of the message with CRLF line ends read as LF: the same message whether it came
    over SMTP or from a mailbox file."""
    return hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()


def feedback_path(storage_dir: str | Path, label: Label, raw_bytes: bytes) -> Path:
    return feedback_dir(storage_dir) / label / f"{message_digest(raw_bytes)}.eml"


def record_feedback(storage_dir: str | Path, label: Label, raw_bytes: bytes) -> Path:
    """Store `raw_bytes` as a `label` example and return its path; the opposite label is dropped."""
    if label not in LABELS:
        raise ValueError(f"label must be 'ham' or 'spam', not {label!r}")
    target = feedback_path(storage_dir, label, raw_bytes)
    _store(target, _other_side(target, label), raw_bytes)
    return target


def _other_side(target: Path, label: Label) -> Path:
    """Where the same message would sit under the opposite label."""
    return target.parent.with_name(_opposite(label)) / target.name


def _store(target: Path, other_side: Path, raw_bytes: bytes) -> None:
    private_dir(target.parent)
    if not target.exists():
        write_durably(target, raw_bytes, replace=True)
    other_side.unlink(missing_ok=True)


def _opposite(label: Label) -> Label:
    return "spam" if label == "ham" else "ham"


def add_learn_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `learn --spam|--ham PATH...`; the handler is set as `func(args, storage_dir)`."""
    parser = subparsers.add_parser(
        "learn",
        help="add messages (files, Maildirs, mbox) to the feedback store for the next training",
    )
    side = parser.add_mutually_exclusive_group(required=True)
    where = "the feedback store, <[storage] dir>/feedback (./var/feedback by default)"
    side.add_argument(
        "--spam", dest="label", action="store_const", const="spam", help=f"file as spam in {where}"
    )
    side.add_argument(
        "--ham", dest="label", action="store_const", const="ham", help=f"file as ham in {where}"
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="message file, Maildir or mbox")
    parser.set_defaults(func=run_learn)


def run_learn(args: argparse.Namespace, storage_dir: str | Path) -> int:
    """Record every message under `args.paths`; unreadable sources are reported, not fatal."""
    stored = known = moved = 0
    problems = 0

    def skipped(path: Path, reason: str) -> None:
        nonlocal problems
        problems += 1
        print(f"learn: skipped {path}: {reason}", file=sys.stderr)

    for path in args.paths:
        try:
            for message in iter_messages(Path(path), on_skip=skipped):
                target = feedback_path(storage_dir, args.label, message.raw)
                other_side = _other_side(target, args.label)
                known += target.exists()
                moved += other_side.exists()
                _store(target, other_side, message.raw)
                stored += 1
        except GatewayError as exc:
            print(f"learn: {exc}", file=sys.stderr)
            problems += 1
        except OSError as exc:  # the store itself: not writable, disk full
            where = feedback_dir(storage_dir) / args.label
            print(f"learn: cannot write to {where}: {exc.strerror or exc}", file=sys.stderr)
            print(f"learn: recorded {stored} message(s) as {args.label} before that")
            return 2
    where = feedback_dir(storage_dir) / args.label
    print(
        f"learn: recorded {stored} message(s) as {args.label} in {where} ({stored - known - moved} "
        f"new, {moved} moved from {_opposite(args.label)}, {known} already there)"
    )
    return 1 if problems else 0
