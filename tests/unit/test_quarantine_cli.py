"""`gateway quarantine ...` against a real store, the real spool and the real feedback store."""

from __future__ import annotations

import argparse
import datetime
import io
import json
import sqlite3
from pathlib import Path

import pytest

from gateway.config import Config, config_from_dict
from gateway.feedback import feedback_dir
from gateway.quarantine.admin import RELEASE_HEADER
from gateway.quarantine.cli_commands import (
    add_quarantine_commands,
    parse_since,
    run_quarantine_command,
)
from gateway.quarantine.store import Filter, QuarantineStore, State
from gateway.queue.spool import Spool
from tests.support.quarantine import hold, make_message


def run(config: Config, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gateway")
    add_quarantine_commands(parser.add_subparsers(dest="command", required=True))
    return run_quarantine_command(parser.parse_args(["quarantine", *argv]), config)


def spool_of(config: Config) -> Spool:
    return Spool(config.queue_dir, min_free_bytes=0)


def test_list_prints_a_table_and_json(
    quarantine_config: Config, quarantine_store: QuarantineStore, capsys: pytest.CaptureFixture[str]
) -> None:
    first = hold(quarantine_store, subject="first")
    second = hold(quarantine_store, subject="second", score=11.5)

    assert run(quarantine_config, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "ID" and "SUBJECT" in lines[0]
    assert lines[1].startswith(second) and "11.50" in lines[1] and lines[1].endswith("second")
    assert lines[2].startswith(first)

    assert run(quarantine_config, "list", "--json", "--min-score", "10") == 0
    [only] = json.loads(capsys.readouterr().out)
    assert only["id"] == second and only["subject"] == "second"
    assert [s["name"] for s in only["symbols"]] == ["HDR_MISSING_DATE", "GTUBE_QUARANTINE"]


def test_list_reports_corrupt_entries_and_still_lists_the_rest(
    quarantine_config: Config, quarantine_store: QuarantineStore, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = hold(quarantine_store), hold(quarantine_store)
    with sqlite3.connect(quarantine_store.index_path) as conn:
        conn.execute("UPDATE messages SET state = 'mangled' WHERE id = ?", (bad,))
    quarantine_store.message_path(good).unlink()

    assert run(quarantine_config, "list", "--state", "all") == 1
    captured = capsys.readouterr()
    assert good in captured.out and "held!" in captured.out
    assert bad in captured.out and "CORRUPT" in captured.out
    assert f"{good}: message file missing" in captured.err
    assert f"{bad}: unreadable index row" in captured.err


def test_show_prints_the_explanation(
    quarantine_config: Config, quarantine_store: QuarantineStore, capsys: pytest.CaptureFixture[str]
) -> None:
    qid = hold(quarantine_store)
    assert run(quarantine_config, "show", qid) == 0
    out = capsys.readouterr().out
    assert f"Quarantine id   {qid}" in out and "no Date header" in out and "Buy now" in out


def test_unknown_id_and_missing_store_are_clear_errors(
    quarantine_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(quarantine_config, "list") == 2
    assert "no quarantine store at" in capsys.readouterr().err

    store = QuarantineStore(quarantine_config.quarantine_dir)
    store.close()
    assert run(quarantine_config, "show", "0123456789abcdef") == 1
    assert "0123456789abcdef: no such quarantined message" in capsys.readouterr().err
    assert run(quarantine_config, "release", "../../etc/passwd") == 1
    assert "is not a quarantine id" in capsys.readouterr().err


def test_release_queues_the_original_with_a_header_and_learns_ham(
    quarantine_config: Config, quarantine_store: QuarantineStore, capsys: pytest.CaptureFixture[str]
) -> None:
    original = make_message(subject="wanted after all")
    qid = hold(
        quarantine_store, data=original, mail_from="news@ok.test", rcpt_tos=("a@example.test",)
    )

    assert run(quarantine_config, "release", qid, "--learn") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"released {qid} as queue id ") and "(learned as ham)" in out

    spool = spool_of(quarantine_config)
    [queue_id] = spool.ids()
    queued = spool.load(queue_id)
    assert (queued.mail_from, [r.address for r in queued.recipients]) == (
        "news@ok.test",
        ["a@example.test"],
    )
    header, _, rest = spool.read_data(queue_id).partition(b"\r\n")
    assert header.startswith(f"{RELEASE_HEADER}: id={qid}; by=".encode())
    assert rest == original
    assert [
        p.read_bytes() for p in (feedback_dir(quarantine_config.storage_dir) / "ham").iterdir()
    ] == [original]
    assert quarantine_store.get(qid).state == State.RELEASED

    assert run(quarantine_config, "release", qid) == 1
    assert "already released" in capsys.readouterr().err
    assert spool.ids() == [queue_id]


def test_delete_with_learn_spam(
    quarantine_config: Config, quarantine_store: QuarantineStore, capsys: pytest.CaptureFixture[str]
) -> None:
    original = make_message(subject="really spam")
    qid, other = hold(quarantine_store, data=original), hold(quarantine_store)

    assert run(quarantine_config, "delete", qid, "0123456789abcdef", "--learn-spam") == 1
    captured = capsys.readouterr()
    assert f"deleted {qid} (learned as spam)" in captured.out
    assert "0123456789abcdef: no such quarantined message" in captured.err
    spam = feedback_dir(quarantine_config.storage_dir) / "spam"
    assert [p.read_bytes() for p in spam.iterdir()] == [original]
    assert [e.id for e in quarantine_store.find(_all())] == [other]


def test_bulk_actions_ask_first(
    quarantine_config: Config,
    quarantine_store: QuarantineStore,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = hold(quarantine_store, rcpt_tos=("sales@example.test",))
    b = hold(quarantine_store, rcpt_tos=("sales@example.test",))
    keep = hold(quarantine_store, rcpt_tos=("ceo@example.test",))

    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert run(quarantine_config, "delete", "--rcpt", "sales@") == 1
    assert "delete 2 held message(s)? [y/N]" in capsys.readouterr().err
    assert len(quarantine_store.find(_all())) == 3

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no terminal: no consent
    assert run(quarantine_config, "release", "--rcpt", "sales@") == 1
    assert spool_of(quarantine_config).ids() == []

    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert run(quarantine_config, "release", "--rcpt", "sales@") == 0
    assert len(spool_of(quarantine_config).ids()) == 2

    assert run(quarantine_config, "delete", "--symbol", "HDR_MISSING_DATE", "--yes") == 0
    assert f"deleted {keep}" in capsys.readouterr().out
    assert {e.id for e in quarantine_store.find(_all())} == {a, b}  # released, kept for review


def test_usage_errors_exit_2(
    quarantine_config: Config, quarantine_store: QuarantineStore, capsys: pytest.CaptureFixture[str]
) -> None:
    qid = hold(quarantine_store)
    assert run(quarantine_config, "delete") == 2
    assert "give message ids, or filters" in capsys.readouterr().err
    assert run(quarantine_config, "delete", qid, "--rcpt", "x") == 2
    for argv in (["list", "--since", "yesterday"], ["list", "--limit", "-1"], ["frobnicate"]):
        with pytest.raises(SystemExit) as exc:
            run(quarantine_config, *argv)
        assert exc.value.code == 2
    assert "neither a duration" in capsys.readouterr().err


def _all() -> Filter:
    return Filter(states=(), limit=None)


def test_a_full_queue_keeps_the_message_held(
    tmp_path: Path, quarantine_store: QuarantineStore, capsys: pytest.CaptureFixture[str]
) -> None:
    qid = hold(quarantine_store)
    no_room = config_from_dict(
        {"storage": {"dir": str(tmp_path / "var")}, "queue": {"min_free_bytes": 2**62}}
    )
    assert run(no_room, "release", qid) == 1
    assert "less than" in capsys.readouterr().err  # the spool's own "no room" reason
    assert quarantine_store.get(qid).state == State.HELD
    assert spool_of(no_room).ids() == []
    assert run(no_room, "delete", qid) == 0  # and it is not stuck in a half-released state


def test_since_takes_durations_and_iso_times() -> None:
    now = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)
    assert parse_since("90m", now) == now.timestamp() - 5400
    assert parse_since("1w", now) == now.timestamp() - 7 * 86400
    assert (
        parse_since("2026-11-29", now)
        == datetime.datetime(2026, 11, 29, tzinfo=datetime.UTC).timestamp()
    )
    assert parse_since("2026-11-29T13:00+01:00", now) == now.timestamp()
    with pytest.raises(argparse.ArgumentTypeError):
        parse_since("last tuesday", now)


def test_release_and_delete_json_for_scripts(
    quarantine_config: Config, quarantine_store: QuarantineStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """`quarantine release|delete --json`, as the README promises (issue 32)."""
    first, second = hold(quarantine_store), hold(quarantine_store)
    assert run(quarantine_config, "release", first, "--json") == 0
    [released] = json.loads(capsys.readouterr().out)
    assert released["id"] == first and released["result"] == "released"
    assert released["queue_id"] in spool_of(quarantine_config).ids()
    assert released["learned"] is False
    missing = "0123456789abcdef"
    assert run(quarantine_config, "delete", second, missing, "--json", "--learn-spam") == 1
    captured = capsys.readouterr()
    deleted, refused = json.loads(captured.out)
    assert deleted == {"id": second, "result": "deleted", "learned": True}
    assert refused["id"] == missing and "no such quarantined message" in refused["error"]
    assert refused["error"] in captured.err
