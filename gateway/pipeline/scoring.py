"""Scoring: pure functions from check results to a Verdict, and the policy they read.

The policy comes from `rules/scores.toml` (symbol weights, groups with caps) and
`rules/actions.toml` (thresholds, forced actions with optional SMTP replies). An admin's files
of the same names are layered over the shipped ones entry by entry (`load_policy`): they hold
only what the admin changed, and a symbol a new release adds keeps its shipped score.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.files import is_number, is_upper_snake, read_toml
from gateway.model import Action, CheckResult, OnError, ScoredSymbol, Verdict

SCORES_FILE = "scores.toml"
ACTIONS_FILE = "actions.toml"


@dataclass(frozen=True)
class SymbolPolicy:
    score: float
    description: str = ""
    group: str = ""


@dataclass(frozen=True)
class ForcedAction:
    action: Action
    reply: str | None = None  # "554 5.7.0 text {reason}" or None for the default reply


@dataclass(frozen=True)
class Thresholds:
    quarantine: float
    reject: float
    tag: float | None = None  # delivered with X-Spam-Flag: YES from here; None = no tagging


@dataclass(frozen=True)
class Policy:
    symbols: Mapping[str, SymbolPolicy]
    group_caps: Mapping[str, float]
    thresholds: Thresholds
    forced: Mapping[str, ForcedAction]
    domain_thresholds: Mapping[str, Thresholds] = field(default_factory=dict)
    # Names scored or forced only by the shipped files under an admin's own files: a rule file
    # the admin copied before a release added them may not emit them, which is no typo.
    inherited: frozenset[str] = frozenset()
    # What the admin's files change against the shipped ones, one line each (check-config).
    overrides: tuple[str, ...] = ()
    subject_prefix: str = ""  # [tag] subject_prefix: marks tagged mail for readers without rules

    def thresholds_for(self, recipients: Iterable[str]) -> Thresholds:
        """The strictest thresholds among the recipients' domains (a domain may need its own)."""
        chosen = self.thresholds
        for rcpt in recipients:
            domain = rcpt.rpartition("@")[2].lower()
            own = self.domain_thresholds.get(domain)
            if own is not None:
                tags = [t for t in (chosen.tag, own.tag) if t is not None]
                chosen = Thresholds(
                    min(chosen.quarantine, own.quarantine),
                    min(chosen.reject, own.reject),
                    min(tags) if tags else None,
                )
        return chosen

    def check_symbols(self, emitted: Mapping[str, frozenset[str]]) -> None:
        """Startup check: every symbol a check can emit is scored, every scored symbol exists."""
        problems = []
        known: set[str] = set()
        for check, names in sorted(emitted.items()):
            known |= names
            problems += [
                f"{SCORES_FILE}: symbol {n} (emitted by check {check}) has no score"
                for n in sorted(names - set(self.symbols))
            ]
        problems += [
            f"{SCORES_FILE}: symbol {n} is scored but no enabled check emits it"
            for n in sorted(set(self.symbols) - known)
        ]
        problems += [
            f"{ACTIONS_FILE}: forced action for {n}, which no enabled check emits"
            for n in sorted(set(self.forced) - known)
        ]
        if problems:
            raise ConfigError(problems)

    def with_defaults(self, scores: Mapping[str, SymbolPolicy]) -> Policy:
        """This policy plus weights for symbols it does not score itself (from rule files)."""
        return dataclasses.replace(self, symbols={**scores, **self.symbols})

    def restricted_to(self, emitted: Mapping[str, frozenset[str]]) -> Policy:
        """The policy without symbols of checks that are disabled in this configuration."""
        known = set().union(*emitted.values()) if emitted else set()
        return dataclasses.replace(
            self,
            symbols={k: v for k, v in self.symbols.items() if k in known},
            forced={k: v for k, v in self.forced.items() if k in known},
        )


def _read_toml(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        return read_toml(path)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return {}


def _thresholds(table: Any, where: str, problems: list[str]) -> Thresholds | None:
    if not isinstance(table, dict) or set(table) - {"quarantine", "reject", "tag"}:
        problems.append(f"{where}: expected a table with quarantine, reject and optional tag")
        return None
    quarantine, reject, tag = table.get("quarantine"), table.get("reject"), table.get("tag")
    if not (is_number(quarantine) and is_number(reject)):
        problems.append(f"{where}: quarantine and reject must both be numbers")
        return None
    if quarantine > reject:
        problems.append(f"{where}: quarantine ({quarantine}) must not exceed reject ({reject})")
        return None
    if tag is not None and not (is_number(tag) and tag <= quarantine):
        problems.append(f"{where}: tag must be a number not above quarantine ({quarantine})")
        return None
    return Thresholds(float(quarantine), float(reject), None if tag is None else float(tag))


def _parse_scores(
    data: dict[str, Any], problems: list[str]
) -> tuple[dict[str, SymbolPolicy], dict[str, float]]:
    symbols: dict[str, SymbolPolicy] = {}
    caps: dict[str, float] = {}
    for key in set(data) - {"symbol", "group"}:
        problems.append(f"{SCORES_FILE}: unknown table {key!r} (known: symbol, group)")
    for name, table in data.get("group", {}).items():
        if not isinstance(table, dict) or set(table) - {"max_score", "description"}:
            problems.append(f"{SCORES_FILE}: group.{name}: keys are max_score, description")
        elif not is_number(table.get("max_score")):
            problems.append(f"{SCORES_FILE}: group.{name}.max_score must be a number")
        else:
            caps[name] = float(table["max_score"])
    for name, table in data.get("symbol", {}).items():
        where = f"{SCORES_FILE}: symbol.{name}"
        if not is_upper_snake(name):
            problems.append(f"{where}: symbol names are UPPER_SNAKE")
        if not isinstance(table, dict):
            problems.append(f"{where}: expected a table with score")
            continue
        unknown = set(table) - {"score", "description", "group"}
        if unknown:
            problems.append(f"{where}: unknown keys {sorted(unknown)}")
        if not is_number(table.get("score")):
            problems.append(f"{where}.score must be a number")
            continue
        group = table.get("group", "")
        if group and group not in caps:
            problems.append(f"{where}.group: {group!r} is not defined under [group]")
        symbols[name] = SymbolPolicy(
            float(table["score"]), str(table.get("description", "")), group
        )
    return symbols, caps


def _parse_actions(
    data: dict[str, Any], problems: list[str]
) -> tuple[Thresholds | None, dict[str, ForcedAction], dict[str, Thresholds]]:
    for key in set(data) - {"thresholds", "forced", "domain", "tag"}:
        problems.append(
            f"{ACTIONS_FILE}: unknown table {key!r} (known: thresholds, forced, domain, tag)"
        )
    thresholds = _thresholds(data.get("thresholds"), f"{ACTIONS_FILE}: thresholds", problems)
    forced: dict[str, ForcedAction] = {}
    for name, value in data.get("forced", {}).items():
        where = f"{ACTIONS_FILE}: forced.{name}"
        table = {"action": value} if isinstance(value, str) else value
        if not isinstance(table, dict) or set(table) - {"action", "reply"}:
            problems.append(f"{where}: expected an action name or a table with action, reply")
            continue
        try:
            action = Action(str(table.get("action")))
        except ValueError:
            action = Action.ACCEPT
        if action == Action.ACCEPT:  # allowing is done by negative scores, never by force
            problems.append(f"{where}: action must be one of tag, quarantine, tempfail, reject")
            continue
        reply = table.get("reply")
        if reply is not None and not _valid_reply(reply, action):
            problems.append(
                f"{where}.reply: must start with a 5xx (reject) or 4xx (tempfail) "
                f"code and an enhanced status code, e.g. '554 5.7.0 text'"
            )
            continue
        forced[name] = ForcedAction(action, reply)
    domains: dict[str, Thresholds] = {}
    for domain, table in data.get("domain", {}).items():
        parsed = _thresholds(table, f"{ACTIONS_FILE}: domain.{domain}", problems)
        if parsed is not None:
            domains[domain.lower()] = parsed
    return thresholds, forced, domains


def _subject_prefix(data: dict[str, Any], problems: list[str]) -> str:
    table = data.get("tag", {})
    prefix = table.get("subject_prefix", "") if isinstance(table, dict) else None
    if not isinstance(table, dict) or set(table) - {"subject_prefix"}:
        problems.append(f"{ACTIONS_FILE}: tag: expected a table with subject_prefix")
    elif not isinstance(prefix, str) or any(c in prefix for c in "\r\n"):
        problems.append(f"{ACTIONS_FILE}: tag.subject_prefix: one line of text")
    else:
        return prefix
    return ""


def _valid_reply(reply: Any, action: Action) -> bool:
    if not isinstance(reply, str):
        return False
    parts = reply.split(" ", 2)
    if len(parts) < 3 or not parts[0].isdigit() or len(parts[0]) != 3:
        return False
    first = {"reject": "5", "tempfail": "4"}.get(action.value)
    return first is not None and parts[0][0] == first and parts[1].startswith(first + ".")


def load_policy(rules_dir: Path, shipped_dir: Path | None = None) -> Policy:
    """The policy from `rules_dir`; with `shipped_dir` (another directory), the shipped files
    there with the admin's files in `rules_dir` layered over them (either may be missing)."""
    problems: list[str] = []
    if shipped_dir is None or _same_dir(rules_dir, shipped_dir):
        scores_data = _read_toml(rules_dir / SCORES_FILE, problems)
        actions_data = _read_toml(rules_dir / ACTIONS_FILE, problems)
        layered = None
    else:
        shipped_scores = _read_toml(shipped_dir / SCORES_FILE, problems)
        shipped_actions = _read_toml(shipped_dir / ACTIONS_FILE, problems)
        local_scores = _read_local(rules_dir / SCORES_FILE, problems)
        local_actions = _read_local(rules_dir / ACTIONS_FILE, problems)
        scores_data, score_changes = _layer(SCORES_FILE, shipped_scores, local_scores, problems)
        actions_data, action_changes = _layer(
            ACTIONS_FILE, shipped_actions, local_actions, problems
        )
        mentioned = set(local_scores.get("symbol", {})) | set(local_actions.get("forced", {}))
        layered = (mentioned, (*score_changes, *action_changes))
    symbols, caps = _parse_scores(scores_data, problems)
    thresholds, forced, domains = _parse_actions(actions_data, problems)
    prefix = _subject_prefix(actions_data, problems)
    if problems or thresholds is None:
        raise ConfigError(problems or [f"{ACTIONS_FILE}: thresholds missing"])
    policy = Policy(symbols, caps, thresholds, forced, domains, subject_prefix=prefix)
    if layered is None:
        return policy
    mentioned, changes = layered
    inherited = frozenset((set(symbols) | set(forced)) - mentioned)
    return dataclasses.replace(policy, inherited=inherited, overrides=changes)


# In an admin's actions.toml, `action = "none"` takes a shipped forced action away (deleting
# the table from a layered file would only bring the shipped one back).
NO_FORCED_ACTION = "none"
# Tables whose entries are layered one by one, and per entry key by key ("whole": the admin's
# entry replaces the shipped one).
_LAYERED = {
    SCORES_FILE: {"symbol": "keys", "group": "keys"},
    ACTIONS_FILE: {"thresholds": "value", "forced": "whole", "domain": "whole", "tag": "value"},
}


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _read_local(path: Path, problems: list[str]) -> dict[str, Any]:
    return _read_toml(path, problems) if path.exists() else {}


def _layer(
    name: str, shipped: dict[str, Any], local: dict[str, Any], problems: list[str]
) -> tuple[dict[str, Any], list[str]]:
    """`shipped` with `local` laid over it, and one line per entry the admin changed."""
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in shipped.items()}
    changes: list[str] = []
    same = 0
    for table, entries in local.items():
        how = _LAYERED[name].get(table)
        if how is None or not isinstance(entries, dict):
            merged[table] = entries  # reported as unknown by the parser
            continue
        into = merged.setdefault(table, {})
        for key, value in entries.items():
            before = into.get(key)
            if how == "keys" and isinstance(value, dict) and isinstance(before, dict):
                after = {**before, **value}
            else:
                after = value
            if table == "forced" and _forced_action(value) == NO_FORCED_ACTION:
                into.pop(key, None)
                changes.append(f"{name}: {table}.{key}: shipped forced action turned off")
                continue
            if after == before:
                same += 1
                continue
            into[key] = after
            if before is None:
                changes.append(f"{name}: {table}.{key}: {_show(after)} (not in the shipped file)")
            else:
                changes.append(f"{name}: {table}.{key}: {_show(after)} (shipped: {_show(before)})")
    if same:
        changes.append(f"{name}: {same} entries equal to the shipped ones (may be deleted)")
    return merged, changes


def _forced_action(value: Any) -> Any:
    return value.get("action") if isinstance(value, dict) else value


def _show(value: Any) -> str:
    if isinstance(value, dict):
        if set(value) >= {"score"}:  # a symbol: its score is what matters at a glance
            return f"score {value['score']}"
        return ", ".join(f"{k} = {v!r}" for k, v in value.items() if k != "description")
    return repr(value)


def score_symbols(policy: Policy, results: Iterable[CheckResult]) -> list[ScoredSymbol]:
    """Weight every symbol; apply group caps (positive and negative) in order of appearance."""
    scored: list[ScoredSymbol] = []
    group_totals: dict[str, float] = {}
    for result in results:
        for symbol in result.symbols:
            rule = policy.symbols.get(symbol.name)
            weight = rule.score if rule else 0.0
            score = weight * max(0.0, min(1.0, symbol.multiplier))
            if rule and rule.group:
                cap = policy.group_caps[rule.group]
                before = group_totals.get(rule.group, 0.0)
                after = max(-abs(cap), min(abs(cap), before + score))
                score = after - before
                group_totals[rule.group] = after
            scored.append(ScoredSymbol(symbol.name, round(score, 4), symbol.reason, result.check))
    return scored


def decide(
    policy: Policy,
    results: Iterable[CheckResult],
    on_error: Mapping[str, OnError],
    recipients: Iterable[str] = (),
    final: bool = True,
) -> Verdict:
    """The verdict for the results so far.

    Before DATA (`final=False`) only forced reject/tempfail and check failures with
    `on_error=tempfail` act; scores and forced quarantine are applied once the message is known.
    """
    results = list(results)
    scored = score_symbols(policy, results)
    total = round(sum(s.score for s in scored), 4)
    limits = policy.thresholds_for(recipients)

    action, reason, forced_by, reply = Action.ACCEPT, "score below thresholds", None, None
    if final:
        if total >= limits.reject:
            action = Action.REJECT
            reason = f"score {total:.2f} >= reject threshold {limits.reject:g}"
        elif total >= limits.quarantine:
            action = Action.QUARANTINE
            reason = f"score {total:.2f} >= quarantine threshold {limits.quarantine:g}"
        elif limits.tag is not None and total >= limits.tag:
            action = Action.TAG
            reason = f"score {total:.2f} >= tag threshold {limits.tag:g}"

    for result in results:
        failed = result.error is not None and on_error.get(result.check) == OnError.TEMPFAIL
        if failed and Action.TEMPFAIL.severity > action.severity:
            action, reason, forced_by, reply = (
                Action.TEMPFAIL,
                f"check {result.check} failed: {result.error}",
                None,
                None,
            )

    for symbol in scored:
        rule = policy.forced.get(symbol.name)
        # Holding or marking a message needs the message: both wait for DATA.
        if rule is None or (not final and rule.action in (Action.QUARANTINE, Action.TAG)):
            continue
        if rule.action.severity > action.severity:
            action, forced_by = rule.action, symbol
            reason = f"{symbol.name} forces {rule.action.value}"
            reply = rule.reply.replace("{reason}", symbol.reason) if rule.reply else None

    return Verdict(
        action=action,
        score=total,
        quarantine_at=limits.quarantine,
        reject_at=limits.reject,
        symbols=tuple(scored),
        reason=reason,
        forced_by=forced_by,
        reply=reply,
        tag_at=limits.tag,
        subject_prefix=policy.subject_prefix,
    )
