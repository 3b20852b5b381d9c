"""What a message says, decoded: header values, body text of text and HTML parts, attachments.

Rules and URL extraction both need the decoded content of a message; this module walks the
MIME tree once (quoted-printable and base64 undone, charsets applied, HTML turned into text and
its link targets) with a bound on how much of each part is kept.
"""

from __future__ import annotations

import codecs
import email.errors
import email.header
import email.message
import email.policy
import email.utils
import importlib.util
import ipaddress
import itertools
import re
import unicodedata
import urllib.parse
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from types import ModuleType
from typing import Any

# Attributes whose values are addresses a reader's client may fetch or open.
_LINK_ATTRIBUTES = frozenset({"href", "src", "action", "background", "cite", "data"})
# Elements whose text a reader never sees.
_HIDDEN_ELEMENTS = frozenset({"script", "style", "head", "title"})
# Spammers split words with invisible characters and glue them with no-break spaces so that
# "you&nbsp;have&#8203;won" escapes a rule on "you have won": both are undone for matching.
# Invisible: soft hyphen, combining grapheme joiner, Arabic letter mark, Mongolian vowel
# separator, zero-width space and joiners, bidirectional marks, word joiners and invisible
# operators, the byte order mark.
_INVISIBLE_RUN = re.compile(
    "[\u00ad\u034f\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]+"
)
_SPACES = str.maketrans(dict.fromkeys(map(ord, "\u00a0\u2007\u202f"), " "))
_FOLDING = re.compile(r"\r?\n(?=[ \t])")


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str


@dataclass(frozen=True, slots=True)
class Anchor:
    """An HTML link as its reader sees it: the target and the visible text it sits behind."""

    href: str
    text: str


@dataclass(frozen=True, slots=True)
class Form:
    """An HTML form of a body part: where it posts, and whether it asks for a password."""

    action: str
    has_password: bool


@dataclass(frozen=True, slots=True)
class Content:
    """Decoded content of one message.

    `texts` holds the text of text/plain parts and the visible text of HTML parts; `links`
    the link targets found in HTML attributes (href, src, ...), which are not in the text;
    `anchors` the <a href> links with their visible text (phishing shows one host and links
    another), `forms` the HTML forms of body parts.
    """

    texts: tuple[str, ...]
    links: tuple[str, ...]
    attachments: tuple[Attachment, ...]
    anchors: tuple[Anchor, ...] = ()
    forms: tuple[Form, ...] = ()


def unfold(value: str) -> str:
    """A header value with its folding (CRLF before white space) removed, RFC 5322 2.2.3."""
    return _FOLDING.sub("", value)


def header_str(value: object) -> str:
    """A header field's value as written, as text. compat32 hands a field with 8-bit bytes
    over as a Header whose str() has U+FFFD for each byte; those bytes are UTF-8 in SMTPUTF8
    mail (RFC 6532) and usually elsewhere, and are read so. Encoded words stay as they are:
    address parsing must see them as words, not as the commas or "@" they may decode to."""
    if not isinstance(value, email.header.Header):
        return str(value)
    try:
        chunks = email.header.decode_header(value)
    except (email.errors.MessageError, LookupError, UnicodeError, ValueError):
        return str(value)
    return "".join(
        decode_text(chunk, charset) if isinstance(chunk, bytes) else chunk
        for chunk, charset in chunks
    )


def decode_header_value(value: object) -> str:
    """An RFC 2047 header value as text; undecodable words are kept as they came, words in
    a charset nobody can apply read as UTF-8 (as decode_text reads such text)."""
    raw = header_str(value)
    if "=?" not in raw:  # no encoded words: the common case, kept cheap
        return unfold(raw)
    try:
        words = email.header.decode_header(raw)
    except (email.errors.MessageError, LookupError, UnicodeError, ValueError):
        return raw
    try:
        return str(email.header.make_header(words))
    # CharsetError (a MessageError) for a charset name that is not ASCII failed the rules and
    # attachments checks, and so deferred the message for good; "setup.exe" in such a word
    # must still read as setup.exe.
    except (email.errors.MessageError, LookupError, UnicodeError, ValueError):
        return "".join(
            word if isinstance(word, str) else decode_text(word, charset) for word, charset in words
        )


def decode_text(payload: bytes, charset: str | None, fallback: str = "utf-8") -> str:
    """A text part's bytes in its declared charset. A name Python does not know, or a Python
    codec that no mail reader uses (idna and undefined raise, punycode turns text into
    other text, base64 or zlib are not text), reads as `fallback`: a hostile charset must
    neither make the text unreadable to the checks nor show them other words than a reader
    sees."""
    try:
        codec = codecs.lookup(charset).name if charset else fallback
        if codec in _NOT_MAIL_CHARSETS:
            codec = fallback
        return payload.decode(codec, errors="replace")
    except (LookupError, UnicodeError, ValueError):  # ValueError: a NUL in the name
        return payload.decode(fallback, errors="replace")


_NOT_MAIL_CHARSETS = frozenset(
    {"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape"}
)


# email.utils.getaddresses is superlinear on hostile values (a From of 1 MB of "@": 3 s, of
# 50,000 groups: 4 s, per read; DMARC, the lists, the URIBL and the headers check each read
# From), and no real address list comes near this long. Longer ones lose their comments and
# long quoted strings first; if still longer, their addresses are picked out in one pass
# (`_addr_specs`), so the address a reader sees still counts.
MAX_PARSED_ADDRESS_CHARS = 65_536


def header_addresses(values: Sequence[str]) -> list[tuple[str, str]]:
    """(display name, address) pairs of address headers, as email.utils.getaddresses gives
    them. It recurses once per nested comment: a From with hundreds of nested "(" made
    every check reading it fail (open) with a RecursionError. Such a value is read with
    its comments removed, so DMARC and the lists still see the address a reader sees."""
    if sum(len(v) for v in values) > MAX_PARSED_ADDRESS_CHARS:
        # Padding in comments or a quoted display name is dropped first, so that the list
        # is parsed as usual when that is what made it long.
        values = [_LONG_QUOTED.sub('""', without_comments(v)) for v in values]
        if sum(len(v) for v in values) > MAX_PARSED_ADDRESS_CHARS:
            return _addr_specs(values)
    try:
        return email.utils.getaddresses(values)
    except RecursionError:
        pass
    stripped = [without_comments(v) for v in values]
    try:
        return email.utils.getaddresses(stripped)
    except RecursionError:  # it also recurses once per group ("a:a:a:..."): addr-specs only
        return _addr_specs(stripped)


def _addr_specs(values: Sequence[str]) -> list[tuple[str, str]]:
    """The addresses in `values` without parsing them: those in angle brackets where there
    are any (a display name, however long, cannot hide the address a reader sees), else
    every addr-spec."""
    found = []
    for value in values:
        found += _ANGLE_ADDR.findall(value) or _ADDR_SPEC.findall(value)
    return [("", address) for address in found]


_LONG_QUOTED = re.compile(r'"(?:[^"\\]|\\.){256,}+"')
_ANGLE_ADDR = re.compile(r"<([^<>@\s]*+@[^<>\s]++)>")
# Starting only where a token starts: retried from every character, a long run without "@"
# cost its square (40 KB: 5 s). A quoted local part ("ceo"@bank.test) is an address too.
_ADDR_SPEC = re.compile(
    r'(?<![^\s<>,:;@"()])(?:"[^"\\\r\n]{0,64}+"|[^\s<>,:;@"()]++)@[^\s<>,:;@"()]++'
)


def parse_address(value: str) -> tuple[str, str]:
    """email.utils.parseaddr, with the same care for deeply nested comments."""
    try:
        return email.utils.parseaddr(value)
    except RecursionError:
        found = header_addresses([value])
        return found[0] if found else ("", "")


def without_comments(value: str) -> str:
    """`value` without its RFC 5322 comments, read in one pass whatever their nesting."""
    kept: list[str] = []
    depth, quoted, escaped = 0, False, False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif depth == 0 and quoted:
            quoted = char != '"'
        elif char == "(":
            depth += 1
            continue
        elif char == ")" and depth:
            depth -= 1
            continue
        elif depth == 0 and char == '"':
            quoted = True
        if depth == 0:
            kept.append(char)
    return "".join(kept)


# Content-Type and Content-Disposition parameters as the email package reads them (get_param,
# get_filename, get_content_charset, and get_boundary while it parses): its splitter
# (email.message._parseparam) costs a value's length times its ";" count, so 830 KB of folded
# "a=b;" took 2.3 s per read and 14 s per message, on the event loop. A value past these bounds
# is read with only the parameters the gateway and the email package use, as far as they fit.
MAX_PARAMETER_CHARS = 8192
MAX_PARAMETERS = 100
_PARAMETER_HEADERS = frozenset({"content-type", "content-disposition"})
# One parameter: text up to a ";" outside a quoted string (a backslash before a quote escapes it,
# as the email package counts). The match skips, in one pass, every parameter whose name is not
# one we read and captures the next one that is. Atomic groups and possessive repeats: linear.
_SEGMENT = r'(?>[^;"\\]++|\\"?|"(?>[^"\\]++|\\"?)*+"?)*+'
_READ_NAME = r"\s*+(?:boundary|charset|filename|name)\s*+[*=]"
_NEXT_READ_PARAMETER = re.compile(
    rf"(?>(?!{_READ_NAME}){_SEGMENT};)*+({_READ_NAME}{_SEGMENT})", re.I
)


def _bounded_parameters(value: str) -> tuple[str, bool]:
    """`value` within the parameter bounds, and whether a parameter we read did not fit."""
    if len(value) <= MAX_PARAMETER_CHARS and value.count(";") <= MAX_PARAMETERS:
        return value, False
    main = value.partition(";")[0][:MAX_PARAMETER_CHARS]
    kept, chars, semicolons = [main], len(main), 0
    position = value.find(";") + 1
    while position and (found := _NEXT_READ_PARAMETER.match(value, position)):
        parameter = found.group(1)
        chars += len(parameter) + 1
        semicolons += parameter.count(";") + 1
        if chars > MAX_PARAMETER_CHARS or semicolons > MAX_PARAMETERS:
            return ";".join(kept), True
        kept.append(parameter)
        position = found.end() + 1
    return ";".join(kept), False


class ParametersCut(email.errors.MessageDefect):
    """A file name, charset or boundary past the parameter bounds, so not seen: a sender could
    hide an attachment's name, or the parts of a multipart, behind one."""


class AmbiguousField(email.errors.MessageDefect):
    """A field that decides how a part is read (Content-Type, Content-Transfer-Encoding,
    Content-Disposition) appears twice with different values: the email package reads the
    first, other readers (ClamAV, mail clients) may read the other, and so see a different
    MIME tree, encoding or file name than the checks did."""


class ObsoleteHeaderSyntax(email.errors.MessageDefect):
    """A header field with white space between its name and the colon (RFC 5322 4.5,
    `field-name *WSP ":"`). Receivers must accept it, and Postfix and ClamAV read it as a
    header; the email package alone ended the header section there."""


# The fields whose second copy changes what a part is; a copy with the same value changes
# nothing. Content-Type and Content-Disposition are also where parameters are bounded.
_SINGLE_MIME_FIELDS = frozenset(
    {"content-type", "content-transfer-encoding", "content-disposition"}
)


class _BoundedMessage(email.message.Message):
    """A part whose Content-Type and Content-Disposition values are bounded as they are parsed:
    every later reader, the parser's own look for the boundary included, reads the bounded value
    at the usual cost. A second, different Content-Type, Content-Transfer-Encoding or
    Content-Disposition is kept (the email package reads the first) and noted (AmbiguousField)."""

    def set_raw(self, name: str, value: str) -> None:
        if len(self) >= MAX_HEADER_FIELDS:
            if not was_cut(self):
                self.defects.append(MessageCut(f"more than {MAX_HEADER_FIELDS} header fields"))
            return
        lowered = name.lower()
        earlier = self.get(name) if lowered in _SINGLE_MIME_FIELDS else None
        if earlier is not None and _field_value_key(str(earlier)) != _field_value_key(value):
            self.defects.append(AmbiguousField(f"two different {name} fields"))
        if lowered in _PARAMETER_HEADERS:
            value, cut = _bounded_parameters(value)
            if cut:
                self.defects.append(
                    ParametersCut(
                        f"MIME parameters past {MAX_PARAMETER_CHARS} characters or {MAX_PARAMETERS}"
                    )
                )
        super().set_raw(name, value)

    def get_boundary(self, failobj: Any = None) -> Any:
        """The boundary; when RFC 2231 sections break the email package (a TypeError for
        boundary*= next to boundary*0=, a ValueError for a NUL in the charset), the first raw
        boundary value, and a ParametersCut defect: the parse itself raised, and every check
        failed, so such a message was deferred at each retry. A mail reader may split it
        another way, so the attachments check holds it (ATTACH_LIMIT)."""
        try:
            return super().get_boundary(failobj)
        except (TypeError, ValueError, IndexError, LookupError, UnicodeError):
            if not any(isinstance(d, ParametersCut) for d in self.defects):
                self.defects.append(ParametersCut("a boundary the email package cannot read"))
            match = _RAW_BOUNDARY.search(str(self.get("Content-Type", "")))
            if match is None:
                return failobj
            value = match.group(1).strip().strip('"')
            return urllib.parse.unquote(value.rpartition("'")[2], errors="replace") or failobj


# compat32 (tolerant of broken mail, never raises on headers) with bounded parameters.
MAIL_POLICY = email.policy.compat32.clone(message_factory=_BoundedMessage)

# Bounds on parsing itself. The email package keeps every line of a message as a string and
# builds a Message per MIME part: 25 MB of empty lines took 6.8 s and 1 GB, 600,000 tiny
# parts 27 s and 470 MB, for one message within the size limit. Mail within these bounds is
# parsed as it always was (a 25 MB attachment in base64 is 330,000 lines); past them, parsing
# stops at the chunk where a bound was crossed, and the message says so (MessageCut): the
# attachments check turns that into ATTACH_LIMIT (quarantine). The antivirus, DKIM and ARC
# read the raw bytes and still see all of it.
MAX_PARSED_LINES = 1_000_000
# Each header lookup reads every field of a part: 200,000 From and To fields took 11 s over
# the checks. Fields past this many are dropped (MessageCut, so the message is held).
MAX_HEADER_FIELDS = 1000
MAX_PARSED_PARTS = 2000
# The parser checks each line against the boundary of every enclosing multipart: a line costs
# as much as its depth (990,000 lines under 150 nested multiparts: 29 s). Lines times depth.
MAX_PARSED_LINE_LEVELS = 4_000_000
MAX_HEADER_BLOCK_BYTES = 1024 * 1024  # what parse_headers reads at most
_FEED_CHUNK = 8192  # what email.parser feeds the feed parser at a time
_EMPTY_LINE = re.compile(rb"(?:\A|\n)\r?\n")


class MessageCut(email.errors.MessageDefect):
    """Parsing stopped at a bound (MAX_PARSED_LINES or MAX_PARSED_PARTS): what follows is
    not in the parsed message."""


class MimeNestingTooDeep(email.errors.MessageDefect):
    """The message's MIME tree is nested too deep to parse; only its headers were parsed."""


class _CountingFactory:
    """The parser's message factory, counting the parts it makes."""

    def __init__(self) -> None:
        self.parts = 0

    def __call__(self, policy: email.policy.Policy = MAIL_POLICY) -> email.message.Message:
        self.parts += 1
        return _BoundedMessage(policy=policy)


def _field_value_key(value: str) -> str:
    """A MIME field's value compared as readers compare it: case and white space aside."""
    return " ".join(unfold(value).lower().split())


def _own_feedparser() -> ModuleType:
    """A private copy of email.feedparser whose header-line pattern accepts white space
    before the colon (RFC 5322 4.5 obsolete syntax, as Postfix's is_header() and ClamAV read
    it). The stdlib parser ended the header section at `X-Pad : x`, so every later header and
    the whole MIME tree were "body" to the checks while the internal server, the clients and
    ClamAV saw them. A copy, not a patch of the stdlib module, so nothing else in the process
    changes; the parser's logic itself stays the stdlib's, line for line."""
    spec = importlib.util.find_spec("email.feedparser")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.headerRE = re.compile(  # type: ignore[attr-defined]
        r"^(From |[\041-\071\073-\176]*[ \t]*:|[\t ])"
    )
    return module


_feedparser = _own_feedparser()
# `Name WSP+ :`: the name and the white space to drop. Possessive: a long line is read once.
_OBSOLETE_FIELD_NAME = re.compile(r"([\041-\071\073-\176]++)[ \t]++:")


class _MailFeedParser(_feedparser.BytesFeedParser):  # type: ignore[name-defined,misc]
    """The stdlib byte feed parser over the copy above; header lines in obsolete syntax are
    read as the field they are ("From : x" is a From field, not a misplaced mbox From_ line)
    and noted on their part (ObsoleteHeaderSyntax)."""

    def _parse_headers(self, lines: list[str]) -> None:
        read = []
        for line in lines:
            found = _OBSOLETE_FIELD_NAME.match(line)
            if found:
                name = found.group(1)
                self._cur.defects.append(ObsoleteHeaderSyntax(f"white space after {name!r}"))
                line = f"{name}:{line[found.end() :]}"
            read.append(line)
        super()._parse_headers(read)


def parse_bytes(raw: bytes) -> email.message.Message:
    """`raw` parsed as email.message_from_bytes(raw, policy=MAIL_POLICY) does, within the
    parse bounds; MIME nested deeper than the parser's recursion allows is parsed as headers
    plus an opaque body (MimeNestingTooDeep), so every check still sees the headers."""
    try:
        return _parse_bounded(raw)
    except RecursionError:
        return _headers_only(raw)


def was_cut(message: email.message.Message) -> bool:
    """Whether parsing `message` stopped short of its end (MessageCut, MimeNestingTooDeep)."""
    return any(isinstance(d, MessageCut | MimeNestingTooDeep) for d in message.defects)


def _parse_bounded(raw: bytes) -> email.message.Message:
    factory = _CountingFactory()
    parser = _MailFeedParser(_factory=factory, policy=MAIL_POLICY)
    factory.parts = 0  # the parser tries the factory out once when it is made
    lines = levels = 0
    cut = ""
    for start in range(0, len(raw), _FEED_CHUNK):
        chunk = raw[start : start + _FEED_CHUNK]
        chunk_lines = chunk.count(b"\n")
        lines += chunk_lines
        # The open multiparts (a private list of the feed parser; without it, depth 1).
        levels += chunk_lines * max(1, len(getattr(parser, "_msgstack", ())))
        if lines > MAX_PARSED_LINES:
            cut = f"more than {MAX_PARSED_LINES} lines"
        elif factory.parts > MAX_PARSED_PARTS:
            cut = f"more than {MAX_PARSED_PARTS} MIME parts"
        elif levels > MAX_PARSED_LINE_LEVELS:
            cut = f"more than {MAX_PARSED_LINE_LEVELS} lines times MIME nesting depth"
        if cut:
            break
        parser.feed(chunk)
    message: email.message.Message = parser.close()
    if cut:
        message.defects.append(MessageCut(f"parsed up to byte {start} of {len(raw)}: {cut}"))
    return message


def parse_headers(raw: bytes) -> email.message.Message:
    """Only the header block of `raw` (at most MAX_HEADER_BLOCK_BYTES) parsed, never as MIME.
    (The email package's header parsers split the whole body into lines first: 25 MB of empty
    lines took 7 s and 1 GB.)"""
    parser = _MailFeedParser(policy=MAIL_POLICY)
    parser._set_headersonly()
    parser.feed(header_block(raw))
    message: email.message.Message = parser.close()
    return message


def header_block(raw: bytes) -> bytes:
    """The header block of `raw` through its empty line, at most MAX_HEADER_BLOCK_BYTES: a
    message without an empty line is all header by RFC 5322, however long it is."""
    return raw[: min(_header_block_end(raw), MAX_HEADER_BLOCK_BYTES)]


_RECEIVED_FIELD = re.compile(rb"^received[ \t]*:", re.IGNORECASE | re.MULTILINE)


def received_fields(raw: bytes) -> int:
    """How many Received header fields `raw` has (in its first MAX_HEADER_BLOCK_BYTES): the
    hop count RFC 5321 6.3 detects mail loops by."""
    return len(_RECEIVED_FIELD.findall(header_block(raw)))


_RECEIVED_FROM = re.compile(r"^\s*from\s+(\S+)(.*?)(?:\sby\s|;|$)", re.IGNORECASE | re.DOTALL)
_IP_LITERAL = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")


def first_received_client(raw: bytes) -> tuple[str, str] | None:
    """(client IP, HELO name) from the `from` clause of the topmost Received field: what the
    relay that added it saw. None when there is none or it names no IP literal."""
    received = parse_headers(raw).get_all("Received") or []
    if not received:
        return None
    match = _RECEIVED_FROM.match(" ".join(str(received[0]).split()))
    if match is None:
        return None
    helo, rest = match.group(1), match.group(2)
    for candidate in (helo, rest):
        for literal in _IP_LITERAL.finditer(candidate):
            try:
                address = ipaddress.ip_address(literal.group(1))
            except ValueError:
                continue
            return str(address), "" if helo.startswith("[") else helo
    return None


def _header_block_end(raw: bytes) -> int:
    """Where the body starts: after the first empty line (CRLF or LF ended), or the end."""
    found = _EMPTY_LINE.search(raw)
    return found.end() if found else len(raw)


def _headers_only(raw: bytes) -> email.message.Message:
    """The header block parsed, the rest kept as one opaque payload: what the email package's
    headersonly parse gives."""
    message = parse_headers(raw)
    message.set_payload(raw[_header_block_end(raw) :].decode("ascii", "surrogateescape"))
    message.defects.append(MimeNestingTooDeep("MIME nesting too deep to parse"))
    return message


def parameters_cut(part: email.message.Message) -> str:
    """Why a parameter we read of `part` is gone (see ParametersCut), or "" when none is."""
    cut = (str(defect) for defect in part.defects if isinstance(defect, ParametersCut))
    return next(cut, "")


def part_bytes(part: email.message.Message) -> bytes:
    """A leaf part's content, transfer encoding undone. get_payload() without decode=True is
    no way to it: compat32 then decodes 8-bit text with the declared charset, and raises on
    one such as idna, undefined or a name with a NUL in it."""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def part_filename(part: email.message.Message, decode_words: bool = True) -> str:
    """A part's file name, RFC 2231 and (`decode_words`) RFC 2047 decoded (senders hide .exe
    in them). When
    the parameters are too broken for the email package (it raises TypeError on some RFC
    2231 continuations), the first raw filename/name value stands in: an undecodable name
    must not hide the attachment from the attachment policy."""
    if not _may_have_param(part, "name", ("Content-Disposition", "Content-Type")):
        return ""
    try:
        name = part.get_filename()
    except (TypeError, ValueError, IndexError, LookupError, UnicodeError):
        name = _raw_filename(part)
    if not name:
        return ""
    return decode_header_value(name) if decode_words else name


def part_charset(part: email.message.Message) -> str | None:
    """The declared charset, or None when the parameters cannot be read (see part_filename)."""
    if not _may_have_param(part, "charset", ("Content-Type",)):
        return None
    try:
        return part.get_content_charset()
    except (TypeError, ValueError, IndexError, LookupError, UnicodeError):
        return None


def _may_have_param(part: email.message.Message, name: str, headers: tuple[str, ...]) -> bool:
    """Whether the (first) `headers` could carry parameter `name`: without it the email
    package's parameter parser, slow pure Python, would find nothing."""
    return any(name in str(part.get(header, "")).lower() for header in headers)


_RAW_BOUNDARY = re.compile(r"""(?:^|;)\s*boundary\*?[0-9]*\*?\s*=\s*("[^"]*"|[^;]*)""", re.I)
_RAW_FILENAME = re.compile(r"""(?:^|;)\s*(?:file)?name\*?[0-9]*\*?\s*=\s*("[^"]*"|[^;]*)""", re.I)


# One whole parameter (not an RFC 2231 continuation section such as filename*0*=, which only
# makes sense joined, as the email package joins them): its name, "*" when RFC 2231 encoded,
# and its value, anchored at the start of the field or after a ";".
_WHOLE_PARAMETER = re.compile(
    r"""(?:^|(?<=;))\s*+(boundary|filename|name)(\*?)\s*+=\s*+("[^"]*+"|[^;]*+)""", re.I
)


def _parameter_readings(value: str, names: tuple[str, ...]) -> list[str]:
    """Each value a reader may take for the parameters `names` of a field: every whole
    occurrence, RFC 2231 (charset'language'percent-encoded) and RFC 2047 words decoded."""
    found = []
    for match in _WHOLE_PARAMETER.finditer(unfold(value)):
        if match.group(1).lower() not in names:
            continue
        text = match.group(3).strip()
        if text.startswith('"'):
            text = text[1:-1] if text.endswith('"') and len(text) > 1 else text[1:]
        if match.group(2):
            text = urllib.parse.unquote(text.split("'", 2)[-1], errors="replace")
        found.append(decode_header_value(text))
    return found


def part_filenames(part: email.message.Message) -> list[str]:
    """Every file name a reader may give `part`: the email package's (part_filename) and each
    filename / filename* / name / name* value of Content-Disposition and Content-Type. Mail
    clients pick differently among them ("a.pdf" in one, "a.exe" in another), so a check that
    judges names judges them all."""
    if not _may_have_param(part, "name", ("Content-Disposition", "Content-Type")):
        return []
    names = dict.fromkeys([part_filename(part)])
    for header, parameters in (("Content-Disposition", ("filename",)), ("Content-Type", ("name",))):
        for value in part.get_all(header) or []:
            names.update(dict.fromkeys(_parameter_readings(header_str(value), parameters)))
    return [name for name in names if name]


def boundary_readings(part: email.message.Message) -> list[str]:
    """The distinct boundaries a reader may take for a multipart: more than one means the
    part splits into different trees for different readers."""
    if part.get_content_maintype() != "multipart":  # is_multipart() is False when the
        return []  # boundary the email package took was never found: that is the trick
    found = dict.fromkeys(
        reading
        for value in part.get_all("Content-Type") or []
        for reading in _parameter_readings(header_str(value), ("boundary",))
    )
    return list(found)


def _raw_filename(part: email.message.Message) -> str | None:
    for header in ("Content-Disposition", "Content-Type"):
        match = _RAW_FILENAME.search(str(part.get(header, "")))
        if match:
            value = match.group(1).strip().strip('"')
            return urllib.parse.unquote(value.rpartition("'")[2], errors="replace")
    return None


def readable_text(text: str) -> str:
    """`text` as its reader sees the letters: invisible format characters dropped and
    compatibility forms folded (NFKC: fullwidth "\uff50\uff41\uff59" is "pay", "\ufb01" is
    "fi", a no-break space a space), so that neither hides a word from the classifier."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", _INVISIBLE_RUN.sub("", text))


def _normalized(text: str) -> str:
    return text if text.isascii() else _INVISIBLE_RUN.sub("", text).translate(_SPACES)


def _part_text(part: email.message.Message, max_part_bytes: int) -> str:
    return decode_text(part_bytes(part)[:max_part_bytes], part_charset(part))


# Bounds on what is kept of anchors and forms per document (a message may hold thousands).
MAX_ANCHORS = 500
MAX_ANCHOR_TEXT_CHARS = 200
MAX_FORMS = 50


class _HtmlReader(HTMLParser):
    """Collects an HTML document's visible text, link targets, anchors with their visible text
    and forms (entities already decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.links: list[str] = []
        self.anchors: list[Anchor] = []
        self.forms: list[Form] = []
        self._hidden_depth = 0
        self._anchor_href: str | None = None
        self._anchor_text: list[str] = []
        self._form_action: str | None = None
        self._form_password = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN_ELEMENTS:
            self._hidden_depth += 1
        for name, value in attrs:
            if name in _LINK_ATTRIBUTES and value:
                self.links.append(value.strip())
        if tag == "a":
            self._end_anchor()
            href = dict(attrs).get("href")
            if href:
                self._anchor_href, self._anchor_text = href.strip(), []
        elif tag == "form":
            self._end_form()
            self._form_action = (dict(attrs).get("action") or "").strip()
        elif tag == "input" and (dict(attrs).get("type") or "").strip().lower() == "password":
            if self._form_action is None:  # a password field outside any form posts by script
                self._form_action = ""
            self._form_password = True

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_ELEMENTS and self._hidden_depth:
            self._hidden_depth -= 1
        if tag == "a":
            self._end_anchor()
        elif tag == "form":
            self._end_form()

    def handle_data(self, data: str) -> None:
        if not self._hidden_depth:
            self.text.append(data)
            if self._anchor_href is not None and len(self._anchor_text) < 20:
                self._anchor_text.append(data)

    def close(self) -> None:
        super().close()
        self._end_anchor()
        self._end_form()

    def _end_anchor(self) -> None:
        if self._anchor_href is not None and len(self.anchors) < MAX_ANCHORS:
            text = " ".join("".join(self._anchor_text).split())[:MAX_ANCHOR_TEXT_CHARS]
            self.anchors.append(Anchor(self._anchor_href, text))
        self._anchor_href = None

    def _end_form(self) -> None:
        if self._form_action is not None and len(self.forms) < MAX_FORMS:
            self.forms.append(Form(self._form_action, self._form_password))
        self._form_action, self._form_password = None, False


def defuse_markup(html: str) -> str:
    """`html` with every "<" that cannot open a complete tag (no ">" before the next "<")
    made text (&lt;). html.parser rescans an unclosed tag or comment from its start at every
    later "<" (fixed only in CPython 3.12.11 / 3.13.4): 20,000 "<a " took 38 s, so a few
    hundred KB of them stalled a worker for minutes. The lookahead scans each stretch
    between two "<" once: linear."""
    return _UNCLOSED_TAG.sub("&lt;", html)


_UNCLOSED_TAG = re.compile(r"<(?=[^<>]*(?:<|\Z))")


def html_text_and_links(html: str) -> tuple[str, list[str]]:
    """The visible text of an HTML document and the targets of its links."""
    reader = read_html(html)
    return " ".join(reader.text), reader.links


def read_html(html: str) -> _HtmlReader:
    """An HTML document read once: text, links, anchors and forms (see _HtmlReader)."""
    reader = _HtmlReader()
    try:
        reader.feed(defuse_markup(html))
        reader.close()
    except (AssertionError, ValueError):  # html.parser's reaction to some broken markup
        pass
    return reader


# Bounds on the work per message (the checks run on the event loop): text decoded per part and
# in all, and leaf parts looked at. Spam that hides its text past them still meets the
# classifier and the antivirus, which read the whole message.
MAX_PART_BYTES = 512 * 1024
MAX_TEXT_BYTES = 2 * 1024 * 1024
MAX_PARTS = 1000

# The rules and uribl checks both read a message's content: it is decoded once per parsed
# message and forgotten with it.
_decoded: weakref.WeakKeyDictionary[email.message.Message, Content] = weakref.WeakKeyDictionary()


def message_content(msg: email.message.Message) -> Content:
    """The decoded content of `msg`, computed on first use."""
    content = _decoded.get(msg)
    if content is None:
        content = _decoded[msg] = _walk(msg)
    return content


def _walk(msg: email.message.Message) -> Content:
    """Walk the leaf parts (nested multiparts and attached messages included) once."""
    texts: list[str] = []
    links: list[str] = []
    anchors: list[Anchor] = []
    forms: list[Form] = []
    attachments: list[Attachment] = []
    leaves = (part for part in msg.walk() if not part.is_multipart())
    text_budget = MAX_TEXT_BYTES
    for part in itertools.islice(leaves, MAX_PARTS):
        content_type = part.get_content_type()
        filename = part_filename(part)
        disposition = (part.get_content_disposition() or "").lower()
        if filename or disposition == "attachment":
            attachments.append(Attachment(filename, content_type))
            if content_type not in ("text/plain", "text/html"):
                continue
        if content_type not in ("text/plain", "text/html") or text_budget <= 0:
            continue
        text = _part_text(part, min(MAX_PART_BYTES, text_budget))
        text_budget -= len(text)
        if content_type == "text/html":
            reader = read_html(text)
            text = " ".join(reader.text)
            links.extend(reader.links)
            anchors.extend(reader.anchors[: MAX_ANCHORS - len(anchors)])
            forms.extend(reader.forms[: MAX_FORMS - len(forms)])
        texts.append(_normalized(text))
    return Content(tuple(texts), tuple(links), tuple(attachments), tuple(anchors), tuple(forms))
