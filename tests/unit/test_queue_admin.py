"""Queue administration: list/show/flush/hold/release/delete, as functions and via the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from gateway.config import Config, config_from_dict
from gateway.errors import SpoolError
from gateway.queue import admin
from gateway.queue.cli_commands import add_queue_commands, run_queue_command
from gateway.queue.spool import Spool

MESSAGE = b"From: a@example.org\r\nSubject: hello\r\n\r\nsecret body\r\n"
NOW = 2_000_000_000.0


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return config_from_dict({"storage": {"dir": str(tmp_path)}, "queue": {"min_free_bytes": 0}})


@pytest.fixture
def spool(config: Config) -> Spool:
    spool = Spool(config.queue_dir, min_free_bytes=0)
    spool.enqueue("m1", "alice@example.org", ["bob@example.test"], MESSAGE, now=NOW - 3600)
    spool.enqueue("m2", "carol@example.net", ["dave@example.test"], MESSAGE, now=NOW - 60)
    return spool


def cli(config: Config, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gateway")
    add_queue_commands(parser.add_subparsers(dest="command", required=True))
    return run_queue_command(parser.parse_args(["queue", *argv]), config)


def defer(spool: Spool, msg_id: str, until: float) -> None:
    with spool.claimed(msg_id) as claim:
        assert claim is not None
        claim.update(dataclasses.replace(claim.entry, next_attempt_at=until, attempts=2))


def test_list_filters_by_sender_recipient_and_state(spool: Spool) -> None:
    def ids(where: admin.QueueFilter) -> list[str]:
        return [e.id for e in admin.list_entries(spool, where)]

    assert ids(admin.QueueFilter()) == ["m1", "m2"]
    assert ids(admin.QueueFilter(sender="ALICE")) == ["m1"]
    assert ids(admin.QueueFilter(rcpt="dave@")) == ["m2"]
    admin.hold(spool, "m2")
    assert ids(admin.QueueFilter(state="held")) == ["m2"]
    assert ids(admin.QueueFilter(state="deferred")) == ["m1"]
    assert ids(admin.QueueFilter(state="failed")) == []


def test_stats_report_size_and_oldest_age(spool: Spool) -> None:
    admin.hold(spool, "m1")
    stats = admin.stats(spool, NOW)
    assert (stats.size, stats.held, stats.bytes) == (2, 1, 2 * len(MESSAGE))
    assert stats.oldest_age_s == 3600.0


def test_flush_makes_deferred_due_but_not_held(spool: Spool) -> None:
    defer(spool, "m1", NOW + 999)
    defer(spool, "m2", NOW + 999)
    admin.hold(spool, "m2")
    assert admin.flush(spool, NOW) == (["m1"], [])
    assert spool.load("m1").next_attempt_at == NOW
    assert spool.load("m2").next_attempt_at == NOW + 999


def test_busy_message_is_reported_not_changed(spool: Spool) -> None:
    with spool.claimed("m1") as claim:  # a delivery worker holds it
        assert claim is not None
        assert admin.flush(spool, NOW) == (["m2"], ["m1"])
        with pytest.raises(admin.QueueBusy, match="being delivered"):
            admin.hold(spool, "m1")
        with pytest.raises(admin.QueueBusy):
            admin.delete(spool, "m1")
    assert not spool.load("m1").held


def test_hold_then_release_makes_it_due_now(spool: Spool) -> None:
    defer(spool, "m1", NOW + 999)
    assert admin.hold(spool, "m1").held
    released = admin.release(spool, "m1", NOW)
    assert not released.held and released.next_attempt_at == NOW


def test_delete_queued_and_failed_and_missing(spool: Spool) -> None:
    admin.delete(spool, "m1")
    assert spool.ids() == ["m2"]
    claim = spool.try_claim("m2")
    assert claim is not None
    spool.move_to_failed(claim, claim.entry)
    admin.delete(spool, "m2")
    assert spool.ids(failed=True) == [] and list(spool.failed_dir.iterdir()) == []
    with pytest.raises(SpoolError, match="not in the queue"):
        admin.delete(spool, "m2")


def test_show_gives_headers_not_the_body(spool: Spool) -> None:
    entry, failed = admin.find(spool, "m1")
    text = admin.render_show(entry, admin.message_headers(spool.read_data("m1")), NOW, failed)
    assert "Subject: hello" in text and "bob@example.test: pending" in text
    assert "1h00m ago" in text and "secret body" not in text


def test_control_characters_never_reach_the_terminal(spool: Spool) -> None:
    with spool.claimed("m1") as claim:
        assert claim is not None
        claim.update(dataclasses.replace(claim.entry, last_error="451 \x1b[2Jgone"))
    table = admin.render_table(admin.list_entries(spool), NOW)
    assert "\x1b" not in table and "451 ?[2Jgone" in table


def test_cli_list_json_and_text(
    config: Config, spool: Spool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(config, "list", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == ["m1", "m2"]
    assert rows[0]["state"] == "deferred" and rows[0]["recipients"][0]["status"] == "pending"
    assert cli(config, "list", "--sender", "carol") == 0
    out = capsys.readouterr().out
    assert "m2" in out and "m1" not in out


def test_cli_hold_release_delete_report_each_id(
    config: Config, spool: Spool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(config, "hold", "m1", "--json") == 0
    assert json.loads(capsys.readouterr().out) == [{"id": "m1", "result": "held"}]
    assert cli(config, "release", "m1") == 0
    assert "m1 released" in capsys.readouterr().out
    assert cli(config, "delete", "m1", "nope") == 1
    captured = capsys.readouterr()
    assert "m1 deleted" in captured.out and "nope: not in the queue" in captured.err
    assert cli(config, "delete", "../etc") == 1
    assert "invalid queue id" in capsys.readouterr().err


def test_cli_show_and_flush(
    config: Config, spool: Spool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(config, "show", "m2", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["mail_from"] == "carol@example.net" and "Subject: hello" in shown["headers"]
    assert cli(config, "show", "missing") == 1
    assert cli(config, "flush", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"flushed": ["m1", "m2"], "busy": []}


def test_show_keeps_folded_headers_readable(
    config: Config, spool: Spool, capsys: pytest.CaptureFixture[str]
) -> None:
    """Our Received is folded (CRLF TAB): shown on indented lines, not as 'from x??by y'."""
    folded = (
        b"Received: from client.test ([192.0.2.1])\r\n\tby mx.gateway.test with ESMTP id m3\r\n"
        b"\tfor <bob@example.test>; Tue, 08 Dec 2026 04:00:00 +0000\r\n" + MESSAGE
    )
    spool.enqueue("m3", "alice@example.org", ["bob@example.test"], folded, now=NOW)
    assert cli(config, "show", "m3") == 0
    out = capsys.readouterr().out
    assert "?" not in out.split("Subject")[0]
    assert (
        "Received: from client.test ([192.0.2.1])\n    by mx.gateway.test with ESMTP id m3\n"
        "    for <bob@example.test>; Tue, 08 Dec 2026 04:00:00 +0000\n" in out
    )
