"""What a trained model may do in the gateway, and on which evidence: the strong tiers'
points, measured on the site's own mail, each message scored by a model that never saw it
(gateway/checks/classifier_tiers.py reads them from the artefact)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.checks import classifier_tiers as tiers


@dataclass(frozen=True)
class TierClaim:
    unseen_ham: int  # of the site's own mail (not a public corpus), scored by a model without it
    unseen_spam: int
    spam_high_above: float | None
    ham_high_below: float | None
    spam_recall: float  # share of the unseen own spam above spam_high_above
    ham_share: float  # share of the unseen own ham below ham_high_below
    own_messages: int  # learnt ones included
    public_messages: int
    learnt_messages: int

    def metadata(self) -> dict[str, str]:
        return {
            tiers.OWN_MESSAGES: str(self.own_messages),
            tiers.PUBLIC_MESSAGES: str(self.public_messages),
            tiers.OWN_UNSEEN_HAM: str(self.unseen_ham),
            tiers.OWN_UNSEEN_SPAM: str(self.unseen_spam),
            tiers.SPAM_HIGH_ABOVE: _text(self.spam_high_above),
            tiers.HAM_HIGH_BELOW: _text(self.ham_high_below),
        }


def claim_of(
    ham: Sequence[float],
    spam: Sequence[float],
    own_messages: int,
    public_messages: int,
    learnt_messages: int = 0,
) -> TierClaim:
    """The claim from the spam probabilities of the unseen own ham and spam."""
    above = tiers.measured_point(ham, spam_side=True)
    below = tiers.measured_point(spam, spam_side=False)
    recall = sum(p > above for p in spam) / len(spam) if above is not None and spam else 0.0
    share = sum(p < below for p in ham) / len(ham) if below is not None and ham else 0.0
    return TierClaim(
        len(ham),
        len(spam),
        above,
        below,
        recall,
        share,
        own_messages,
        public_messages,
        learnt_messages,
    )


def describe_claim(claim: TierClaim) -> str:
    """What `make train` tells the admin the gateway will let this model do."""
    lines = [
        f"what the gateway lets this model do ({claim.own_messages} messages of your mail, "
        f"{claim.learnt_messages} of them learnt, {claim.public_messages} public-corpus):",
        "  ML_SPAM / ML_HAM at p >= spam_threshold / <= ham_threshold: scored, ML_SPAM never "
        "quarantines alone with the shipped scores",
    ]
    if claim.spam_high_above is None:
        lines.append(
            f"  ML_SPAM_HIGH: off ({claim.unseen_ham} unseen ham of your mail, "
            f"{tiers.MIN_UNSEEN} needed to measure it)"
        )
    else:
        lines.append(
            f"  ML_SPAM_HIGH at p > {claim.spam_high_above:.4f}: quarantines alone; "
            f"{_allowed(claim.unseen_ham)} of {claim.unseen_ham} unseen ham of your mail "
            f"above it, {claim.spam_recall:.1%} of {claim.unseen_spam} unseen spam"
        )
    if claim.ham_high_below is None:
        lines.append(
            f"  ML_HAM_HIGH: off ({claim.unseen_spam} unseen spam of your mail, "
            f"{tiers.MIN_UNSEEN} needed)"
        )
    else:
        lines.append(
            f"  ML_HAM_HIGH at p < {claim.ham_high_below:.4f}: {_allowed(claim.unseen_spam)} of "
            f"{claim.unseen_spam} unseen spam below it, {claim.ham_share:.1%} of "
            f"{claim.unseen_ham} unseen ham"
        )
    return "\n".join(lines)


def _allowed(count: int) -> int:
    return int(tiers.FP_BUDGET * count)


def _text(value: float | None) -> str:
    return "" if value is None else repr(value)
