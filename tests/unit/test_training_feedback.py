"""gateway.feedback: the store `gateway learn` and quarantine release/delete --learn write to."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pytest

from gateway.feedback import add_learn_command, record_feedback
from training.readers import HAM, SPAM, Example, merge
from training.run import _stable_holdout

RAW = b"From: a@example.org\nSubject: hi\n\nbody\n"


def test_record_is_named_by_content_idempotent_and_relabels(tmp_path: Path) -> None:
    name = hashlib.sha256(RAW).hexdigest() + ".eml"
    spam_path = record_feedback(tmp_path, "spam", RAW)
    assert spam_path == tmp_path / "feedback" / "spam" / name
    assert spam_path.read_bytes() == RAW
    assert record_feedback(tmp_path, "spam", RAW) == spam_path
    ham_path = record_feedback(tmp_path, "ham", RAW)  # the admin changed their mind
    assert ham_path.read_bytes() == RAW and not spam_path.exists()
    leftovers = [p.name for p in (tmp_path / "feedback").rglob(".*")]
    assert leftovers == []  # no temp files survive


def test_unknown_label_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ham' or 'spam"):
        record_feedback(tmp_path, "eggs", RAW)  # type: ignore[arg-type]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gateway")
    add_learn_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_learn_command_stores_files_maildirs_and_mboxes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1").write_bytes(RAW.replace(b"hi", b"one"))
    mbox = tmp_path / "junk.mbox"
    mbox.write_bytes(
        b"From x@y Mon Nov 17 08:12:44 2025\n" + RAW.replace(b"hi", b"two")
        + b"From x@y Mon Nov 17 08:12:45 2025\n" + RAW.replace(b"hi", b"three")
    )  # fmt: skip
    single = tmp_path / "one.eml"
    single.write_bytes(RAW)
    storage = tmp_path / "var"
    args = parse(["learn", "--spam", str(maildir), str(mbox), str(single)])
    assert args.func(args, storage) == 0
    stored = sorted(p.read_bytes() for p in (storage / "feedback" / "spam").iterdir())
    assert len(stored) == 4 and b"From x@y" not in b"".join(stored)
    assert "recorded 4 message(s) as spam" in capsys.readouterr().out


def test_learn_reports_a_missing_path_and_keeps_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.eml"
    good.write_bytes(RAW)
    args = parse(["learn", "--ham", str(tmp_path / "missing"), str(good)])
    assert args.func(args, tmp_path / "var") == 1
    captured = capsys.readouterr()
    assert "missing: no such file or directory" in captured.err
    assert "recorded 1 message(s) as ham" in captured.out


def test_learn_needs_exactly_one_label() -> None:
    with pytest.raises(SystemExit):
        parse(["learn", "--ham", "--spam", "x"])
    with pytest.raises(SystemExit):
        parse(["learn", "x"])


def test_learn_into_a_store_it_cannot_write_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.eml"
    good.write_bytes(RAW)
    storage = tmp_path / "var"
    storage.write_text("a file where the store should be")  # fails for root too, unlike chmod
    args = parse(["learn", "--ham", str(good)])
    assert args.func(args, storage) == 2
    captured = capsys.readouterr()
    assert f"learn: cannot write to {storage / 'feedback' / 'ham'}: " in captured.err
    assert "Traceback" not in captured.err
    assert "recorded 0 message(s) as ham before that" in captured.out


def test_learnt_messages_are_never_held_out() -> None:
    corpus = [Example(f"m{i}".encode(), HAM, "corpus", None) for i in range(200)]
    learnt = [Example(f"m{i}".encode(), HAM, "feedback", None, learnt=True) for i in range(200)]
    _, held_corpus = _stable_holdout(corpus)
    assert 20 < len(held_corpus) < 70  # about a fifth, by content hash
    train, held = _stable_holdout(corpus + learnt)
    assert list(held) == list(held_corpus)  # the same corpus messages, and no learnt one
    assert set(range(200, 400)) <= set(train)


def test_the_smtp_and_the_mailbox_copy_of_a_message_are_one(tmp_path: Path) -> None:
    lf = record_feedback(tmp_path, "ham", RAW)  # a user's mailbox file
    crlf = record_feedback(tmp_path, "spam", RAW.replace(b"\n", b"\r\n"))  # the quarantine's
    assert crlf.name == lf.name and not lf.exists()  # relabelled, not kept under both labels
    examples = [
        Example(RAW, HAM, "corpus", None),
        Example(crlf.read_bytes(), SPAM, "feedback", None, learnt=True),
    ]
    assert [e.label for e in merge([examples[:1], examples[1:]])] == [SPAM]


def test_learn_says_what_was_new_moved_or_known(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "1.eml", tmp_path / "2.eml"
    first.write_bytes(RAW)
    second.write_bytes(RAW.replace(b"hi", b"two"))
    storage = tmp_path / "var"
    record_feedback(storage, "ham", RAW)
    args = parse(["learn", "--spam", str(first), str(second)])
    assert args.func(args, storage) == 0
    args.func(args, storage)
    first_run, second_run = capsys.readouterr().out.splitlines()
    assert first_run.endswith("(1 new, 1 moved from ham, 0 already there)")
    assert second_run.endswith("(0 new, 0 moved from ham, 2 already there)")
