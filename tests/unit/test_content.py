"""Header helpers that must survive hostile input: comments, broken RFC 2231 parameters."""

from __future__ import annotations

import email
import time

from gateway.content import (
    header_addresses,
    html_text_and_links,
    part_filename,
    without_comments,
)
from gateway.features import extract
from gateway.quarantine.render import html_to_text


def test_comments_go_whatever_their_nesting_and_quoted_text_stays() -> None:
    value = r'"Ann (not a comment)" <ann@x.test> (a (nested \) comment)) tail'
    assert without_comments(value) == '"Ann (not a comment)" <ann@x.test>  tail'
    deep = "Bad " + "(" * 2000 + "x" + ")" * 2000 + " <bad@blocked.test>"
    assert header_addresses([deep]) == [("Bad", "bad@blocked.test")]


def test_an_undecodable_file_name_still_shows_its_extension() -> None:
    part = email.message_from_string(
        "Content-Type: application/octet-stream\n"
        "Content-Disposition: attachment; filename*=''%FF%FE.exe; filename*0=a; filename*99=b\n"
        "\nx\n"
    )
    assert part_filename(part).endswith(".exe")


def test_unclosed_tags_and_comments_cost_linear_time_and_real_markup_reads_as_before() -> None:
    # html.parser rescans an unclosed tag from its start at every later "<": 20,000 "<a "
    # took 38 s on the event loop. Both readers of HTML get the defused markup.
    for unit in ("<a ", "<!-- ", '<a href="http://x.test/'):
        started = time.perf_counter()
        html_text_and_links(unit * 20_000)
        html_to_text(unit * 20_000)
        assert time.perf_counter() - started < 2.0, unit
    markup = '<p>Hi <b>you</b> a < b <a href="http://x.test/">here</a><!-- hidden --></p>'
    assert html_text_and_links(markup) == ("Hi  you  a < b  here", ["http://x.test/"])


def test_one_long_unclosed_anchor_costs_linear_time_in_the_features() -> None:
    raw = b"Content-Type: text/html\r\n\r\n<a href=" + b"x" * 100_000
    started = time.perf_counter()
    extract(raw)
    assert time.perf_counter() - started < 2.0  # was: quadratic, 20 s and more
