"""An admin's first steps and checks: `gateway init DIR`, and what `check-config` verifies about
the deployment beyond the config's own values (who runs it, its storage, its certificate)."""

from __future__ import annotations

import os
import re
import ssl
import time
from pathlib import Path

from gateway.config import INSTALLED_CONFIG, SHIPPED_RULES_DIR, Config
from gateway.errors import GatewayError
from gateway.privileges import Identity, storage_problem, target_identity

EXAMPLE = "gateway.example.toml"
CONFIG_NAME = "gateway.toml"
INSTALLED_STORAGE = "/var/lib/mailgate"
CERT_WARN_DAYS = 14


# What `gateway init` writes beside gateway.toml: the two files an admin tunes, as overrides
# over the shipped ones (an entry not there keeps its shipped value, and a release's new symbol
# its shipped score); every other rule file is read from the package until the admin copies it.
_OVERRIDES = {
    "scores.toml": """\
# Your scores: only what you change from the shipped scores.toml, entry by entry; a symbol not
# named here keeps its shipped score (docs/upgrading.md). `gateway check-config` lists every
# override with the shipped value. For example:
#
# [symbol.ML_SPAM]
# score = 6.5
""",
    "actions.toml": """\
# Your thresholds and forced actions: only what you change from the shipped actions.toml
# (docs/upgrading.md); NAME = "none" under [forced] turns a shipped forced action off. For
# example:
#
# [thresholds]
# quarantine = 5.0
#
# [forced]
# SPF_FAIL = "reject"
""",
}


def init_config_dir(directory: Path, force: bool) -> str:
    """Write gateway.toml (the commented example, storage in /var/lib/mailgate) and override
    files for scores and actions into `directory`; return the next steps. GatewayError if a
    file is there."""
    targets = [directory / CONFIG_NAME, *(directory / name for name in _OVERRIDES)]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not force:
        raise GatewayError(
            f"init: {existing[0]} exists ({len(existing)} files would be overwritten): "
            "use --force to replace them"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        text = (SHIPPED_RULES_DIR / EXAMPLE).read_text()
        text = re.sub(r'^dir = "[^"]*"', f'dir = "{INSTALLED_STORAGE}"', text, count=1, flags=re.M)
        text = text.replace(
            "# Example configuration: what `make run` uses.",
            "# Written by `gateway init`.",
            1,
        )
        (directory / CONFIG_NAME).write_text(text)
        for name, overrides in _OVERRIDES.items():
            (directory / name).write_text(overrides)
    except OSError as exc:
        raise GatewayError(f"init: cannot write to {directory}: {exc.strerror or exc}") from None
    config = directory / CONFIG_NAME
    where = "" if config.resolve() == INSTALLED_CONFIG else f" --config {config}"
    return "\n".join(
        [
            f"wrote {config}, and scores.toml and actions.toml for your overrides, to {directory}",
            f"(the other rule files are read from {SHIPPED_RULES_DIR} until you copy one there)",
            "next:",
            f"  1. edit {config}: [smtp] listen and hostname, [relay] host and domains,",
            '     [process] user (e.g. "mailgate"), [metrics] listen, tls_cert/tls_key',
            f"  2. gateway check-config{where}",
            f"  3. gateway serve{where}   (or: systemctl enable --now mailgate)",
            "  docs/deploy.md walks through DNS, firewall, clamd and checking with swaks",
        ]
    )


def deployment_problems(config: Config) -> tuple[list[str], list[str]]:
    """(problems, warnings) about running this config here: user, storage, certificate."""
    problems: list[str] = []
    warnings: list[str] = []
    identity: Identity | None = None
    try:
        identity = target_identity(config.process)
    except GatewayError as exc:
        if config.process.user:
            problems.append(str(exc))
        else:  # the config may be fine for an unprivileged run: serve as root would refuse
            warnings.append(f"serve as root would refuse: {exc}")
    storage = config.storage_dir
    uid = identity.uid if identity else os.geteuid()
    try:
        info = storage.stat()
    except FileNotFoundError:
        warnings.append(f"[storage] dir {storage} does not exist yet: serve will create it")
    except OSError as exc:
        problems.append(f"[storage] dir {storage}: {exc.strerror or exc}")
    else:
        if problem := storage_problem(info, uid):
            problems.append(f"[storage] dir {storage}: {problem}")
    if config.smtp.tls_cert and config.smtp.tls_key:
        problem, warning = certificate_problem(config.smtp.tls_cert, config.smtp.tls_key)
        problems.extend([problem] if problem else [])
        warnings.extend([warning] if warning else [])
    return problems, warnings


def certificate_problem(cert: str, key: str) -> tuple[str | None, str | None]:
    """(problem, warning): a pair that cannot be loaded together, or one expiring soon."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except OSError as exc:  # unreadable, missing
        return f"[smtp] tls_cert/tls_key: {exc.strerror or exc}", None
    except ssl.SSLError as exc:  # not PEM, or a key that is not the certificate's
        return f"[smtp] tls_cert {cert} and tls_key {key}: {exc.reason or exc}", None
    try:
        # The stdlib's own PEM decoder (used by its test suite); no dependency for one date.
        decoded = ssl._ssl._test_decode_cert(cert)  # type: ignore[attr-defined]
        expires = ssl.cert_time_to_seconds(decoded["notAfter"])
    except (ValueError, KeyError, ssl.SSLError, AttributeError):
        return None, None
    left_days = (expires - time.time()) / 86400
    if left_days < 0:
        return f"[smtp] tls_cert {cert}: expired {-left_days:.0f} days ago", None
    if left_days < CERT_WARN_DAYS:
        return None, f"[smtp] tls_cert {cert}: expires in {left_days:.1f} days"
    return None, None
