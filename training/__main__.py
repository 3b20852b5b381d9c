"""`python -m training [--corpus DIR...] [--public-corpus DIR...] [--out DIR] [--feedback DIR]
[--list-share S] [--force]`.

Exit codes: 0 model written, 1 refused (worse than the current model, or too little data),
2 bad arguments or unreadable corpus.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gateway.config import SHIPPED_MODEL
from gateway.mailsources import MailSourceError
from training.readers import CorpusError
from training.run import CARD_FILE, Sources, TrainingRefused, run
from training.weights import LIST_MAIL_SHARE, share_argument


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training", description="train the spam classifier and write its card"
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        nargs="+",
        action="extend",
        default=[],
        metavar="DIR",
        help="your own labelled mail: a directory with ham/ and spam/ (each: directory of "
        "messages, Maildir or mbox); its held-out part measures where the model may decide "
        "alone (ML_SPAM_HIGH)",
    )
    parser.add_argument(
        "--public-corpus",
        type=Path,
        nargs="+",
        action="extend",
        default=[],
        metavar="DIR",
        help="a labelled corpus that is not your mail (the shipped model's SpamAssassin public "
        "corpus): learnt from, but no evidence for the strong tiers",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=SHIPPED_MODEL.parent,
        metavar="DIR",
        help=f"where the model, its card and ROC plot go (default {SHIPPED_MODEL.parent})",
    )
    parser.add_argument(
        "--feedback",
        type=Path,
        metavar="DIR",
        help="feedback store with ham/ and spam/ (the gateway's <storage dir>/feedback)",
    )
    parser.add_argument(
        "--list-share",
        type=share_argument,
        default=LIST_MAIL_SHARE,
        metavar="S",
        help="share of each label's weight that discussion-list mail is brought down to "
        f"(default {LIST_MAIL_SHARE:g}; 1: list mail counts in full, as when your MX takes "
        "much of it)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace the current model even if the new is worse"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.corpus and not args.public_corpus:
        parser.error("give --corpus (your mail) and/or --public-corpus")
    for corpus in [*args.public_corpus, *args.corpus]:
        if not corpus.is_dir():
            print(f"train: {corpus}: not a directory", file=sys.stderr)
            return 2
    started = time.perf_counter()
    try:
        sources = Sources(args.corpus, args.feedback, args.public_corpus)
        artefact = run(sources, args.out, args.force, args.list_share)
    except (CorpusError, MailSourceError) as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 2
    except TrainingRefused as exc:
        print(f"train: refused: {exc}", file=sys.stderr)
        return 1
    print(f"train: wrote {artefact} in {time.perf_counter() - started:.1f}s")
    print(
        f"train: its card is {artefact.parent / CARD_FILE}; a running gateway whose "
        "[checks.classifier] model is this file loads it on SIGHUP"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
