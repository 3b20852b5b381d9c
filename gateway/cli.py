"""The `gateway` command: parses arguments, loads the configuration, runs one subcommand.

Exit codes: 0 success, 1 a requested item was not found or partly failed, 2 usage or
configuration error (one clear line per problem on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway import __version__
from gateway.config import Config, default_config_path, load_config, parse_hostport
from gateway.errors import ConfigError, GatewayError
from gateway.feedback import add_learn_command, run_learn
from gateway.observe.setup import configure_logging
from gateway.quarantine.cli_commands import add_quarantine_commands, run_quarantine_command
from gateway.queue.cli_commands import add_queue_commands, run_queue_command

EXIT_OK, EXIT_USAGE = 0, 2


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="TOML configuration (default: /etc/mailgate/gateway.toml when installed and "
        "present, else embedded defaults)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="Inbound mail gateway: SMTP in, explainable verdict, relay out"
    )
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway in the foreground")
    _config_option(serve)
    serve.add_argument(
        "--user", metavar="NAME", help='[process] user for this run ("root": stay root knowingly)'
    )

    check = sub.add_parser("check-config", help="validate a configuration and its rules")
    _config_option(check)

    scan = sub.add_parser("scan", help="run the full pipeline offline on raw messages")
    _config_option(scan)
    scan.add_argument(
        "--client-ip",
        help="client IP to assume (without it: 127.0.0.1, and each verdict says so)",
    )
    scan.add_argument("--helo", default="localhost", help="HELO name to assume")
    scan.add_argument("--mail-from", default="", help="envelope sender (default: null sender)")
    scan.add_argument("--rcpt", action="append", default=[], help="envelope recipient (repeat)")
    scan.add_argument("--json", action="store_true", help="one JSON object per file")
    scan.add_argument(
        "-c",
        "--check",
        action="store_true",
        help="exit with the strongest verdict (as spamc -c): 0 accept, 3 tag, 4 quarantine, "
        "5 tempfail, 6 reject; 1 a file could not be scanned, 2 configuration error",
    )
    scan.add_argument("files", nargs="+", metavar="FILE")

    add_queue_commands(sub)
    add_quarantine_commands(sub)
    add_learn_command(sub)
    for name in ("queue", "quarantine", "learn"):
        _config_option_if_missing(sub.choices[name])

    # Only for the help listing: main() hands `train ...` to `python -m training` unparsed.
    sub.add_parser(
        "train",
        help="retrain the classifier: train [--corpus DIR...] [--public-corpus DIR...] "
        "[--out DIR] [--feedback DIR | --config PATH] "
        "[--list-share S] [--force] (`make train`)",
    )

    init = sub.add_parser("init", help="write a commented config and the shipped rules to DIR")
    init.add_argument("dir", metavar="DIR", help="e.g. /etc/mailgate")
    init.add_argument("--force", action="store_true", help="overwrite files already there")
    send_test = sub.add_parser(
        "send-test", help="send a GTUBE test message over SMTP and print every reply"
    )
    _config_option(send_test)
    send_test.add_argument("--gtube", choices=("reject", "quarantine"), required=True)
    send_test.add_argument("--from", dest="mail_from", default="gtube-test@example.invalid")
    send_test.add_argument("--to", help="recipient (default: postmaster@ first relay domain)")
    send_test.add_argument("--helo", help="name to greet with (default: this host's name)")
    send_test.add_argument("target", metavar="HOST:PORT", help="the gateway, e.g. 127.0.0.1:2525")

    sink = sub.add_parser("sink", help="a test SMTP server filing mail into a Maildir")
    sink.add_argument("--listen", default="127.0.0.1:2526")
    sink.add_argument("--maildir", default="var/sink")
    return parser


def _config_option_if_missing(parser: argparse.ArgumentParser) -> None:
    if not any("--config" in action.option_strings for action in parser._actions):
        _config_option(parser)


def _announce(address: str) -> None:
    # Tests and scripts read this line to learn the port when listening on port 0.
    print(f"gateway: listening on {address}", flush=True)


def _check_config(config: Config) -> int:
    from gateway.runtime import build_pipeline
    from gateway.setup import deployment_problems

    problems, warnings = deployment_problems(config)
    for warning in warnings:
        print(f"gateway: warning: {warning}", file=sys.stderr)
    if problems:
        raise ConfigError(problems)
    pipeline = build_pipeline(config)
    asyncio.run(pipeline.close())
    names = ", ".join(c.name for c in pipeline.checks)
    print(f"{config.source or 'defaults'}: ok ({len(pipeline.checks)} checks: {names})")
    # What the admin's rule files change: what to re-read after an upgrade (docs/upgrading.md).
    from gateway.config import SHIPPED_RULES_DIR

    local = sorted(
        name
        for name in {p.name for p in SHIPPED_RULES_DIR.glob("*.toml")}
        if config.rule_file(name) != SHIPPED_RULES_DIR / name and name != "gateway.example.toml"
    )
    mine = ", ".join(local) or "none"
    print(f"rules: shipped {SHIPPED_RULES_DIR}; local {config.rules_dir}: {mine}")
    for line in pipeline.policy.overrides:
        print(f"  override {line}")
    return EXIT_OK


def _scan(config: Config, args: argparse.Namespace) -> int:
    from gateway.runtime import build_pipeline
    from gateway.scan import ASSUMED_CLIENT_IP, ScanEnvelope, exit_code, scan_files

    pipeline = build_pipeline(config)
    rcpts = tuple(args.rcpt) or (f"postmaster@{config.relay.domains[0]}",)
    client_ip = args.client_ip or ASSUMED_CLIENT_IP
    envelope = ScanEnvelope(client_ip, args.helo, args.mail_from, rcpts, not args.client_ip)

    async def run() -> int:
        try:
            outputs = await scan_files(pipeline, args.files, envelope, args.json)
        finally:
            await pipeline.close()
        for output in outputs:
            print(output.text, file=sys.stderr if output.failed else sys.stdout)
        return exit_code(outputs, args.check)

    return asyncio.run(run())


def _train(train_args: Sequence[str]) -> int:
    # gateway never imports training/ (DESIGN: one-way dependencies): run it as a program.
    command = [sys.executable, "-m", "training", *train_args]
    return subprocess.run(command, check=False).returncode


def _run(args: argparse.Namespace) -> int:
    if args.command == "sink":
        from gateway.smtp.sink import run_sink

        host, port = parse_hostport(args.listen, 25)
        run_sink(host, port, Path(args.maildir))
        return EXIT_OK
    if args.command == "init":
        from gateway.setup import init_config_dir

        print(init_config_dir(Path(args.dir), force=args.force))
        return EXIT_OK
    config = load_config(args.config if args.config else default_config_path())
    if args.command == "send-test":
        from gateway.sendtest import send_test

        try:
            host, port = parse_hostport(args.target, 25)
        except ValueError:
            raise GatewayError(f"send-test: {args.target!r} is not HOST:PORT") from None
        rcpt = args.to or f"postmaster@{config.relay.domains[0]}"
        helo = args.helo or socket.getfqdn()
        return send_test(args.gtube, host, port, args.mail_from, rcpt, helo)
    log = config.log
    if args.command == "serve":
        configure_logging(log.level, log.format, log.syslog, log.file)
    else:
        configure_logging("warning", log.format, log.syslog)
    if args.command == "serve":
        from gateway.runtime import serve

        if args.user:
            config = dataclasses.replace(
                config, process=dataclasses.replace(config.process, user=args.user)
            )
        return serve(config, _announce)
    if args.command == "check-config":
        return _check_config(config)
    if args.command == "scan":
        return _scan(config, args)
    if args.command in ("queue", "quarantine", "learn"):
        from gateway.privileges import become_storage_user

        become_storage_user(config.process)
    if args.command == "queue":
        return run_queue_command(args, config)
    if args.command == "quarantine":
        return run_quarantine_command(args, config)
    if args.command == "learn":
        return run_learn(args, config.storage_dir)
    raise AssertionError(f"unhandled command {args.command}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        return _train(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"gateway: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `gateway quarantine list | head`: the reader left; not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
