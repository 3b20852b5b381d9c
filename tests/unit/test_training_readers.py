"""Message sources (files, directories, Maildir, mbox) and labelled corpora, broken ones too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway import mailsources
from gateway.mailsources import MailSourceError, iter_messages
from training.readers import HAM, SPAM, CorpusError, Example, merge, read_labelled_dir


def message(n: int, date: str = "Mon, 17 Nov 2025 08:12:44 +0000") -> bytes:
    return f"From: a{n}@example.org\nSubject: m{n}\nDate: {date}\n\nbody {n}\n".encode()


class Skips:
    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}

    def __call__(self, path: Path, reason: str) -> None:
        self.reasons[path.name] = reason


def test_maildir_reads_cur_and_new_but_not_tmp(tmp_path: Path) -> None:
    for sub, n in (("cur", 1), ("new", 2), ("tmp", 3)):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / f"{n}.host:2,S").write_bytes(message(n))
    raws = [m.raw for m in iter_messages(tmp_path)]
    assert raws == [message(1), message(2)]


def test_mbox_splits_at_strict_separators_and_unquotes(tmp_path: Path) -> None:
    mbox = tmp_path / "inbox.mbox"
    mbox.write_bytes(
        b"From alice@example.org Mon Nov 17 08:12:44 2025\n" + message(1)
        + b">From the desk of a body line, not a separator\n"
        + b"From here on a body line that only starts like one\n\n"
        + b"From bob@example.org  Tue Nov 18 09:00:00 2025\n" + message(2)
    )  # fmt: skip
    found = list(iter_messages(mbox))
    assert [m.origin.rsplit("#", 1)[1] for m in found] == ["1", "2"]
    assert b"\nFrom the desk" in found[0].raw  # mboxrd quoting undone
    assert b"From here on" in found[0].raw  # loose "From " lines do not split
    assert found[1].raw == message(2)


def test_directory_tree_skips_broken_files_with_reasons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "good.eml").write_bytes(message(1))
    (tmp_path / "empty.eml").write_bytes(b"")
    (tmp_path / "noheaders.eml").write_bytes(b"just some text\nwithout headers\n")
    (tmp_path / "huge.eml").write_bytes(message(2) + b"x" * 2000)
    (tmp_path / ".hidden.eml").write_bytes(message(3))
    (tmp_path / "dangling.eml").symlink_to(tmp_path / "missing")
    monkeypatch.setattr(mailsources, "MAX_MESSAGE_BYTES", 1000)
    skips = Skips()
    assert [m.raw for m in iter_messages(tmp_path, skips)] == [message(1)]
    assert skips.reasons == {
        "empty.eml": "empty",
        "noheaders.eml": "no header block",
        "huge.eml": "larger than 1000 bytes",
        "dangling.eml": "not a regular file",
    }


def test_missing_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MailSourceError, match="no such file"):
        list(iter_messages(tmp_path / "nope"))


def test_labelled_corpus_reads_labels_and_plausible_dates(tmp_path: Path) -> None:
    (tmp_path / "ham").mkdir()
    (tmp_path / "ham" / "1").write_bytes(b"From x@y  Mon Nov 17 08:12:44 2025\n" + message(1))
    (tmp_path / "spam").write_bytes(  # an mbox file as one side
        b"From s@y Mon Jan 1 00:00:00 2002\n" + message(2, "Sat, 1 Jan 1980 00:00:00 +0000")
        + b"From s@y Mon Jan 1 00:00:00 2002\n" + message(3, "not a date")
    )  # fmt: skip
    examples = read_labelled_dir(tmp_path, Skips())
    assert [(e.label, e.raw) for e in examples] == [
        (HAM, message(1)), (SPAM, message(2, "Sat, 1 Jan 1980 00:00:00 +0000")),
        (SPAM, message(3, "not a date")),
    ]  # fmt: skip
    assert examples[0].date is not None and examples[0].date.year == 2025
    assert examples[1].date is None  # forged into the past: not used to order mail in time
    assert examples[2].date is None


def test_corpus_without_ham_or_spam_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="ham/ and/or spam/"):
        read_labelled_dir(tmp_path, Skips())


def test_feedback_label_overrides_corpus_label() -> None:
    corpus = [Example(message(1), SPAM, "corpus", None), Example(message(2), HAM, "corpus", None)]
    feedback = [Example(message(1), HAM, "feedback", None)]
    merged = {e.raw: e.label for e in merge([corpus, feedback])}
    assert merged == {message(1): HAM, message(2): HAM}


def test_corpora_filing_the_same_message_under_both_labels_are_reported() -> None:
    first = [Example(message(1), HAM, "a/ham/1", None), Example(message(2), HAM, "a/ham/2", None)]
    second = [
        Example(message(1), SPAM, "b/spam/1", None),
        Example(message(2), HAM, "b/ham/2", None),
    ]
    learnt = [Example(message(1), HAM, "feedback/ham/1", None, learnt=True)]
    conflicts: list[tuple[str, str]] = []

    def conflict(kept: Example, dropped: Example) -> None:
        conflicts.append((kept.origin, dropped.origin))

    merged = merge([first, second, learnt], conflict)
    # Only the corpora's contradiction; the duplicate ham and the learnt relabelling are not.
    assert conflicts == [("b/spam/1", "a/ham/1")]
    assert {e.raw: e.label for e in merged} == {message(1): HAM, message(2): HAM}


def test_a_directory_that_cannot_be_listed_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "2.eml").write_bytes(message(2))
    (tmp_path / "1.eml").write_bytes(message(1))
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "3.eml").write_bytes(message(3))
    real_scandir = os.scandir

    def scandir(path: str) -> object:  # as root, chmod 000 would not stop the listing
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    skips = Skips()
    assert [m.raw for m in iter_messages(tmp_path, skips)] == [message(1)]
    assert skips.reasons == {"locked": "cannot read: Permission denied"}
