"""A tiny generated ham/spam corpus: enough to train and evaluate a model in about a second."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

HAM_WORDS = (
    "meeting",
    "agenda",
    "review",
    "budget",
    "thursday",
    "draft",
    "patch",
    "release",
    "notes",
    "build",
    "tests",
    "kernel",
    "config",
    "thanks",
    "regards",
    "lunch",
    "project",
    "deadline",
    "report",
    "minutes",
    "schedule",
    "question",
)
SPAM_WORDS = (
    "free",
    "money",
    "offer",
    "guaranteed",
    "viagra",
    "winner",
    "cash",
    "prize",
    "credit",
    "limited",
    "casino",
    "bonus",
    "discount",
    "cheap",
    "pills",
    "investment",
    "profit",
    "click",
    "unsubscribe",
    "urgent",
)


def ham_message(rng: random.Random, n: int, date: datetime) -> bytes:
    words = " ".join(rng.choice(HAM_WORDS) for _ in range(40))
    return (
        f"From: Colleague {n} <person{n}@corp{n % 3}.example>\n"
        f"To: team@example.test\n"
        f"Subject: Re: {rng.choice(HAM_WORDS)} {rng.choice(HAM_WORDS)}\n"
        f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}\n"
        f"Message-ID: <ham{n}@corp{n % 3}.example>\n"
        f"In-Reply-To: <prev{n}@corp{n % 3}.example>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "X-Mailer: Mutt 2.2\n"
        "\n"
        f"Hi,\n\n{words}\n\nSee https://wiki.corp{n % 3}.example/page{n}\n"
    ).encode()


def spam_message(rng: random.Random, n: int, date: datetime) -> bytes:
    words = " ".join(rng.choice(SPAM_WORDS) for _ in range(40))
    return (
        f"From: WINNER{n} <promo{n}@deals{n % 4}.biz>\n"
        f"Reply-To: cash{n}@collect.example.ru\n"
        "To: undisclosed-recipients:;\n"
        f"Subject: FREE {rng.choice(SPAM_WORDS).upper()} NOW!!!\n"
        f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}\n"
        f"Message-ID: <{n}.spam@mx{n}.bulk.example>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/html; charset=iso-8859-1\n"
        "\n"
        f"<html><body><font color=#ff0000>{words}</font>"
        f'<a href="http://click{n % 5}.deals.biz/r?id={n}">www.bank.example</a>'
        "</body></html>\n"
    ).encode()


def write_corpus(root: Path, n_ham: int = 60, n_spam: int = 40, seed: int = 7) -> Path:
    """A `ham/` + `spam/` directory of generated messages with dates spread over 60 days."""
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for label, count, make in (("ham", n_ham, ham_message), ("spam", n_spam, spam_message)):
        (root / label).mkdir(parents=True)
        for n in range(count):
            date = start + timedelta(hours=rng.randrange(60 * 24))
            (root / label / f"{n:04d}.eml").write_bytes(make(rng, n, date))
    return root


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))
