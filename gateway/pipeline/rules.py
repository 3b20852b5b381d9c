"""Rule sets: `rules/*.toml` files of regex rules on headers, body text, URLs and attachments.

    [rule.RULE_SUBJECT_SHOUTING]        # the table name is the symbol the rule emits
    target = "header"                   # header | body | url | attachment_name | attachment_type
    header = "Subject"                  # only with target = "header"
    pattern = '^[^a-z]{12,}$'           # RE2 syntax
    ignore_case = false                 # optional
    score = 1.5                         # weight; rules/scores.toml may override it
    description = "Subject written in capitals"

Patterns are compiled with RE2, which matches in time linear in the input: a rule cannot
backtrack catastrophically on hostile mail, so no per-match timeout is needed. The price is
that back-references and look-around are refused at load time, with the rule named.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, cast, get_args

import re2

from gateway.errors import ConfigError
from gateway.files import is_number, is_upper_snake, read_toml
from gateway.pipeline.scoring import SymbolPolicy

Target = Literal["header", "body", "url", "attachment_name", "attachment_type"]
TARGETS: tuple[str, ...] = get_args(Target)
SYMBOL_PREFIX = "RULE_"
_KEYS = frozenset({"target", "header", "pattern", "ignore_case", "score", "description"})


class Pattern:
    """A compiled RE2 pattern; `search` returns the matched text or None."""

    def __init__(self, source: str, ignore_case: bool) -> None:
        options = re2.Options()
        options.log_errors = False  # the error is reported with the rule's name instead
        options.case_sensitive = not ignore_case
        self.source = source
        self._compiled = re2.compile(source, options)

    def search(self, text: str) -> str | None:
        match = self._compiled.search(text)
        return None if match is None else str(match.group(0))


@dataclass(frozen=True)
class Rule:
    symbol: str
    target: Target
    pattern: Pattern
    score: float
    description: str
    header: str = ""  # lower-case header name for target "header"


@dataclass(frozen=True)
class RuleSet:
    """Compiled rules, grouped by what they look at."""

    rules: tuple[Rule, ...]
    sources: tuple[str, ...] = ()

    def for_target(self, target: Target) -> tuple[Rule, ...]:
        return self._by_target.get(target, ())

    @cached_property
    def _by_target(self) -> dict[str, tuple[Rule, ...]]:
        """Grouped once: the rules check asks for each target on every message."""
        groups: dict[str, list[Rule]] = {}
        for rule in self.rules:
            groups.setdefault(rule.target, []).append(rule)
        return {target: tuple(rules) for target, rules in groups.items()}

    def symbols(self) -> frozenset[str]:
        return frozenset(r.symbol for r in self.rules)

    def scores(self) -> Mapping[str, SymbolPolicy]:
        return {r.symbol: SymbolPolicy(r.score, r.description) for r in self.rules}


def _parse_rule(symbol: str, table: Any, where: str, problems: list[str]) -> Rule | None:
    before = len(problems)
    if not (is_upper_snake(symbol) and symbol.startswith(SYMBOL_PREFIX)):
        problems.append(f"{where}: rule names are UPPER_SNAKE symbols starting with RULE_")
    if not isinstance(table, dict):
        problems.append(f"{where}: expected a table")
        return None
    if unknown := set(table) - _KEYS:
        problems.append(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
    target = table.get("target")
    if target not in TARGETS:
        problems.append(f"{where}.target: {target!r} is not one of {', '.join(TARGETS)}")
    header = table.get("header", "")
    if target == "header" and (not isinstance(header, str) or not header.strip()):
        problems.append(f"{where}.header: the header name is required with target = 'header'")
    if target != "header" and "header" in table:
        problems.append(f"{where}.header: only used with target = 'header'")
    if not is_number(table.get("score")):
        problems.append(f"{where}.score: a number is required")
    description = table.get("description")
    if not isinstance(description, str) or not description.strip():
        problems.append(f"{where}.description: a description is required")
    ignore_case = table.get("ignore_case", False)
    if not isinstance(ignore_case, bool):
        problems.append(f"{where}.ignore_case: expected true or false")
    source = table.get("pattern")
    pattern = None
    if not isinstance(source, str) or not source:
        problems.append(f"{where}.pattern: a non-empty regular expression is required")
    else:
        try:
            pattern = Pattern(source, ignore_case is True)
        except re2.error as exc:
            why = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
            problems.append(f"{where}.pattern: not a valid RE2 expression: {why}")
    if len(problems) > before or pattern is None:
        return None
    return Rule(
        symbol=symbol,
        target=cast(Target, target),
        pattern=pattern,
        score=float(table["score"]),
        description=str(description),
        header=header.strip().lower() if target == "header" else "",
    )


def load_rule_set(paths: Iterable[Path]) -> RuleSet:
    """Read and compile every rule of `paths`; raise ConfigError with one line per problem."""
    problems: list[str] = []
    rules: dict[str, Rule] = {}
    sources: list[str] = []
    for path in paths:
        try:
            data = read_toml(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        sources.append(str(path))
        if unknown := set(data) - {"rule"}:
            problems.append(f"{path}: unknown tables {sorted(unknown)} (rules go in [rule.NAME])")
        table = data.get("rule", {})
        if not isinstance(table, dict):
            problems.append(f"{path}: 'rule' must be a table of rules")
            continue
        for symbol, body in table.items():
            where = f"{path}: rule.{symbol}"
            if symbol in rules:
                problems.append(f"{where}: defined twice")
                continue
            rule = _parse_rule(symbol, body, where, problems)
            if rule is not None:
                rules[symbol] = rule
    if problems:
        raise ConfigError(problems)
    return RuleSet(tuple(rules.values()), tuple(sources))
