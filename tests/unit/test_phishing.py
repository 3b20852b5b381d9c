"""The phishing data and look-alike logic (gateway/phishing.py) and what content.py keeps of
HTML for the phishing checks (anchors with their text, forms)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.content import message_content, parse_bytes
from gateway.errors import ConfigError
from gateway.phishing import PhishingData, load_phishing_data, lookalike, lure_word

RULES = Path(__file__).resolve().parents[2] / "rules"
OURS = ("example.org",)


@pytest.fixture(scope="module")
def data() -> PhishingData:
    return load_phishing_data(RULES)


@pytest.mark.parametrize(
    ("domain", "kind", "target"),
    [
        ("xn--chse-63d.com", "confusable", "chase"),  # Cyrillic a
        ("ch\u0430se.com", "confusable", "chase"),  # the same, as the client shows it
        ("paypa1-resolution.com", "brand-name", "paypal"),  # a digit for a letter
        ("netflix-billing-support.com", "brand-name", "netflix"),
        ("usps.com-redelivery.xyz", "brand-domain-prefix", "usps"),
        ("docusing.net", "edit-distance", "docusign"),
        ("example-org-payroll.com", "brand-name", "example.org"),
        ("exampel.org", "edit-distance", "example.org"),
        ("xn--bookng-s9a.com", "confusable", "booking"),  # a dotless i
        ("xn--oodfood-7ed.com", "confusable", "goodfood.com"),  # Latin script g: a name of no brand
        ("rnicrosoft-security.com", "brand-name", "microsoft"),  # "rn" reads as "m"
        ("dhl-zustellung-de.paket-info24.top", "brand-in-subdomain", "dhl"),
        ("netfiix-billing.com", "edit-distance", "netflix"),  # "i" for "l" in a part
        ("docusgin-review.com", "edit-distance", "docusign"),  # a part one swap away
    ],
)
def test_lookalikes_are_named_with_what_they_imitate(
    data: PhishingData, domain: str, kind: str, target: str
) -> None:
    found = lookalike(domain, data, OURS)
    assert found is not None and (found.kind, found.target) == (kind, target)


@pytest.mark.parametrize(
    "domain",
    [
        "paypal.com",
        "mail.paypal.de",
        "docusign.net",
        "example.org",
        "mail.example.org",
        "booking-lufthansa.com",  # Lufthansa's own
        "ledgerline.example",  # one letter from "ledgerlive": a common word is no token
        "bookings-hotel.example",  # "booking" is a word, not a brand token
        "uni-example.edu",  # our own domain's first label alone is not enough
        "dropbox.zendesk.com",  # a tenant named after the brand, on a service
        "xn--mller-bau-q9a.example",  # an IDN in one script imitates nobody
    ],
)
def test_own_and_unrelated_domains_are_not_lookalikes(data: PhishingData, domain: str) -> None:
    assert lookalike(domain, data, OURS) is None


def test_lure_words_make_a_domain_suspect_only_in_hyphenated_names(data: PhishingData) -> None:
    assert lure_word("account-unlock-id.com", data) == "account"
    assert lure_word("t-online.de", data) is None  # "online": left out, a word of honest names
    assert lure_word("securelogin.com", data) is None  # one word: could be anyone's name
    assert lure_word("paypal-community.com", data) is None  # a brand's own


def test_brand_names_in_look_alike_letters_are_read(data: PhishingData) -> None:
    found = data.impersonated("\u0410pple Supp\u043ert", "account-unlock-id.com")
    assert found is not None and found[0].key == "apple"


def test_a_broken_brands_file_stops_loading_with_one_line_per_problem(tmp_path: Path) -> None:
    (tmp_path / "brands.toml").write_text(
        '[brand.x]\nnames = ["X Corp"]\ndomains = ["not a domain"]\nextra = 1\n'
    )
    (tmp_path / "phishing_hosts.toml").write_text('free_hosting = ["web.app"]\nother = []\n')
    with pytest.raises(ConfigError) as raised:
        load_phishing_data(tmp_path)
    text = str(raised.value)
    assert "not a domain" in text and "extra" in text and "other" in text


def test_brand_names_match_whole_words_only(data: PhishingData) -> None:
    found = data.brand_named("PayPal Account Review")
    assert found is not None and found[0].key == "paypal"
    assert data.brand_named("Chase Miller") is None  # a first name, left out on purpose
    assert data.brand_named("Upstream notes") is None  # "ups" inside a word


def test_content_keeps_anchor_text_and_forms() -> None:
    raw = (
        b"From: a@b.example\r\nContent-Type: text/html\r\n\r\n"
        b'<p>Go to <a href="https://evil.example/x">https://www.paypal.com/<b>login</b></a></p>'
        b'<form action="https://collect.example/p"><input type="password" name="p"></form>'
        b'<form action="/search"><input name="q"></form>'
    )
    content = message_content(parse_bytes(raw))
    assert [(a.href, a.text) for a in content.anchors] == [
        ("https://evil.example/x", "https://www.paypal.com/login")
    ]
    assert [(f.action, f.has_password) for f in content.forms] == [
        ("https://collect.example/p", True),
        ("/search", False),
    ]
