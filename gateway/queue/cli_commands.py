"""`gateway queue list|show|flush|hold|release|delete`: the admin's view of the delivery queue.

Works on the spool files directly, so it runs beside a live gateway: flush and release make
messages due, and the running gateway picks them up on its next scan.
Exit codes: 0 done; 1 an id was not found or busy, or only part of the work was done; 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from gateway.config import Config
from gateway.errors import SpoolError
from gateway.queue import admin
from gateway.queue.spool import Spool

Command = Callable[[argparse.Namespace, Spool, float], int]


def add_queue_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `queue ...`; the caller then runs `run_queue_command(args, config)`."""
    parser = subparsers.add_parser("queue", help="inspect and manage the delivery queue")
    actions = parser.add_subparsers(dest="queue_command", required=True, metavar="ACTION")

    list_parser = actions.add_parser("list", help="list queued messages, oldest first")
    list_parser.add_argument(
        "--state",
        choices=["all", "deferred", "held", "failed"],
        default="all",
        help="all queued (default), only deferred, only held, or the failed ones kept",
    )
    list_parser.add_argument("--sender", default="", metavar="TEXT", help="sender contains TEXT")
    list_parser.add_argument("--rcpt", default="", metavar="TEXT", help="a recipient contains TEXT")
    list_parser.add_argument("--json", action="store_true", help="a JSON array for scripts")

    show_parser = actions.add_parser("show", help="envelope, per-recipient state and headers")
    show_parser.add_argument("id", metavar="ID")
    show_parser.add_argument("--json", action="store_true", help="the entry as JSON")

    flush_parser = actions.add_parser("flush", help="make every deferred message due now")
    flush_parser.add_argument("--json", action="store_true", help="flushed and busy ids as JSON")

    for name, text in (
        ("hold", "stop delivery attempts for these messages"),
        ("release", "deliver held messages again, now"),
        ("delete", "remove messages for good (queued or failed), no bounce"),
    ):
        one = actions.add_parser(name, help=text)
        one.add_argument("ids", nargs="+", metavar="ID")
        one.add_argument("--json", action="store_true", help="one result object per id")

    for action in actions.choices.values():
        # Also after the action (`queue list --config F`), as admins type it and as
        # `quarantine` takes it; SUPPRESS keeps a --config given before the action.
        action.add_argument(
            "--config", metavar="PATH", default=argparse.SUPPRESS, help="TOML configuration"
        )


def run_queue_command(args: argparse.Namespace, config: Config) -> int:
    try:
        spool = Spool(config.queue_dir, config.queue.min_free_bytes)
    except SpoolError as exc:
        _error(str(exc))
        return 2
    command: Command = {
        "list": _list,
        "show": _show,
        "flush": _flush,
        "hold": _for_each(_hold),
        "release": _for_each(_release),
        "delete": _for_each(_delete),
    }[args.queue_command]
    return command(args, spool, time.time())


def _list(args: argparse.Namespace, spool: Spool, now: float) -> int:
    where = admin.QueueFilter(state=args.state, sender=args.sender, rcpt=args.rcpt)
    entries = admin.list_entries(spool, where)
    failed = args.state == "failed"
    if args.json:
        print(json.dumps([admin.entry_json(e, now, failed) for e in entries], indent=2))
    elif entries:
        print(admin.render_table(entries, now, failed))
    else:
        print("queue: no matching messages", file=sys.stderr)
    return 0


def _show(args: argparse.Namespace, spool: Spool, now: float) -> int:
    try:
        entry, failed = admin.find(spool, args.id)
        headers = admin.message_headers(spool.read_data(args.id, failed))
    except SpoolError as exc:
        _error(str(exc))
        return 1
    if args.json:
        print(json.dumps({**admin.entry_json(entry, now, failed), "headers": headers}, indent=2))
    else:
        print(admin.render_show(entry, headers, now, failed))
    return 0


def _flush(args: argparse.Namespace, spool: Spool, now: float) -> int:
    flushed, busy = admin.flush(spool, now)
    if args.json:
        print(json.dumps({"flushed": flushed, "busy": busy}))
    else:
        print(f"queue: {len(flushed)} message(s) due now; {len(busy)} being delivered already")
    return 0


def _hold(spool: Spool, msg_id: str, now: float) -> str:
    admin.hold(spool, msg_id)
    return "held"


def _release(spool: Spool, msg_id: str, now: float) -> str:
    admin.release(spool, msg_id, now)
    return "released"


def _delete(spool: Spool, msg_id: str, now: float) -> str:
    admin.delete(spool, msg_id)
    return "deleted"


def _for_each(action: Callable[[Spool, str, float], str]) -> Command:
    """Run `action` on every id given; report each; 1 if any failed."""

    def run(args: argparse.Namespace, spool: Spool, now: float) -> int:
        results: list[dict[str, str]] = []
        for msg_id in dict.fromkeys(args.ids):
            try:
                results.append({"id": msg_id, "result": action(spool, msg_id, now)})
            except SpoolError as exc:
                results.append({"id": msg_id, "error": str(exc)})
        if args.json:
            print(json.dumps(results, indent=2))
        for result in results:
            if "error" in result:
                _error(result["error"])
            elif not args.json:
                print(f"queue: {result['id']} {result['result']}")
        return 1 if any("error" in r for r in results) else 0

    return run


def _error(text: str) -> None:
    print(f"queue: {admin.printable(text)}", file=sys.stderr)
