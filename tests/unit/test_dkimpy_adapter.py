"""The linear replacements for dkimpy's quadratic helpers give dkimpy's own results."""

from __future__ import annotations

import importlib.util
import random
import re
from types import ModuleType
from typing import Any

import dkim
import dkim.canonicalization
import pytest

import gateway.checks.dkimpy_adapter  # noqa: F401  (installs the replacements)


def pristine(name: str, path: str) -> ModuleType:
    """A fresh copy of a dkimpy module, its functions as shipped."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ORIGINAL = pristine("dkim_as_shipped", str(dkim.__file__))
ORIGINAL_CANON = pristine("dkim_canon_as_shipped", str(dkim.canonicalization.__file__))


def outcome(function: Any, *args: Any) -> Any:
    try:
        return ("value", function(*args))
    except Exception as exc:  # the same exception type for the same input
        return ("raised", type(exc).__name__)


def random_bytes(rnd: random.Random, alphabet: bytes, longest: int) -> bytes:
    return bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, longest)))


def test_the_replacements_are_installed() -> None:
    assert dkim.rfc822_parse is not ORIGINAL.rfc822_parse
    assert dkim.select_headers is not ORIGINAL.select_headers
    strip = dkim.canonicalization.strip_trailing_whitespace
    assert strip is not ORIGINAL_CANON.strip_trailing_whitespace
    strip_lines = dkim.canonicalization.strip_trailing_lines
    assert strip_lines is not ORIGINAL_CANON.strip_trailing_lines


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("function", "alphabet"),
    [("strip_trailing_whitespace", b" \t\r\nax"), ("strip_trailing_lines", b"\r\nx ")],
)
def test_body_canonicalization_is_dkimpys(seed: int, function: str, alphabet: bytes) -> None:
    rnd = random.Random(seed)
    ours, theirs = getattr(dkim.canonicalization, function), getattr(ORIGINAL_CANON, function)
    for _ in range(3000):
        text = random_bytes(rnd, alphabet, 40)
        assert ours(text) == theirs(text), text


@pytest.mark.parametrize("seed", range(4))
def test_header_split_is_dkimpys(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(3000):
        pieces = [b"From: a", b"To:b", b" folded", b"\tmore", b"", b"From x", b"x y", b"body"]
        message = b"".join(rnd.choice(pieces) + rnd.choice([b"\r\n", b"\n"]) for _ in range(8))
        assert outcome(dkim.rfc822_parse, message) == outcome(ORIGINAL.rfc822_parse, message)


@pytest.mark.parametrize("seed", range(4))
def test_header_selection_is_dkimpys(seed: int) -> None:
    rnd = random.Random(seed)
    names = [b"from", b"From", b"TO", b"subject", b"x"]
    for _ in range(3000):
        headers = [[rnd.choice(names), b"v%d" % i] for i in range(rnd.randint(0, 8))]
        include = [rnd.choice(names).lower() for _ in range(rnd.randint(0, 8))]
        expected = ORIGINAL.select_headers(headers, include)
        assert dkim.select_headers(headers, include) == expected


def test_a_field_folded_over_many_lines_is_split_whole() -> None:
    folded = b"Subject: start\r\n" + b" x\r\n" * 200_000 + b"\r\nbody\r\n"
    headers, body = dkim.rfc822_parse(folded)
    assert [name for name, _ in headers] == [b"Subject"]
    assert len(re.findall(rb" x\r\n", headers[0][1])) == 200_000
    assert body == b"body\r\n"
