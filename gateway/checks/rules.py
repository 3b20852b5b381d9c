"""The rules check: the regex rule sets of rules/*.toml applied to one message.

Each matching rule emits its own symbol (RULE_*) with the matched text as the reason. The
rule set is compiled once and swapped whole by `reload()` (SIGHUP): a message is matched
against one consistent set, and a broken file leaves the old set in place.
"""

from __future__ import annotations

import email.message
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway.content import Content, decode_header_value, message_content
from gateway.model import CheckResult, OnError, Phase, Symbol, Transaction
from gateway.pipeline.check import Check
from gateway.pipeline.rules import Rule, RuleSet, load_rule_set
from gateway.pipeline.scoring import SymbolPolicy
from gateway.urls import content_urls

log = logging.getLogger(__name__)

# Header values are cut before they are decoded too (1.9 MB of encoded words in a Subject
# took 2 s on the event loop): to max_header_chars times this, the most an encoded word may
# spend on one character (RFC 2047 2: 75 in all), once words that decode to nothing and runs
# of blanks are gone.
# Past DECODE_BUDGET_CHARS per message, values are matched as they came.
ENCODED_CHARS_PER_CHAR = 75
DECODE_BUDGET_CHARS = 1024 * 1024
_EMPTY_ENCODED_WORD = re.compile(r"=\?[^?\s]{1,75}\?[qQbB]\?\?=")
_BLANKS = re.compile(r"\s++")

_SHOWN_MATCH_CHARS = 60


def _shown(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN_MATCH_CHARS else text[:_SHOWN_MATCH_CHARS] + "..."


class RulesCheck(Check):
    name = "rules"
    phase = Phase.DATA
    symbols = frozenset[str]()  # they come from the rule files: see all_symbols()

    def __init__(
        self,
        paths: Sequence[Path],
        timeout_s: float = 10.0,
        on_error: OnError = OnError.IGNORE,
        max_header_chars: int = 4096,
        max_body_chars: int = 256 * 1024,
    ) -> None:
        super().__init__(timeout_s, on_error)
        self.paths = tuple(paths)
        self.max_header_chars = max_header_chars
        self.max_body_chars = max_body_chars
        self._rules: RuleSet = load_rule_set(self.paths)  # a broken file stops startup

    def all_symbols(self) -> frozenset[str]:
        return self._rules.symbols() | {self.error_symbol}

    def own_scores(self) -> Mapping[str, SymbolPolicy]:
        return self._rules.scores()

    async def run(self, tx: Transaction) -> CheckResult:
        rules = self._rules
        msg = tx.message
        content = message_content(msg)
        found = [
            *self._match_headers(rules.for_target("header"), msg),
            *self._match_body(rules.for_target("body"), content),
            *self._match_urls(rules.for_target("url"), content),
            *self._match_each(
                rules.for_target("attachment_name"),
                "attachment name",
                [a.filename for a in content.attachments if a.filename],
            ),
            *self._match_each(
                rules.for_target("attachment_type"),
                "attachment type",
                [a.content_type for a in content.attachments],
            ),
        ]
        return self.result(*found)

    def _match_headers(self, rules: Sequence[Rule], msg: email.message.Message) -> list[Symbol]:
        if not rules:
            return []
        wanted = {rule.header for rule in rules}
        values: dict[str, list[str]] = {}
        decode_left = DECODE_BUDGET_CHARS
        for name, value in msg.items():
            if (key := name.lower()) in wanted:  # decode only what some rule looks at
                raw, cut = str(value), self.max_header_chars * ENCODED_CHARS_PER_CHAR
                if len(raw) > cut:  # padding that shows as nothing must not push text past it
                    raw = _BLANKS.sub(" ", _EMPTY_ENCODED_WORD.sub("", raw))[:cut]
                text = decode_header_value(raw) if decode_left > 0 else raw
                decode_left -= len(raw)
                values.setdefault(key, []).append(text[: self.max_header_chars])
        found = []
        for rule in rules:
            for text in values.get(rule.header, ()):
                if (matched := rule.pattern.search(text)) is not None:
                    found.append(Symbol(rule.symbol, f"{rule.header}: {_shown(matched)!r}"))
                    break
        return found

    def _match_body(self, rules: Sequence[Rule], content: Content) -> list[Symbol]:
        if not rules:
            return []
        body = "\n".join(content.texts)[: self.max_body_chars]
        found = []
        for rule in rules:
            if (matched := rule.pattern.search(body)) is not None:
                found.append(Symbol(rule.symbol, f"body: {_shown(matched)!r}"))
        return found

    def _match_urls(self, rules: Sequence[Rule], content: Content) -> list[Symbol]:
        if not rules:  # finding the URLs (de-obfuscation included) is the dear part
            return []
        return self._match_each(rules, "url", content_urls(content))

    @staticmethod
    def _match_each(rules: Sequence[Rule], what: str, items: list[str]) -> list[Symbol]:
        found = []
        for rule in rules:
            for item in items:
                if rule.pattern.search(item) is not None:
                    found.append(Symbol(rule.symbol, f"{what}: {_shown(item)!r}"))
                    break
        return found
