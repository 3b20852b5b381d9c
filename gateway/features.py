"""Message -> classifier features: the ONE extraction used by the gateway and by training.

A message becomes a sparse mapping of readable feature names to values, e.g.
`mime:html_only`, `url:tld=biz`, `rel:reply_to_other_domain`, `w:unsubscribe`. Names stay
readable so the classifier can explain a verdict by the features that pushed it.

What is deliberately NOT looked at, because it would not carry over to the mail an MX sees:
Received lines, List-*/Delivered-To/X-Keywords and other headers added by list servers and
corpus collectors (List-Id only serves to drop a list's "[tag]" from the subject), the
recipient addresses (obfuscated in public corpora), the Date's year, a leading mbox `From `
line, and everything our own gateway adds (X-Spam-*, Authentication-Results). Only the
headers named below are read.

Nor cues that any sender satisfies today but that the 2002 training mail happened to split
by label (feature version 5 dropped them): a feature for the ordinary, compliant state would
give every modern phish a push towards ham, and one whose absence is normal today would push
modern ham towards spam. Gone for that reason: the Message-ID domain equal to the From domain
(2002 spamware forged it; today's phishers own their domains, and DMARC checks the real
thing), links to the sender's own domain, the mailer family and its absence (2002 mail
clients; webmail and bulk senders set none), the text transfer encoding (2002 list ham was
7bit ASCII; quoted-printable and base64 are the norm now), a plain-text root (2002 ham was
plain text, so are today's gift-card and BEC scams), and the From TLD (.org/.edu list ham).
Defects only (no Message-ID, no time zone, no display name) are still read: they can push
towards spam, never towards ham.

Bump FEATURE_VERSION whenever a change alters the output for some message: a model trained
on another version is refused at load time.
(Version 7: in the 4-grams a NUL separates words and any character beyond 16 bits, such as
an emoji, reads as U+FFFF, so that a gram is one 64-bit number. Version 8: subject and text
are read as `content.readable_text` gives them, without invisible characters and with
fullwidth and other compatibility letters folded: "pa\u200by\u00adpal" and fullwidth "paypal"
are the word "paypal".)
"""

from __future__ import annotations

import html
import itertools
import math
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header
from email.message import Message
from email.utils import parsedate_tz
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from gateway.content import (
    decode_text,
    header_addresses,
    parse_address,
    part_charset,
    part_filename,
    readable_text,
)
from gateway.mailsources import strip_envelope_line
from gateway.model import parse_message

FEATURE_VERSION = 8

Features = dict[str, float]
_Adder = Callable[[str, float], None]  # `features.__setitem__`, handed to the helpers

MAX_TEXT_CHARS = 100_000  # enough to judge a message; bounds the cost of huge bodies
MAX_PARTS = 100
MAX_HEADER_CHARS = 2000  # longer headers are abnormal; the stdlib decoders are slow on them
TEXT_BLOCK_WEIGHT = 8.0  # chosen on held-out recall at low false-positive rates
# A subject has few words, so each would weigh a lot; 2002 subject wording ("your") must not
# decide today's mail on its own.
SUBJECT_BLOCK_WEIGHT = 2.0
# Character 4-grams of the subject and the start of the text (`c:` features): they see words
# split, misspelt or glued to digits that word features miss, and a second model fitted on them
# alone (training/fit.py) errs on other messages than the word model does.
CHAR_GRAM_PREFIX = "c:"
BODY_WORD_PREFIX = "w:"  # a word of the text (not the subject): what `min_known_words` counts
CHAR_GRAM_TEXT_CHARS = 3000  # the start of a text says what it is; bounds the cost per message
_NUL = "\0"  # separates words in the 4-grams: a gram is never 0 (see gram_key)
_WIDE = 0xFFFF
FREEMAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "yahoo.com", "hotmail.com", "outlook.com", "live.com",
    "msn.com", "aol.com", "icloud.com", "mail.com", "gmx.com", "gmx.net", "yandex.ru",
    "mail.ru", "protonmail.com", "proton.me", "zoho.com",
})  # fmt: skip
# Second-level labels under which registrars sell names (example.co.uk, example.com.au).
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "ac", "gov", "edu", "ne", "or", "go"})
_WORD = re.compile(r"[^\W\d_][\w'\u2019-]{1,23}")  # u2019: the typographic apostrophe
_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"'()\[\]{}]+", re.IGNORECASE)
# HTML patterns never span a "<" they did not open, and closers are searched once from a known
# position: crafted markup (thousands of unclosed tags) costs linear time, not quadratic.
# The whole tag first, then its href: an unclosed `<a ` followed by 14,000 `href=x` made a
# pattern that looked for the href on the way rescan the rest at each of them (4.4 s), and
# one long unclosed anchor (`<a href=` and 100 KB without ">") gave back a character at a time.
_ANCHOR_TAG = re.compile(r"<a\b[^<>]*+>", re.I)
_HREF = re.compile(r"""\bhref\s*=\s*["']?([^"'\s<>]++)""", re.I)
_ANCHOR_CLOSE = re.compile(r"</a\s*>", re.I)
MAX_ANCHOR_TEXT = 300
_SRC = re.compile(r"""\bsrc\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)
_INVISIBLE_OPEN = re.compile(r"<(script|style|head|title)\b|<!--", re.I)
_INVISIBLE_CLOSE = {
    name: re.compile(rf"</{name}\s*>", re.I) for name in ("script", "style", "head", "title")
}
_COMMENT_CLOSE = re.compile("-->")
_TAG = re.compile(r"<[^<>]*>")
_HOST_IN_TEXT = re.compile(r"(?:https?://)?((?:[a-z0-9-]+\.)+[a-z]{2,})", re.IGNORECASE)
_TRACKING_TOKEN = re.compile(r"[#(\[][\w-]*\d{3,}[\w-]*[)\]]?")
_LIST_TAG = re.compile(r"\[[^\]]{1,40}\]\s*")
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_ENCODED_WORD = re.compile(r"=\?([^?]+)\?([bqBQ])\?")
# Prices and fees in any notation ("$99.99", "1.99 EUR", "EUR 42.90", "500 dollars"), counted
# rather than read as words: how much a mail talks money carries over across years, the 2002
# amounts do not. Bounded repeats: a long run of digits costs linear time, not quadratic.
# The lookahead names every character a match can start with: the scan skips the others at C
# speed instead of trying three branches at each of up to 100,000 positions (half the time).
_MONEY = re.compile(
    r"(?=[$\u20ac\u00a3ueg\d])"
    r"(?:[$\u20ac\u00a3]\s?\d"
    r"|\b(?:usd|eur|gbp)\s?\d"
    r"|\d[\d,.]{0,15}\s?(?:usd|eur|gbp|dollars?|euros?)\b)",
    re.IGNORECASE,
)
_PERCENT = re.compile(r"\d\s?%")


@dataclass(frozen=True, slots=True)
class CharGrams:
    """A message's `c:` features as arrays: each gram a number (`gram_key`), distinct and
    sorted, its weight aligned. The gateway looks them up in bulk (gateway/checks/classifier.py);
    `features` names them for training."""

    keys: np.ndarray[Any, np.dtype[np.uint64]]
    weights: np.ndarray[Any, np.dtype[np.float64]]

    def features(self) -> Features:
        names = map(CHAR_GRAM_PREFIX.__add__, gram_texts(self.keys))
        return dict(zip(names, self.weights.tolist(), strict=True))


NO_CHAR_GRAMS = CharGrams(np.zeros(0, np.uint64), np.zeros(0))


def extract(raw: bytes, message: Message | None = None) -> Features:
    """Features of one raw message (as received in DATA, or with an mbox `From ` line).
    `message`: `raw` already parsed (compat32), as the gateway holds it, to spare a parse."""
    features, grams = extract_split(raw, message)
    features.update(grams.features())
    return features


def extract_split(raw: bytes, message: Message | None = None) -> tuple[Features, CharGrams]:
    """`extract`, with the character 4-grams kept apart as arrays: what scoring reads."""
    stripped = strip_envelope_line(raw)
    if message is None or stripped is not raw:  # the given parse would hold the `From ` line
        message = parse_message(stripped)
    raw = stripped
    features: Features = {}
    add = features.__setitem__
    _size_features(add, len(raw))
    _header_features(add, message)
    texts, urls = _body_features(add, message)
    _url_features(add, urls)
    subject = _header_text(message.get("Subject"))
    if message.get("List-Id") is not None:
        # "[listname] ..." names the list, not the content; an MX rarely sees list mail.
        subject = _LIST_TAG.sub("", subject)
    grams = _text_features(features, subject, texts, urls)
    return features, grams


def _size_features(add: _Adder, size: int) -> None:
    add(f"size:kib={_bucket(size // 1024)}", 1.0)


# --- headers ----------------------------------------------------------------------------------


def _header_features(add: _Adder, message: Message) -> None:
    """Sender relations, Message-ID and Date defects, priority, threading, recipients."""
    from_name, from_addr = parse_address(_header_text(message.get("From")))
    from_domain = _domain_of(from_addr)
    if not from_addr:
        add("from:missing", 1.0)
    if from_domain in FREEMAIL_DOMAINS:
        add("from:freemail", 1.0)
    if not from_name:
        add("from:no_display_name", 1.0)
    elif "@" in from_name:
        add("from:display_name_has_address", 1.0)
    local = from_addr.partition("@")[0]
    if sum(ch.isdigit() for ch in local) >= 3:
        add("from:local_part_digits", 1.0)
    _relation(add, "reply_to", message.get("Reply-To"), from_domain)
    _message_id_features(add, message.get("Message-ID"))
    _date_features(add, message.get("Date"))
    _subject_features(add, message.get("Subject"))
    priority = str(message.get("X-Priority", "")).strip()[:1]
    if priority:
        add(f"hdr:x_priority={priority}", 1.0)
    if str(message.get("Importance", "")).lower().strip() == "high":
        add("hdr:importance_high", 1.0)
    if message.get("In-Reply-To") or message.get("References"):
        add("hdr:is_reply", 1.0)
    if message.get("MIME-Version") is None:
        add("hdr:no_mime_version", 1.0)
    listed = [
        str(v)[:MAX_HEADER_CHARS] for v in message.get_all("To", []) + message.get_all("Cc", [])
    ]
    recipients = header_addresses(listed)
    add(f"hdr:recipients={_bucket(len([a for _, a in recipients if a]))}", 1.0)
    if "undisclosed" in str(message.get("To", "")).lower():
        add("hdr:to_undisclosed", 1.0)


def _relation(add: _Adder, name: str, value: object, from_domain: str) -> None:
    if value is None:
        return
    domain = _domain_of(parse_address(_header_text(value))[1])
    if not domain:
        add(f"rel:{name}_unparseable", 1.0)
    elif not from_domain or _registrable(domain) != _registrable(from_domain):
        add(f"rel:{name}_other_domain", 1.0)
    if domain in FREEMAIL_DOMAINS and from_domain not in FREEMAIL_DOMAINS:
        add(f"rel:{name}_freemail", 1.0)


def _message_id_features(add: _Adder, value: object) -> None:
    """Only defects. Its domain is not read: matching the From domain is trivial for anyone
    who owns a domain (v4 learnt it as the strongest ham cue), and a host-only domain was a
    2002 ham quirk that would reward a forger."""
    if value is None:
        add("msgid:missing", 1.0)
        return
    text = str(value).strip()
    if not (text.startswith("<") and text.endswith(">") and "@" in text):
        add("msgid:malformed", 1.0)


def _date_features(add: _Adder, value: object) -> None:
    if value is None:
        add("date:missing", 1.0)
        return
    parsed = parsedate_tz(str(value))
    if parsed is None:
        add("date:unparseable", 1.0)
    elif parsed[9] is None:
        add("date:no_zone", 1.0)


def _subject_features(add: _Adder, value: object) -> None:
    if value is None:
        add("subj:missing", 1.0)
        return
    raw = str(value)[:MAX_HEADER_CHARS]
    for charset, coding in _ENCODED_WORD.findall(raw)[:1]:
        add(f"subj:encoded={charset.lower()}/{coding.lower()}", 1.0)
    if any(ord(ch) > 127 for ch in raw):
        add("subj:raw_8bit", 1.0)
    text = _header_text(value)
    letters = [ch for ch in text if ch.isalpha()]
    if len(letters) >= 8 and sum(ch.isupper() for ch in letters) / len(letters) > 0.7:
        add("subj:mostly_upper", 1.0)
    if "!" in text:
        add("subj:exclamation", 1.0)
    if "$" in text or "%" in text:
        add("subj:money_or_percent", 1.0)
    if re.match(r"\s*(re|aw|fwd?)\s*:", text, re.IGNORECASE):
        add("subj:reply_prefix", 1.0)
    if _has_tracking_tail(text):
        add("subj:trailing_tracking_token", 1.0)


def _has_tracking_tail(subject: str) -> bool:
    """'Great offer        8273' or 'Offer #A8273': a per-recipient token to dodge filters.
    Plain string work, no regex over the whole subject: crafted subjects cannot make it slow."""
    head, _, last = subject.rstrip().rpartition(" ")
    if head.endswith("   ") and head.strip():
        return True
    return len(last) <= 40 and _TRACKING_TOKEN.fullmatch(last) is not None


# --- body -------------------------------------------------------------------------------------


def _body_features(add: _Adder, message: Message) -> tuple[list[str], list[str]]:
    """MIME structure, encodings, attachments, HTML tricks; returns texts and URLs."""
    root = message.get_content_type()
    if root != "text/plain":  # the plain default is what 2002 ham and today's scams share
        add(f"mime:root={root}", 1.0)
    texts: list[str] = []
    urls: list[str] = []
    has_plain = has_html = False
    parts = 0
    for part in message.walk():
        parts += 1
        if parts > MAX_PARTS:
            add("mime:too_many_parts", 1.0)
            break
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition = str(part.get("Content-Disposition", "")).split(";")[0].strip().lower()
        filename = part_filename(part, decode_words=False) or None
        if (
            filename
            or disposition == "attachment"
            or part.get_content_maintype()
            not in (
                "text",
                "message",
            )
        ):
            _attachment_features(add, ctype, filename)
            continue
        declared = part_charset(part)
        add(f"mime:charset={(declared or 'none')[:30]}", 1.0)
        text = _decoded_text(part, declared)
        if ctype == "text/html":
            has_html = True
            text = _html_features(add, text, urls)
        else:
            has_plain = has_plain or ctype == "text/plain"
        urls += _URL.findall(text)
        texts.append(text)
    add(f"mime:parts={_bucket(parts)}", 1.0)
    if has_html and not has_plain:
        add("mime:html_only", 1.0)
    elif has_html:
        add("mime:html_and_plain", 1.0)
    return texts, urls


def _attachment_features(add: _Adder, ctype: str, filename: str | None) -> None:
    add(f"att:type={ctype}", 1.0)
    if filename:
        extension = filename.rpartition(".")[2].lower()[:8] if "." in filename else "none"
        add(f"att:ext={extension}", 1.0)


def _decoded_text(part: Message, charset: str | None) -> str:
    """The part's text, decoded from its declared `charset` (see part_charset)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    payload = payload[: MAX_TEXT_CHARS * 4]  # enough bytes for MAX_TEXT_CHARS characters
    if charset is None:  # undeclared 8-bit text today is nearly always UTF-8
        try:
            return payload.decode("utf-8")[:MAX_TEXT_CHARS]
        except UnicodeDecodeError:
            charset = "latin-1"
    # An unknown or hostile charset name (idna, undefined): the bytes still carry the words.
    return decode_text(payload, charset, fallback="latin-1")[:MAX_TEXT_CHARS]


def _html_features(add: _Adder, markup: str, urls: list[str]) -> str:
    """HTML tricks, link/anchor mismatches and images; returns the visible text."""
    lower = markup.lower()
    for tag in ("img", "form", "script", "iframe", "table", "font", "center"):
        count = lower.count(f"<{tag}")
        if count:
            add(f"html:{tag}={_bucket(count)}", 1.0)
    if re.search(r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*[01]px", lower):
        add("html:hidden_text", 1.0)
    if re.search(r"<font[^<>]*color\s*=\s*[\"']?#?(?:fff(?:fff)?|white)\b", lower):
        add("html:white_text", 1.0)
    for opening in _ANCHOR_TAG.finditer(markup):
        found = _HREF.search(markup, opening.start(), opening.end())
        if found is None:
            continue
        href = found.group(1)
        urls.append(href)
        closing = _ANCHOR_CLOSE.search(markup, opening.end(), opening.end() + MAX_ANCHOR_TEXT)
        anchor = markup[opening.end() : closing.start()] if closing else ""
        shown = _HOST_IN_TEXT.search(_TAG.sub("", anchor))
        target = _host(href)
        if shown and target and _registrable(shown.group(1).lower()) != _registrable(target):
            add("html:anchor_text_other_domain", 1.0)
    urls += [src for src in _SRC.findall(markup) if src.lower().startswith("http")]
    visible = html.unescape(_TAG.sub(" ", _without_invisible(markup)))
    if len(markup) > 500 and len(visible.split()) < 20:
        add("html:little_text", 1.0)
    return visible


def _without_invisible(markup: str) -> str:
    """Markup minus comments, scripts, styles and the head; an unclosed one hides the rest."""
    kept: list[str] = []
    position = 0
    while opening := _INVISIBLE_OPEN.search(markup, position):
        kept.append(markup[position : opening.start()])
        name = opening.group(1)
        closer = _INVISIBLE_CLOSE[name.lower()] if name else _COMMENT_CLOSE
        closing = closer.search(markup, opening.end())
        if closing is None:
            return " ".join(kept)
        kept.append(" ")
        position = closing.end()
    kept.append(markup[position:])
    return "".join(kept)


# --- URLs and text ----------------------------------------------------------------------------


def _url_features(add: _Adder, urls: list[str]) -> None:
    add(f"url:count={_bucket(len(urls))}", 1.0)
    domains: set[str] = set()
    for url in urls[:200]:
        if url.lower().startswith("mailto:"):
            continue
        host = _host(url)
        if not host:
            continue
        if _IPV4.match(host):
            add("url:ip_host", 1.0)
            continue
        if "%" in url.split("?")[0] or "@" in url.split("/")[2 if "//" in url else 0]:
            add("url:obfuscated", 1.0)
        if ":" in host:
            add("url:explicit_port", 1.0)
        domain = _registrable(host.split(":")[0])
        domains.add(domain)
        add(f"url:dom={domain}", 1.0)
        add(f"url:tld={_tld(domain)}", 1.0)
    add(f"url:domains={_bucket(len(domains))}", 1.0)


def _text_features(
    features: Features, subject: str, texts: list[str], urls: list[str]
) -> CharGrams:
    body = readable_text(" ".join(texts)[:MAX_TEXT_CHARS])[:MAX_TEXT_CHARS]
    subject = readable_text(subject)
    letters, upper = _letters_and_upper(body[:20_000])
    if letters:
        ratio = upper / letters
        features[f"text:upper_ratio={min(int(ratio * 10), 5) / 10}"] = 1.0
    word_count = len(body.split())
    features[f"text:words={_bucket(word_count)}"] = 1.0
    features[f"text:exclamations={_bucket(body.count('!'))}"] = 1.0
    if re.search(r"[$€£]\s?\d", body):
        features["text:money_amount"] = 1.0
    _shape_features(features, body, word_count, urls)
    _weighted_terms(features, "s:", _WORD.findall(subject.lower()), SUBJECT_BLOCK_WEIGHT)
    words = _WORD.findall(_URL.sub(" ", body).lower())
    _weighted_terms(features, BODY_WORD_PREFIX, words, TEXT_BLOCK_WEIGHT)
    _weighted_terms(features, "w2:", map("_".join, itertools.pairwise(words)), TEXT_BLOCK_WEIGHT)
    return _char_grams(f"{subject} \n {body[:CHAR_GRAM_TEXT_CHARS]}")


def _char_grams(text: str) -> CharGrams:
    """Character 4-grams within each word padded by a space (' fre', 'ree '; a shorter word is
    one gram), as scikit-learn's `char_wb` analyser cuts them; each weighted 1 + ln(count),
    the block of unit length; the fitter scales them by inverse document frequency.

    Cut by numpy, not a gram at a time (a message has hundreds): with the words joined by
    single spaces, position i starts the gram text[i:i+4] when text[i+1] and text[i+2] are
    inside a word, and the three-character ' a ' when a one-letter word follows it."""
    padded = f" {' '.join(text.replace(_NUL, ' ').lower().split())} "
    n = len(padded)
    # One code point per character, and a NUL after the end so that a window of four starts
    # at every position up to the last but two.
    data = padded.encode("utf-32-le", "surrogatepass") + bytes(4)
    codes = np.frombuffer(data, np.uint32)
    space = codes == ord(" ")
    wide = np.minimum(codes, _WIDE).astype(np.uint64)
    windows = (wide[: n - 2] << 48) | (wide[1 : n - 1] << 32) | (wide[2:n] << 16) | wide[3:]
    inside = ~space[1 : n - 1] & ~space[2:n]
    one_letter = space[: n - 2] & ~space[1 : n - 1] & space[2:n]
    found = np.concatenate((windows[inside], windows[one_letter] & ~np.uint64(_WIDE)))
    keys, counts = np.unique(found, return_counts=True)
    weights = 1.0 + np.log(counts)
    if len(weights):
        weights /= np.sqrt(np.dot(weights, weights))
    return CharGrams(keys, weights)


# Cyrillic and Greek letters that pass for Latin ones in upper or lower case ("p\u0430ypal"
# with a Cyrillic a, "\u0420AYPAL" with a Cyrillic R, lower-cased here as the words are).
_LOOKALIKES = frozenset(
    "\u0430\u0432\u0435\u043a\u043c\u043d\u043e\u0440\u0441\u0442\u0443\u0445"
    "\u0456\u0458\u0455\u04bb\u0501\u04cf"
    "\u03b1\u03b2\u03b5\u03b6\u03b7\u03b9\u03ba\u03bc\u03bd\u03bf\u03c1\u03c4\u03c5\u03c7"
)
# "pdf-\u0444\u0430\u0439\u043b" (a PDF file) is two words glued, not a disguise.
_WORD_JOINS = re.compile("[-'\u2019]")


def has_disguised_word(features: Features) -> bool:
    """Whether a body word is Latin letters with Cyrillic or Greek look-alikes among them: a
    word hidden from filters, not another language (whose words have letters of their own)."""
    start = len(BODY_WORD_PREFIX)
    return any(
        name.startswith(BODY_WORD_PREFIX)
        and not name.isascii()
        and any(map(_is_disguised, _WORD_JOINS.split(name[start:])))
        for name in features
    )


def _is_disguised(piece: str) -> bool:
    foreign = [ch for ch in piece if ch.isalpha() and not ("a" <= ch <= "z")]
    latin = len(foreign) < sum(ch.isalpha() for ch in piece)
    return latin and bool(foreign) and all(ch in _LOOKALIKES for ch in foreign)


def gram_key(gram: str) -> int:
    """A 4-gram as one number: four 16-bit code points, the first in the high bits, a missing
    fourth character 0, any character beyond 16 bits (emoji) U+FFFF, a noncharacter."""
    key = 0
    for position, char in enumerate(gram[:4]):
        key |= min(ord(char), _WIDE) << (48 - 16 * position)
    return key


def gram_texts(keys: np.ndarray[Any, np.dtype[np.uint64]]) -> list[str]:
    """The grams of `gram_key` numbers (a character beyond 16 bits reads as U+FFFF)."""
    # Big-endian, a key's four 16-bit parts come out first character first.
    codes = keys.astype(">u8").view(">u2").astype("<u4")
    texts: list[str] = codes.view("<U4").tolist()
    return texts


def _shape_features(features: Features, body: str, words: int, urls: list[str]) -> None:
    """How the text is built, whatever its words: amounts of money, percentages, "!!",
    and how densely it links (a link per sentence is a sales pitch, not a letter)."""
    amounts = len(_MONEY.findall(body))
    if amounts:
        features[f"text:money_tokens={_bucket(amounts)}"] = 1.0
    if _PERCENT.search(body):
        features["text:percent"] = 1.0
    if "!!" in body:
        features["text:multi_exclamation"] = 1.0
    if urls and words:
        features[f"text:urls_per_100_words={_bucket(100 * len(urls) // words)}"] = 1.0


# ASCII letters are A-Z and a-z: counted by deleting them (C speed). Only the other characters
# (a few accents in most mail) take a per-character loop; the counts are those of
# str.isalpha and str.isupper over the whole text.
_DROP_LETTERS = str.maketrans("", "", string.ascii_letters)
_DROP_UPPER = str.maketrans("", "", string.ascii_uppercase)
_ASCII_RUN = re.compile(r"[\x00-\x7f]+")


def _letters_and_upper(text: str) -> tuple[int, int]:
    """How many characters of `text` are letters, and how many of those upper case."""
    ascii_part = text if text.isascii() else text.encode("ascii", "ignore").decode("ascii")
    letters = len(ascii_part) - len(ascii_part.translate(_DROP_LETTERS))
    upper = len(ascii_part) - len(ascii_part.translate(_DROP_UPPER))
    if ascii_part is not text:
        others = [ch for ch in _ASCII_RUN.sub("", text) if ch.isalpha()]
        letters += len(others)
        upper += sum(ch.isupper() for ch in others)
    return letters, upper


def _weighted_terms(features: Features, prefix: str, terms: Iterable[str], scale: float) -> None:
    """Each distinct term once, the block L2-normalised so long mails do not drown the rest,
    then scaled so that wording weighs as much as a handful of structural features."""
    distinct = set(terms)
    if distinct:
        weight = scale / math.sqrt(len(distinct))
        features.update(zip(map(prefix.__add__, distinct), itertools.repeat(weight)))


# --- helpers ----------------------------------------------------------------------------------


def _header_text(value: object) -> str:
    """A header decoded from RFC 2047 words; broken encodings degrade to the raw text."""
    if value is None:
        return ""
    raw = str(value)[:MAX_HEADER_CHARS]
    if "=?" not in raw:
        return raw
    try:
        chunks = decode_header(raw)
    except (ValueError, LookupError, HeaderParseError):  # malformed: keep what was written
        return raw
    decoded = []
    for chunk, charset in chunks:
        if isinstance(chunk, bytes):
            decoded.append(decode_text(chunk, charset, fallback="latin-1"))
        else:
            decoded.append(chunk)
    return "".join(decoded)


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().strip(">").lower() if "@" in address else ""


def _host(url: str) -> str:
    if url.lower().startswith("www."):
        url = "http://" + url
    try:
        return (urlsplit(url).hostname or "").lower().rstrip(".")
    except ValueError:  # e.g. an invalid IPv6 literal in a spam URL
        return ""


def _registrable(host: str) -> str:
    """Approximate registrable domain: the last two labels, three under a co.uk-style label."""
    labels = host.split(".")
    if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL and len(labels[-1]) == 2:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def _tld(domain: str) -> str:
    return domain.rpartition(".")[2] or "none"


def _bucket(count: int) -> str:
    """Powers of two: 0, 1, 2-3, 4-7, ... 64+; counts become readable binary features."""
    if count <= 1:
        return str(count)
    if count >= 64:
        return "64+"
    low = 1 << (count.bit_length() - 1)
    return f"{low}-{2 * low - 1}"
