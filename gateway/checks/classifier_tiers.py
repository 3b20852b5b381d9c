"""When the classifier may decide on its own: strong tiers, measured on the site's own mail.

A model's operating points carry over only to mail like the mail they were measured on. The
shipped model learnt the 2002 public corpus, where it separates ham and spam almost perfectly,
and still rates some of today's ham spam-like: its `ML_SPAM` must not quarantine alone. A
model trained (`gateway train --corpus`) on the site's own labelled mail is measured on that
mail, each message scored by a model that never saw it (the out-of-fold scores its calibration
is fitted on, and the held-out fifth). Where there are enough of them to say something, the
training run writes the probabilities beyond which no such ham (resp. spam) fell (at most 0.1%
of them from 1000 on) into the artefact, and the check emits `ML_SPAM_HIGH` / `ML_HAM_HIGH`
there, scored to decide alone. An admin may set the points by hand, or switch the tiers off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Metadata keys of the artefact (written by training/run.py, read here).
OWN_MESSAGES = "own_messages"
PUBLIC_MESSAGES = "public_messages"
OWN_UNSEEN_HAM = "own_unseen_ham"
OWN_UNSEEN_SPAM = "own_unseen_spam"
SPAM_HIGH_ABOVE = "spam_high_above"
HAM_HIGH_BELOW = "ham_high_below"

# Unseen messages of the site's own mail needed before a point is claimed: with none of 150
# unseen ham above it, the false-positive rate is below 2% with 95% confidence (rule of
# three); from 1000 on, the point allows 0.1% of them (FP_BUDGET).
MIN_UNSEEN = 150
FP_BUDGET = 0.001
TIER_MODES = ("auto", "off")


@dataclass(frozen=True)
class Tiers:
    spam_high_above: float | None  # probability strictly above which ML_SPAM_HIGH is emitted
    ham_high_below: float | None  # probability strictly below which ML_HAM_HIGH is emitted
    why: str  # on which evidence, for the log and `gateway scan`


def measured_point(other_label: Sequence[float], spam_side: bool) -> float | None:
    """The probability past which at most FP_BUDGET of `other_label`'s unseen messages fall
    (none, under 1000 of them): the highest ham probability for the spam side, the lowest
    spam probability for the ham side. None with fewer than MIN_UNSEEN messages."""
    if len(other_label) < MIN_UNSEEN:
        return None
    allowed = math.floor(FP_BUDGET * len(other_label))
    ordered = sorted(other_label, reverse=spam_side)
    return float(ordered[allowed])


def model_tiers(metadata: Mapping[str, str]) -> Tiers:
    """The tiers the artefact claims, with the evidence behind them."""
    ham = int(metadata.get(OWN_UNSEEN_HAM, "0") or 0)
    spam = int(metadata.get(OWN_UNSEEN_SPAM, "0") or 0)
    above = _number(metadata.get(SPAM_HIGH_ABOVE, ""))
    below = _number(metadata.get(HAM_HIGH_BELOW, ""))
    if ham == 0 and spam == 0:
        public = metadata.get(PUBLIC_MESSAGES, "") or metadata.get("messages", "?")
        return Tiers(None, None, f"no strong tiers: trained on {public} public-corpus messages, "
                     "none of this site's mail held out to measure them on")  # fmt: skip
    parts = [f"measured on {ham} unseen ham and {spam} unseen spam of this site's mail"]
    if above is None:
        parts.append(f"ML_SPAM_HIGH off (fewer than {MIN_UNSEEN} unseen ham)")
    if below is None:
        parts.append(f"ML_HAM_HIGH off (fewer than {MIN_UNSEEN} unseen spam)")
    return Tiers(above, below, "; ".join(parts))


def configured_tiers(
    metadata: Mapping[str, str], mode: str, spam_high_threshold: float, ham_high_threshold: float
) -> Tiers:
    """The tiers the check uses: the model's claim (`mode` "auto") or none ("off"), with a
    point set by hand in the config (> 0) taking the place of the model's."""
    tiers = model_tiers(metadata) if mode == "auto" else Tiers(None, None, "tiers off by config")
    above, below, why = tiers.spam_high_above, tiers.ham_high_below, tiers.why
    if spam_high_threshold > 0:
        above, why = spam_high_threshold, f"{why}; ML_SPAM_HIGH point set in config"
    if ham_high_threshold > 0:
        below, why = ham_high_threshold, f"{why}; ML_HAM_HIGH point set in config"
    return Tiers(above, below, why)


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None
