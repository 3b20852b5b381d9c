"""`gateway quarantine list|show|release|delete`: the admin's view of held messages.

Exit codes: 0 done; 1 an id was not found, an entry is corrupt, the store is locked, or only
part of the work was done; 2 usage or configuration (including a missing store).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import getpass
import json
import re
import shutil
import sys
from collections.abc import Callable
from typing import Literal

from gateway.config import Config
from gateway.errors import GatewayError, QuarantineError, QuarantineMissing
from gateway.feedback import record_feedback
from gateway.quarantine import admin, render
from gateway.quarantine.store import CorruptEntry, Filter, QuarantineStore, State
from gateway.queue.spool import Spool

CLI_BUSY_TIMEOUT_S = 5.0  # an admin would rather hear "locked, try again" than wait long
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_FILTER_OPTIONS = ("since", "rcpt", "sender", "min_score", "symbol")


def add_quarantine_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register `quarantine ...`; the caller then runs `run_quarantine_command(args, config)`."""
    parser = subparsers.add_parser("quarantine", help="review, release and delete held messages")
    actions = parser.add_subparsers(dest="quarantine_command", required=True, metavar="ACTION")

    list_parser = actions.add_parser("list", help="list held messages, newest first")
    _add_filters(list_parser)
    list_parser.add_argument(
        "--limit",
        type=_non_negative_int,
        default=50,
        help="show at most N entries (default 50, 0 = all)",
    )
    list_parser.add_argument(
        "--state",
        choices=["held", "released", "all"],
        default="held",
        help="which entries to list (default held)",
    )
    list_parser.add_argument("--json", action="store_true", help="a JSON array for scripts")

    show_parser = actions.add_parser("show", help="headers, score breakdown and a text preview")
    show_parser.add_argument("id", metavar="ID")
    show_parser.add_argument("--json", action="store_true", help="the entry's metadata as JSON")

    release_parser = actions.add_parser(
        "release", help="relay held messages to the internal server (by id or by filter)"
    )
    release_parser.add_argument("ids", nargs="*", metavar="ID")
    _add_filters(release_parser)
    release_parser.add_argument(
        "--learn", action="store_true", help="also record the messages as ham for the next training"
    )
    release_parser.add_argument(
        "--yes", action="store_true", help="act on every filter match without asking"
    )

    delete_parser = actions.add_parser("delete", help="delete held messages (by id or by filter)")
    delete_parser.add_argument("ids", nargs="*", metavar="ID")
    _add_filters(delete_parser)
    delete_parser.add_argument(
        "--learn-spam",
        action="store_true",
        help="record the messages as spam for the next training first",
    )
    delete_parser.add_argument(
        "--yes", action="store_true", help="act on every filter match without asking"
    )
    for acting in (release_parser, delete_parser):
        acting.add_argument("--json", action="store_true", help="a JSON array, one result per id")
    for action_parser in (list_parser, show_parser, release_parser, delete_parser):
        # Also after the action (`quarantine list --config F`), as admins type it; SUPPRESS
        # keeps a --config given before the action when none follows it.
        action_parser.add_argument(
            "--config", metavar="PATH", default=argparse.SUPPRESS, help="TOML configuration"
        )


def run_quarantine_command(args: argparse.Namespace, config: Config) -> int:
    try:
        store = QuarantineStore(
            config.quarantine_dir, create=False, busy_timeout_s=CLI_BUSY_TIMEOUT_S
        )
    except QuarantineMissing as exc:
        _error(str(exc))
        return 2
    except QuarantineError as exc:
        _error(str(exc))
        return 1
    try:
        command: Callable[[argparse.Namespace, Config, QuarantineStore], int] = {
            "list": _list,
            "show": _show,
            "release": _release,
            "delete": _delete,
        }[args.quarantine_command]
        return command(args, config, store)
    except GatewayError as exc:  # the store or the queue as a whole failed (locked, damaged)
        _error(render.safe_text(str(exc)))
        return 1
    finally:
        store.close()


# -- commands --------------------------------------------------------------------------------


def _list(args: argparse.Namespace, config: Config, store: QuarantineStore) -> int:
    states = () if args.state == "all" else (State(args.state),)  # (): even unknown states
    entries = store.find(_filter(args, states=states, limit=args.limit or None))
    if args.json:
        # One entry per line: still one JSON array, but greppable and compact at 100k entries.
        lines = ",\n".join(json.dumps(render.entry_json(e)) for e in entries)
        print(f"[\n{lines}\n]" if lines else "[]")
    elif entries:
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        print(render.table(entries, width))
    else:
        print("no matching messages", file=sys.stderr)
    problems = [e for e in entries if isinstance(e, CorruptEntry) or e.problem]
    for entry in problems:
        _error(render.safe_text(f"{entry.id}: {entry.problem}"))
    return 1 if problems else 0


def _show(args: argparse.Namespace, config: Config, store: QuarantineStore) -> int:
    entry = store.get(args.id)
    raw = None if entry.problem else store.read_message(entry.id)
    if args.json:
        print(json.dumps(render.entry_json(entry), indent=2))
    else:
        print(render.show(entry, raw))
    return 1 if raw is None else 0


def _release(args: argparse.Namespace, config: Config, store: QuarantineStore) -> int:
    ids = _chosen_ids(args, store, "release")
    if ids is None:
        return 2
    spool = Spool(root=config.queue_dir, min_free_bytes=config.queue.min_free_bytes)
    learn = _learner(config, "ham") if args.learn else None
    released_by = _current_user()
    hostname = config.smtp.hostname

    def one(qid: str) -> Outcome:
        queue_id = admin.release(
            store, spool, qid, released_by=released_by, authserv_id=hostname, learn_ham=learn
        )
        text = f"released {qid} as queue id {queue_id}" + (" (learned as ham)" if learn else "")
        return text, {"result": "released", "queue_id": queue_id, "learned": learn is not None}

    return _for_each(ids, one, args.json)


def _delete(args: argparse.Namespace, config: Config, store: QuarantineStore) -> int:
    ids = _chosen_ids(args, store, "delete")
    if ids is None:
        return 2
    learn = _learner(config, "spam") if args.learn_spam else None

    def one(qid: str) -> Outcome:
        admin.delete(store, qid, learn_spam=learn)
        text = f"deleted {qid}" + (" (learned as spam)" if learn else "")
        return text, {"result": "deleted", "learned": learn is not None}

    return _for_each(ids, one, args.json)


# -- helpers ---------------------------------------------------------------------------------


def _chosen_ids(args: argparse.Namespace, store: QuarantineStore, verb: str) -> list[str] | None:
    """The ids named, or every held match of the filters once confirmed; None = usage error.

    An empty list means nothing to do (no match, or the admin said no).
    """
    filtering = any(getattr(args, name) is not None for name in _FILTER_OPTIONS)
    if args.ids and filtering:
        _error(f"{verb}: give message ids or filters, not both")
        return None
    if args.ids:
        return list(dict.fromkeys(args.ids))  # each id once, in the order given
    if not filtering:
        _error(
            f"{verb}: give message ids, or filters (--since, --rcpt, --sender, --min-score, "
            "--symbol) to act on every held match"
        )
        return None
    ids = [e.id for e in store.find(_filter(args, states=(State.HELD,), limit=None))]
    if not ids:
        print("no held messages match", file=sys.stderr)
        return []
    if args.yes or _confirm(f"{verb} {len(ids)} held message(s)? [y/N] "):
        return ids
    print("nothing done", file=sys.stderr)
    return []


# What one release or delete did: the line for people, the fields for --json.
Outcome = tuple[str, dict[str, object]]


def _for_each(ids: list[str], action: Callable[[str], Outcome], as_json: bool = False) -> int:
    """Run `action` on every id, report each outcome; 1 if any failed or nothing was chosen.
    With `as_json`, stdout is one JSON array of {"id", "result", ...} or {"id", "error"};
    the errors still go to stderr too."""
    failed = 0
    results: list[dict[str, object]] = []
    for qid in ids:
        try:
            text, fields = action(qid)
        except (GatewayError, OSError) as exc:
            failed += 1
            _error(render.safe_text(str(exc)))
            results.append({"id": qid, "error": str(exc)})
            continue
        results.append({"id": qid, **fields})
        if not as_json:
            print(render.safe_text(text))
    if as_json:
        print(json.dumps(results, indent=2))
    return 1 if failed or not ids else 0


def _confirm(prompt: str) -> bool:
    print(prompt, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()  # "" at end of input: no terminal, no consent
    return answer.strip().lower() in ("y", "yes")


def _filter(args: argparse.Namespace, states: tuple[State, ...], limit: int | None) -> Filter:
    return Filter(
        since=args.since,
        rcpt=args.rcpt,
        sender=args.sender,
        min_score=args.min_score,
        symbol=args.symbol,
        states=states,
        limit=limit,
    )


def _learner(config: Config, label: Literal["ham", "spam"]) -> admin.Learn:
    return functools.partial(record_feedback, config.storage_dir, label)


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        return "unknown"


def _error(text: str) -> None:
    print(f"quarantine: {text}", file=sys.stderr)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        type=parse_since,
        metavar="WHEN",
        help="received at or after WHEN: 2h, 3d, 1w, or an ISO date/time (UTC)",
    )
    parser.add_argument("--rcpt", metavar="TEXT", help="an envelope recipient contains TEXT")
    parser.add_argument(
        "--sender", metavar="TEXT", help="the envelope sender or the From header contains TEXT"
    )
    parser.add_argument("--min-score", type=float, metavar="SCORE", help="score at least SCORE")
    parser.add_argument("--symbol", metavar="NAME", help="the verdict has symbol NAME")


def parse_since(text: str, now: datetime.datetime | None = None) -> float:
    """'90m', '2h', '3d', '1w' before now, or an ISO date/time (UTC unless it says otherwise)."""
    now = now or datetime.datetime.now(datetime.UTC)
    if match := _DURATION.fullmatch(text.strip().lower()):
        return now.timestamp() - float(match[1]) * _UNIT_S[match[2]]
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (30m, 2h, 3d, 1w) nor an ISO date/time"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value
