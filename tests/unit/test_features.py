"""gateway.features: what a message turns into, and what is deliberately ignored."""

from __future__ import annotations

import random
import string
import time

import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from gateway.features import (
    CHAR_GRAM_PREFIX,
    CHAR_GRAM_TEXT_CHARS,
    _letters_and_upper,
    extract,
    extract_split,
    gram_texts,
    has_disguised_word,
)

PLAIN = (
    b"From: Alice Example <alice@example.org>\n"
    b"To: bob@example.test\n"
    b"Subject: Lunch tomorrow\n"
    b"Date: Mon, 17 Nov 2025 08:12:44 +0000\n"
    b"Message-ID: <1@example.org>\n"
    b"\n"
    b"Shall we meet at noon? The menu is at https://www.cafe.example.co.uk/menu\n"
)


def test_words_structure_and_url_domains_are_named_features() -> None:
    features = extract(PLAIN)
    assert {"w:shall", "w:noon", "s:lunch", "w2:meet_at"} <= features.keys()
    assert "url:dom=example.co.uk" in features  # registrable under a co.uk-style label
    assert "url:tld=uk" in features
    assert "mime:root=text/plain" not in features  # the default shape carries no weight


def test_cues_any_modern_sender_satisfies_are_not_features() -> None:
    """A phish from its own domain: matching Message-ID, links to itself, a mailer header,
    quoted-printable text, a plain root. None of that may earn it a push towards ham."""
    raw = (
        b"From: Parcel Service <info@parcel-notice.example>\n"
        b"Subject: Your parcel is on hold\n"
        b"Message-ID: <20251119.48213@mail.parcel-notice.example>\n"
        b"X-Mailer: Microsoft Outlook 16.0\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: quoted-printable\n"
        b"\n"
        b"Pay the fee at https://pay.parcel-notice.example/fee\n"
    )
    names = extract(raw).keys()
    removed = ("msgid:", "mailer:", "mime:text_cte=", "mime:root=", "from:tld=", "rel:links_to")
    assert not [name for name in names if name.startswith(removed)]
    assert {"url:dom=parcel-notice.example", "mime:charset=utf-8"} <= names


def test_message_id_defects_still_count() -> None:
    missing = PLAIN.replace(b"Message-ID: <1@example.org>\n", b"")
    broken = PLAIN.replace(b"<1@example.org>", b"1-at-example.org")
    assert "msgid:missing" in extract(missing)
    assert "msgid:malformed" in extract(broken)
    assert not [name for name in extract(PLAIN) if name.startswith("msgid:")]


def test_mbox_envelope_line_and_gateway_headers_change_nothing() -> None:
    with_envelope = b"From alice@example.org  Mon Nov 17 08:12:44 2025\n" + PLAIN
    stamped = (
        b"X-Spam-Status: Yes, score=20 required=6 symbols=ML_SPAM\n"
        b"X-Spam-Score: 20\n"
        b"Authentication-Results: mx.gateway.test; spf=pass smtp.mailfrom=example.org\n" + PLAIN
    )
    assert extract(with_envelope) == extract(PLAIN)
    assert extract(stamped) == extract(PLAIN)


def test_html_is_stripped_entities_decoded_and_tricks_flagged() -> None:
    raw = (
        b"From: Shop <deals@shop.example>\n"
        b"Subject: Offer\n"
        b"Content-Type: text/html; charset=utf-8\n"
        b"\n"
        b"<html><head><style>p {color: red}</style><script>var hidden=1;</script></head>"
        b"<body><p>Caf&eacute; cr&egrave;me</p>"
        b'<div style="display:none">invisible words</div>'
        b'<a href="http://198.51.100.7/login">https://www.bank.example/</a></body></html>\n'
    )
    features = extract(raw)
    assert {"w:café", "w:crème", "mime:html_only", "html:hidden_text"} <= features.keys()
    assert "html:anchor_text_other_domain" in features
    assert "url:ip_host" in features
    assert not {"w:color", "w:var", "w:hidden"} & features.keys()  # style and script content


def test_broken_charsets_and_encodings_are_tolerated() -> None:
    raw = (
        b"From: =?x-bogus?q?Name?= <a@b.example>\n"
        b"Subject: =?utf-8?B?not base64 at all?=\n"
        b"Content-Type: text/plain; charset=x-no-such-charset\n"
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"!!! this is not base64 \xff\xfe\n"
    )
    features = extract(raw)
    assert "mime:charset=x-no-such-charset" in features
    assert any(name.startswith("text:words=") for name in features)  # a body was still read


def test_garbage_and_empty_input_give_features_not_errors() -> None:
    assert "from:missing" in extract(b"")
    assert extract(b"\x00\xff" * 1000)
    assert extract(b"Content-Type: multipart/mixed; boundary=x\n\n--x\nbroken")


def test_sender_relations_and_list_tags() -> None:
    raw = (
        b"From: Prize Desk <prize@lottery.example>\n"
        b"Reply-To: claims@gmail.com\n"
        b"List-Id: <fans.lists.example>\n"
        b"Subject: [fans] You won\n"
        b"\n"
        b"Claim now.\n"
    )
    features = extract(raw)
    assert {"rel:reply_to_other_domain", "rel:reply_to_freemail"} <= features.keys()
    assert "s:fans" not in features  # a list's subject tag names the list, not the content
    assert "s:won" in features


def test_word_block_is_normalised_so_long_mail_does_not_dominate() -> None:
    short = extract(PLAIN)
    long = extract(PLAIN + b" ".join(b"word%d" % i for i in range(2000)))
    assert long["w:noon"] < short["w:noon"]
    assert short["url:tld=uk"] == long["url:tld=uk"] == 1.0


def test_char_grams_are_cut_and_weighted_as_scikit_learn_does() -> None:
    """4-grams within space-padded words (scikit-learn's char_wb), sublinear counts, the
    block of unit length: what the fitter's idf scaling was chosen for."""
    body = "Viagra!! V1agra, v i a g r a: 50% OFF at shop.example a a " * 3
    raw = b"Subject: Cheap meds\n\n" + body.encode()
    features = extract(raw)
    grams = {k[len(CHAR_GRAM_PREFIX) :]: v for k, v in features.items() if k.startswith("c:")}
    reference = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(4, 4), use_idf=False, sublinear_tf=True
    )
    matrix = reference.fit_transform([f"Cheap meds \n {body}"])
    expected = dict(zip(reference.get_feature_names_out(), matrix.toarray()[0], strict=True))
    assert grams.keys() == expected.keys()
    assert all(grams[g] == pytest.approx(expected[g]) for g in grams)
    assert {" v1a", "v1ag", " a ", "off "} <= grams.keys()


def test_char_grams_match_scikit_learn_on_random_text() -> None:
    rng = random.Random(11)
    alphabet = "ab Z1!.\t\n\u00a0\u0130\u00df\u2028é"
    analyse = TfidfVectorizer(analyzer="char_wb", ngram_range=(4, 4)).build_analyzer()
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        features = extract(b"\n\n" + text.encode())
        grams = {k[len(CHAR_GRAM_PREFIX) :] for k in features if k.startswith(CHAR_GRAM_PREFIX)}
        assert grams == set(analyse(f" \n {text}")), repr(text)


def test_char_grams_fold_characters_beyond_16_bits_and_split_words_at_nul() -> None:
    features = extract("Subject: x\n\ngift \U0001f381\U0001f600! ab\0cd".encode())
    grams = {k[len(CHAR_GRAM_PREFIX) :] for k in features if k.startswith(CHAR_GRAM_PREFIX)}
    assert " \uffff\uffff!" in grams and "\uffff\uffff! " in grams  # any emoji is U+FFFF
    assert {" ab ", " cd "} <= grams and not any("\0" in g for g in grams)


def test_extract_is_extract_split_with_the_grams_named() -> None:
    raw = b"Subject: Cheap meds\n\nV1agra a b cd efg " * 20
    features, grams = extract_split(raw)
    names = [CHAR_GRAM_PREFIX + g for g in gram_texts(grams.keys)]
    named = dict(zip(names, grams.weights.tolist(), strict=True))
    assert extract(raw) == features | named
    assert list(grams.keys) == sorted(grams.keys) and len(set(grams.keys)) == len(grams.keys)


def test_char_grams_read_only_the_start_of_the_text() -> None:
    head = "word " * (CHAR_GRAM_TEXT_CHARS // 5)
    features = extract(b"Subject: x\n\n" + (head + "zebra").encode())
    assert "c:word" in features and "c:zebr" not in features


def test_text_shape_counts_money_percentages_shouting_and_link_density() -> None:
    pitch = extract(
        b"From: a@b.example\nSubject: offer\n\nOnly $19.99, was 49.00 USD, now EUR 9 or "
        b"5 euros: save 80 %!! https://x.example/a https://x.example/b\n"
    )
    assert pitch["text:money_tokens=4-7"] == 1.0  # four notations of an amount
    assert {"text:percent", "text:multi_exclamation"} <= pitch.keys()
    assert "text:urls_per_100_words=8-15" in pitch  # 2 links in 17 words
    # One link in 12 + 28 words; no amounts, no "%", a single "?".
    letter = extract(PLAIN + b"See you there, I will bring the notes from last week" * 2 + b"\n")
    assert not any(k.startswith("text:money_tokens") for k in letter)
    assert not {"text:percent", "text:multi_exclamation"} & letter.keys()
    assert "text:urls_per_100_words=2-3" in letter


CRAFTED = {
    "digit run before a currency": b"\n" + b"1," * 50000 + b" dollars\n",
    "unclosed anchors": b"Content-Type: text/html\n\n" + b'<a href="http://x.example/">' * 12000,
    "unclosed styles": b"Content-Type: text/html\n\n" + b"<style>" * 14000,
    "lone brackets": b"Content-Type: text/html\n\n" + b"<" * 100000,
    "unclosed comments": b"Content-Type: text/html\n\n" + b"<!--" * 25000,
    "digit run subject": b"Subject: (" + b"1" * 20000 + b"!\n",
    "encoded-word flood": b"Subject: " + b"=?utf-8?q?" * 5000 + b"\n",
    "huge recipient list": b"To: " + b"a@b.example, " * 100000 + b"\n",
    "nested multiparts": b"Content-Type: multipart/mixed; boundary=b\n\n"
    + b"--b\nContent-Type: multipart/mixed; boundary=b\n\n" * 5000,
}


@pytest.mark.parametrize("raw", CRAFTED.values(), ids=CRAFTED.keys())
def test_crafted_input_costs_linear_time(raw: bytes) -> None:
    started = time.perf_counter()
    extract(b"From: a@b.example\n" + raw + b"\nbody\n")
    assert time.perf_counter() - started < 1.0  # quadratic handling took 5 to 30 s here


def test_letter_counts_match_the_per_character_definition() -> None:
    # The ASCII fast path must count exactly as isalpha()/isupper() do (features feed a model).
    rng = random.Random(7)
    alphabets = (string.printable, string.printable + "éÉßǅΣωⅠ½\u2019")
    for n in range(2000):
        text = "".join(rng.choice(alphabets[n % 2]) for _ in range(rng.randint(0, 120)))
        letters = [ch for ch in text if ch.isalpha()]
        expected = (len(letters), sum(ch.isupper() for ch in letters))
        assert _letters_and_upper(text) == expected


@pytest.mark.parametrize(
    "headers",
    [
        b"Subject: =?utf-8?B?not*base64?=\r\nContent-Type: text/plain\r\n",  # HeaderParseError
        b"Subject: =?idna?Q?prize?=\r\nContent-Type: text/plain; charset=idna\r\n",
        b"Subject: prize\r\nContent-Type: text/plain; charset=undefined\r\n",
    ],
)
def test_a_hostile_charset_or_encoded_word_still_gives_the_words(headers: bytes) -> None:
    features = extract(b"From: a@b.example\r\n" + headers + b"\r\nclaim your lottery prize\r\n")
    assert {"w:claim", "w:lottery", "w:prize"} <= set(features)


@pytest.mark.parametrize(
    "hidden",
    [
        "pa\u200by\u00adpal acc\u034fount",  # zero-width space, soft hyphen, grapheme joiner
        # fullwidth letters
        "\uff50\uff41\uff59\uff50\uff41\uff4c \uff41\uff43\uff43\uff4f\uff55\uff4e\uff54",
        "pay\u2060pal\u200e acc\u202eount\u202c",  # word joiner, bidirectional marks
    ],
)
def test_invisible_characters_and_compatibility_letters_hide_no_word(hidden: str) -> None:
    raw = f"Subject: notice\nContent-Type: text/plain; charset=utf-8\n\n{hidden}\n".encode()
    words = {name for name in extract(raw) if name.startswith("w:")}
    assert words == {"w:paypal", "w:account"}


@pytest.mark.parametrize(
    ("word", "disguised"),
    [
        ("p\u0430ypal", True),  # a Cyrillic a
        ("\u0440aypal", True),  # a Cyrillic r, as an upper-case P lower-cased
        ("v\u0435rify", True),
        ("pdf-\u0444\u0430\u0439\u043b", False),  # Russian "PDF file": two words glued
        ("iphone'\u043e\u043c", False),  # a Latin brand with a Russian ending
        ("i\u043d\u0444\u043e\u0440\u043c\u0430\u0446i\u044e", False),  # Latin i in Ukrainian
        ("\u043f\u0440\u0438\u0432\u0435\u0442", False),  # all Cyrillic: another language
        ("caf\u00e9", False),
        ("\u03b2-blockers", False),
    ],
)
def test_a_disguised_word_is_latin_with_look_alikes_not_a_foreign_one(
    word: str, disguised: bool
) -> None:
    assert has_disguised_word({f"w:{word}": 1.0, "s:x": 1.0}) is disguised
    assert has_disguised_word({f"s:{word}": 1.0}) is False  # only body words
