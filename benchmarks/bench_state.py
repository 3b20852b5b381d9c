"""The added cost per message of greylisting and rate limits with the embedded state (SQLite).

    .venv/bin/python benchmarks/bench_state.py [--messages 400] [--rounds 5] [--senders 200]

Two figures, both measured in this run against their own baseline (the machine is shared):
- the greylist step alone (`Greylist.judge`: thread hop + one IMMEDIATE transaction), in
  microseconds, for a known (passed) triplet and for a first sight;
- end to end: a real SMTP client sends messages one after another to the real front end
  (headers + gtube checks, spool, no delivery), with greylisting off and on, rounds
  interleaved, CPU time of client and gateway; every message goes through the state
  (only_above_score = -100) and its triplet has passed already, the steady state of a site
  that greylists. Reported as a ratio; the same for 4 rate limits (client network, sender,
  sender domain, recipient; never reached) against the same baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import smtplib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.checks.greylist import Greylist, build_greylist  # noqa: E402
from gateway.config import SHIPPED_RULES_DIR, GreylistCheckConfig  # noqa: E402
from gateway.model import Action, Connection, Envelope, Transaction, Verdict  # noqa: E402
from gateway.pipeline.registry import Services  # noqa: E402
from tests.support.gateway_fixture import (  # noqa: E402
    RunningGateway,
    gateway_config,
    only_checks,
)

T0 = 1_800_000_000.0
# One limit per key, none ever reached: each message takes 4 buckets (the cost measured).
LIMITS = "".join(
    f'[limit.{key}]\nkey = "{key}"\nmax = 1000000000\nwindow_s = 3600\n'
    for key in ("client_network", "sender", "sender_domain", "recipient")
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def time(self) -> float:
        return self.now


def message(n: int) -> bytes:
    return (
        f"From: Sender {n} <s{n}@sender.test>\r\nTo: bob@example.test\r\nSubject: note {n}\r\n"
        f"Date: Sun, 29 Nov 2026 02:00:00 +0000\r\nMessage-ID: <{n}@sender.test>\r\n\r\n"
        + "some text of an ordinary message\r\n"
        * 100
    ).encode()


def overrides(enabled: bool) -> dict[str, Any]:
    checks = only_checks("headers", "gtube")
    checks["greylist"] = {"enabled": enabled, "only_above_score": -100.0}
    return {"checks": checks}


def send_all(gw: RunningGateway, count: int, senders: int) -> float:
    """CPU seconds of this process (client and gateway threads) for `count` messages: less
    disturbed than wall time by the other work on a shared machine."""
    started = time.process_time()
    with gw.client() as smtp:
        for n in range(count):
            smtp.sendmail(f"s{n % senders}@sender.test", ["bob@example.test"], message(n))
    return time.process_time() - started


def step_cost_us(greylist: Greylist, calls: int, known: bool) -> float:
    verdict = Verdict(Action.ACCEPT, 0.0, 6.0, 15.0, (), "")

    async def run() -> float:
        times = []
        for n in range(calls):
            sender = "known@sender.test" if known else f"new{n}@sender.test"
            tx = Transaction("T", Connection("c", "192.0.2.9"), Envelope(sender, ("b@x.test",)))
            started = time.perf_counter()
            await greylist.judge(tx, verdict)
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1e6

    return asyncio.run(run())


def compare(what: str, off: RunningGateway, on: RunningGateway, args: argparse.Namespace) -> None:
    ratios, per_off, per_on = [], [], []
    for r in range(args.rounds):  # the order alternates: neither always goes first
        if r % 2:
            b = send_all(on, args.messages, args.senders) / args.messages
            a = send_all(off, args.messages, args.senders) / args.messages
        else:
            a = send_all(off, args.messages, args.senders) / args.messages
            b = send_all(on, args.messages, args.senders) / args.messages
        ratios.append(b / a)
        per_off.append(a * 1e3)
        per_on.append(b * 1e3)
    print(
        f"end to end, {args.messages} messages x {args.rounds} rounds, one client:"
        f" {statistics.median(per_off):.2f} ms CPU/msg without {what},"
        f" {statistics.median(per_on):.2f} ms CPU/msg with it (embedded state):"
        f" ratio {statistics.median(ratios):.3f} (rounds: {', '.join(f'{r:.3f}' for r in ratios)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--senders", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = gateway_config(Path(tmp) / "step", overrides(True))
        clock = Clock()
        greylist = build_greylist(config, clock)
        assert greylist is not None
        greylist.settings = GreylistCheckConfig(enabled=True, only_above_score=-100.0)
        step_cost_us(greylist, 1, known=True)
        clock.now += 301
        known_us = step_cost_us(greylist, 2000, known=True)
        new_us = step_cost_us(greylist, 2000, known=False)
        greylist.close()
        print(f"greylist step alone: {known_us:.0f} us (known triplet), {new_us:.0f} us (new)")

        clock = Clock()
        off = RunningGateway(gateway_config(Path(tmp) / "off", overrides(False))).start()
        on = RunningGateway(gateway_config(Path(tmp) / "on", overrides(True)), clock=clock).start()
        rules = Path(tmp) / "rules"
        shutil.copytree(SHIPPED_RULES_DIR, rules)
        (rules / "ratelimits.toml").write_text(LIMITS, encoding="utf-8")
        limited = overrides(False)
        limited["checks"]["ratelimit"] = {"enabled": True}
        limited["pipeline"] = {"rules_dir": str(rules)}
        rl = RunningGateway(
            gateway_config(Path(tmp) / "rl", limited), services=Services(clock=Clock())
        ).start()
        try:
            for sender in range(args.senders):  # every triplet seen once, then passed
                # The 451 of first sight is expected.
                with on.client() as smtp, contextlib.suppress(smtplib.SMTPDataError):
                    smtp.sendmail(f"s{sender}@sender.test", ["bob@example.test"], message(0))
            clock.now += 301
            for gw in (off, on, rl):  # warm all
                send_all(gw, 50, args.senders)
            compare("greylisting", off, on, args)
            compare("4 rate limits", off, rl, args)
        finally:
            for gw in (off, on, rl):
                gw.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
