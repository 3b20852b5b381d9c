"""`gateway train` (also `python -m training`, `make train`): [--corpus DIR...]
[--public-corpus DIR...] [--out DIR] [--feedback DIR | --config PATH] [--list-share S] [--force].

Exit codes: 0 model written, 1 refused (worse than the current model, or too little data),
2 bad arguments or unreadable corpus.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gateway.config import SHIPPED_MODEL, load_config
from gateway.errors import ConfigError
from gateway.feedback import feedback_dir
from gateway.mailsources import MailSourceError
from training.readers import CorpusError
from training.weights import LIST_MAIL_SHARE, share_argument

# A fresh clone has no public corpus: it is not shipped (its licence is unclear, 30 MB).
PUBLIC_CORPUS_HINT = """\
train: the public corpus is not part of the project. Either
  - train on your own labelled mail only: make train PUBLIC_CORPUS= CORPUS=DIR
    (gateway train --corpus DIR); DIR holds ham/ and spam/, each a directory of raw
    messages, a Maildir or an mbox (docs/learning.md), or
  - fetch the SpamAssassin public corpus (https://spamassassin.apache.org/old/publiccorpus/:
    the 20030228 easy_ham, easy_ham_2, hard_ham, spam, spam_2 tarballs), unpack the ham
    tarballs' messages into DIR/ham and the spam ones into DIR/spam, and give
    PUBLIC_CORPUS=DIR (gateway train --public-corpus DIR)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway train", description="train the spam classifier and write its card"
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
        help="feedback store with ham/ and spam/ (the gateway's <storage dir>/feedback; "
        "default: the one of --config)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="the gateway's configuration: its [storage] dir holds the feedback store that "
        "gateway learn and quarantine --learn fill",
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
    try:
        from training.run import CARD_FILE, Sources, TrainingRefused, run
    except ModuleNotFoundError as exc:  # tqdm and matplotlib come with the [train] extra only
        print(
            f"train: {exc.name} is missing: training needs the [train] extra "
            "(pip install 'mailgate[train]'; make install has it)",
            file=sys.stderr,
        )
        return 2
    if not args.corpus and not args.public_corpus:
        parser.error("give --corpus (your mail) and/or --public-corpus")
    for corpus in [*args.public_corpus, *args.corpus]:
        if not corpus.is_dir():
            print(f"train: {corpus}: not a directory", file=sys.stderr)
            if corpus in args.public_corpus:
                print(PUBLIC_CORPUS_HINT, file=sys.stderr)
            return 2
    if args.feedback is None and args.config is not None:
        try:
            store = feedback_dir(load_config(args.config).storage_dir)
        except ConfigError as exc:
            for problem in exc.problems:
                print(f"train: {problem}", file=sys.stderr)
            return 2
        print(f"train: feedback store {store} (from {args.config})", file=sys.stderr)
        args.feedback = store
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
