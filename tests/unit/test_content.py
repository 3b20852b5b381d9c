"""Header helpers that must survive hostile input: comments, broken RFC 2231 parameters."""

from __future__ import annotations

import email

from gateway.content import header_addresses, part_filename, without_comments


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
