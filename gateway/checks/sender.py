"""Sender tricks (issue 27): replies steered to a free-mail address at another domain than
the From's; a free-mail From whose display name sounds like a company or a department.
(A display name holding another address is RULE_FROM_NAME_IS_ADDRESS_OTHER, rules/headers.toml.)"""

from __future__ import annotations

import re
from pathlib import Path

from gateway.content import decode_header_value, header_addresses, header_str
from gateway.model import CheckResult, OnError, Phase, Symbol, Transaction
from gateway.phishing import load_phishing_data
from gateway.pipeline.check import Check
from gateway.urls import registered_domain

# Words of organisations, not of people: a person's free-mail address rarely carries them.
_COMPANY_WORDS = re.compile(
    r"\b(?:billing|support|helpdesk|help desk|service|services|department|dept|team|payroll|"
    r"accounts?|accounting|security|admin|administrator|customer care|notification|invoices?|"
    r"inc|ltd|llc|gmbh|corp|corporation|bank|office of|ceo|cfo|human resources|hr)\b",
    re.IGNORECASE,
)


class SenderCheck(Check):
    name = "sender"
    phase = Phase.DATA
    symbols = frozenset({"SENDER_REPLY_TO_FREEMAIL", "SENDER_FREEMAIL_COMPANY_NAME"})

    def __init__(
        self, rules_dir: Path, timeout_s: float = 10.0, on_error: OnError = OnError.IGNORE
    ) -> None:
        super().__init__(timeout_s, on_error)
        self.data = load_phishing_data(rules_dir)

    async def run(self, tx: Transaction) -> CheckResult:
        pairs = header_addresses([header_str(v) for v in tx.message.get_all("From") or []])
        if len(pairs) != 1 or "@" not in pairs[0][1]:
            return self.result()
        name, address = decode_header_value(pairs[0][0]), pairs[0][1].lower()
        from_domain = address.rpartition("@")[2]
        from_reg = registered_domain(from_domain) or from_domain
        found: list[Symbol] = []
        # Mailing lists put the author in Reply-To when they rewrite From (DMARC munging).
        if tx.message.get("List-Id") is None:
            replies = header_addresses(
                [header_str(v) for v in tx.message.get_all("Reply-To") or []]
            )
            for _, reply in replies[:10]:
                reply_domain = reply.lower().rpartition("@")[2]
                reply_reg = registered_domain(reply_domain) or reply_domain
                if reply_reg != from_reg and self.data.is_freemail(reply_domain):
                    found.append(
                        Symbol("SENDER_REPLY_TO_FREEMAIL", f"from={address} reply_to={reply}")
                    )
                    break
        if self.data.is_freemail(from_domain) and (word := _COMPANY_WORDS.search(name)):
            found.append(
                Symbol(
                    "SENDER_FREEMAIL_COMPANY_NAME",
                    f"name={name!r} word={word.group(0)!r} from={address}",
                )
            )
        return self.result(*found)
