"""URL and domain extraction from real-looking mail: MIME, transfer encodings, HTML, obfuscation."""

from __future__ import annotations

import base64
import email
import email.policy
import quopri
import random
import socket
import sys

import pytest

from gateway.content import decode_header_value, html_text_and_links, message_content
from gateway.urls import (
    _TRAILING,
    _URL,
    content_domains,
    content_urls,
    deobfuscate,
    find_urls,
    registered_domain,
    unique_domains,
    url_host,
)


def parse(raw: bytes) -> email.message.Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


HTML = (
    "<html><head><title>Your invoice at http://title.example</title>"
    "<style>a {background: url(http://style-only.example/x.png)}</style></head>"
    "<body><p>Dear customer,</p>"
    '<a href="https://secure.login.bank-verify.co.uk/auth?x=1&amp;y=2">Log in</a>'
    "<img src='http://img.tracker.example.net/p.gif'>"
    "<p>Or visit www.second-site.example.org/now &amp; act &#8212; today</p>"
    '<a href="mailto:claims@refunds.example.com">mail us</a>'
    '<a href="/relative/path">relative</a>'
    "</body></html>"
)


def nested_html_message() -> bytes:
    html_b64 = base64.encodebytes(HTML.encode()).decode()
    text_qp = quopri.encodestring(
        "Caf\u00e9 offer: see hxxp://evil[.]example/path and http://plain.example.com/a.\n".encode()
    ).decode()
    return (
        "From: Bank <service@bank.example>\r\n"
        "To: you@example.test\r\n"
        "Subject: =?utf-8?B?WW91ciBhY2NvdW50?=\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="outer"\r\n'
        "\r\n"
        "--outer\r\n"
        'Content-Type: multipart/alternative; boundary="inner"\r\n'
        "\r\n"
        "--inner\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
        f"{text_qp}\r\n"
        "--inner\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        f"{html_b64}\r\n"
        "--inner--\r\n"
        "--outer\r\n"
        'Content-Type: application/pdf; name="=?utf-8?Q?Rechnung_M=C3=A4rz.pdf?="\r\n'
        'Content-Disposition: attachment; filename="=?utf-8?Q?Rechnung_M=C3=A4rz.pdf?="\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        "JVBERi0xLjQK\r\n"
        "--outer--\r\n"
    ).encode()


def test_nested_multipart_with_base64_html_and_quoted_printable_text() -> None:
    content = message_content(parse(nested_html_message()))
    assert any("Caf\u00e9 offer" in t for t in content.texts)  # QP and charset undone
    html_text = next(t for t in content.texts if "Dear customer" in t)
    assert "act \u2014 today" in html_text  # entities decoded
    assert "style-only" not in html_text and "title.example" not in html_text  # hidden
    assert [(a.filename, a.content_type) for a in content.attachments] == [
        ("Rechnung M\u00e4rz.pdf", "application/pdf")
    ]
    urls = content_urls(content)
    assert "https://secure.login.bank-verify.co.uk/auth?x=1&y=2" in urls
    assert "http://evil.example/path" in urls  # hxxp and [.] undone
    assert "http://plain.example.com/a" in urls  # trailing full stop dropped
    # Link targets first, then URLs written in the text; one entry per registered domain.
    assert content_domains(content, 20) == [
        "bank-verify.co.uk",
        "example.net",
        "example.com",
        "evil.example",
        "example.org",
    ]


def test_domains_are_registered_domains_and_limited() -> None:
    content = message_content(parse(nested_html_message()))
    domains = content_domains(content, 50)
    assert "bank-verify.co.uk" in domains  # public suffix co.uk respected
    assert domains.count("example.com") == 1  # plain.example.com and refunds.example.com
    assert "secure.login.bank-verify.co.uk" not in domains
    assert len(content_domains(content, 2)) == 2


def test_obfuscations_and_trailing_punctuation() -> None:
    text = (
        "Go to hXXps://pay(.)example[dot]org/x, or www.shop.example.net). "
        'Also "http://quoted.example/a?b=c".'
    )
    assert find_urls(text) == [
        "https://pay.example.org/x",
        "www.shop.example.net",
        "http://quoted.example/a?b=c",
    ]


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("HTTP://WWW.Example.COM./x", "www.example.com"),
        ("http://user:pw@login.example.org:8080/", "login.example.org"),
        ("mailto:a@b.example.net?subject=x", "b.example.net"),
        ("http://b\u00fccher.example/", "xn--bcher-kva.example"),
        ("http://[::1/", None),
        ("/relative", None),
    ],
)
def test_url_host(url: str, host: str | None) -> None:
    assert url_host(url) == host


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("a.b.example.co.uk", "example.co.uk"),
        ("example.com", "example.com"),
        ("com", None),
        ("co.uk", None),
        ("192.0.2.1", None),
        ("not a host", None),
    ],
)
def test_registered_domain(host: str, domain: str | None) -> None:
    assert registered_domain(host) == domain


def test_unique_domains_keep_first_appearance_order() -> None:
    hosts = ["x.b.example", "a.example", "y.b.example", "a.example"]
    assert unique_domains(hosts, 10) == ["b.example", "a.example"]


def test_public_suffix_list_is_read_from_the_package_without_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the public suffix list tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    from gateway import urls

    urls.suffix_list.cache_clear()
    assert registered_domain("www.example.co.uk") == "example.co.uk"
    assert "publicsuffixlist.update" not in sys.modules  # the downloader is never imported


def test_broken_html_and_unknown_charset_lose_nothing() -> None:
    raw = (
        b"Content-Type: text/html; charset=x-unknown-charset\r\n\r\n"
        b"<a href='http://ok.example/'>x</a><p <<< unclosed <b>text \xe9"
    )
    content = message_content(parse(raw))
    assert content.links == ("http://ok.example/",)
    assert "text" in content.texts[0]
    text, links = html_text_and_links("<div>&lt;script&gt; &amp;&amp; </div><script>x()</script>")
    assert text.strip() == "<script> &&" and links == []


def test_rfc2047_header_values_are_decoded() -> None:
    assert decode_header_value("=?utf-8?B?WW91ciBhY2NvdW50?=") == "Your account"
    # A charset nobody can apply reads as UTF-8, as text parts in one do: a reader shows the
    # word, so the checks must see it too ("setup.exe" in an attachment name).
    assert decode_header_value("=?bogus?Q?x?=") == "x"
    assert decode_header_value("=?utf-8?B?not*base64?=") == "=?utf-8?B?not*base64?="


def test_work_per_message_is_bounded() -> None:
    from gateway import content as content_module

    part = "--b\r\nContent-Type: text/plain\r\n\r\n" + "x" * 1000 + " http://late.example/\r\n"
    raw = (
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        + part * (content_module.MAX_TEXT_BYTES // 1000 + 10)
        + "--b--\r\n"
    ).encode()
    content = message_content(parse(raw))
    assert sum(len(t) for t in content.texts) <= content_module.MAX_TEXT_BYTES
    many = (
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        + '--b\r\nContent-Type: image/gif; name="a.gif"\r\n\r\nR0lG\r\n' * 1500
        + "--b--\r\n"
    ).encode()
    assert len(message_content(parse(many)).attachments) == content_module.MAX_PARTS


def test_text_without_a_scheme_or_www_skips_the_pattern_but_finds_the_same() -> None:
    rng = random.Random(5)
    pieces = ["www.", "WwW.", "http", "://", "x.example", " ", "ftp", ".", "w", "/", "é", "hxxp"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        expected = [m.group(0).rstrip(_TRAILING) for m in _URL.finditer(deobfuscate(text))]
        assert find_urls(text) == expected


def test_names_beyond_dns_limits_are_not_domains() -> None:
    # Looked up anyway, they would fail in the resolver and pause the domain lists for all mail.
    assert registered_domain("a" * 64 + ".example.com") is None
    assert registered_domain(".".join(["b" * 60] * 5) + ".example.com") is None
    assert registered_domain("a" * 63 + ".example.com") == "example.com"
