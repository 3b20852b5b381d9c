"""Brand impersonation (issue 27): a From display name or Subject naming a brand of
rules/brands.toml while the From domain is not one of the brand's domains; and mail that
claims one of our own domains ([relay] domains) without a DMARC pass, in its From address or
its display name (CEO fraud, internal "IT support" lures)."""

from __future__ import annotations

from pathlib import Path

from gateway.content import decode_header_value, header_addresses, header_str
from gateway.model import CheckResult, DmarcFacts, OnError, Phase, Symbol, Transaction
from gateway.phishing import in_domains, load_phishing_data
from gateway.pipeline.check import Check


class BrandCheck(Check):
    name = "brand"
    phase = Phase.DATA
    requires = ("dmarc",)  # our own domain counts as ours only with DMARC's pass
    symbols = frozenset(
        {"BRAND_DISPLAY_NAME", "BRAND_SUBJECT", "BRAND_OWN_DOMAIN", "BRAND_OWN_NAME"}
    )

    def __init__(
        self,
        rules_dir: Path,
        protected: tuple[str, ...],
        timeout_s: float = 10.0,
        on_error: OnError = OnError.IGNORE,
    ) -> None:
        super().__init__(timeout_s, on_error)
        self.data = load_phishing_data(rules_dir)
        self.protected = tuple(d.lower() for d in protected)

    async def run(self, tx: Transaction) -> CheckResult:
        values = [header_str(v) for v in tx.message.get_all("From") or []]
        pairs = header_addresses(values)
        if len(pairs) != 1 or "@" not in pairs[0][1]:
            return self.result()  # no From or several: the headers and DMARC checks say so
        display = " ".join(decode_header_value(pairs[0][0]).split())
        address = pairs[0][1].lower()
        domain = address.rpartition("@")[2].rstrip(".")
        found: list[Symbol] = []
        owner = self.data.owner(domain)
        # Delivery and read reports carry the reporting server's name ("Microsoft Outlook" is
        # Exchange's) at the recipient's own domain: not an impersonation.
        report = tx.message.get_content_type() == "multipart/report"
        ours = in_domains(domain, self.protected)  # our own: BRAND_OWN_DOMAIN's to judge
        named = self.data.impersonated(display, domain) if display else None
        if named and not report and not ours:
            brand, name = named
            found.append(
                Symbol("BRAND_DISPLAY_NAME", f"name={name!r} brand={brand.key} from={address}")
            )
        subject = " ".join(decode_header_value(tx.message.get("Subject", "")).split())[:500]
        # A brand's own mail names others ("your payment to Hetzner"): only from outside all.
        named = self.data.impersonated(subject, domain) if subject else None
        if named and owner is None and not ours:
            brand, name = named
            found.append(Symbol("BRAND_SUBJECT", f"name={name!r} brand={brand.key} from={address}"))
        dmarc = tx.facts("dmarc")
        if ours:
            # Without a DMARC record (result none) our own systems' mail (a PBX, a scanner, the
            # IT desk) cannot be told from a forgery here: only a failed DMARC counts.
            if isinstance(dmarc, DmarcFacts) and dmarc.result == "fail":
                found.append(Symbol("BRAND_OWN_DOMAIN", f"from={address} dmarc=fail"))
        elif display:
            lowered = display.lower()
            for own in self.protected:
                if own in lowered:
                    found.append(Symbol("BRAND_OWN_NAME", f"name={display!r} from={address}"))
                    break
        return self.result(*found)
