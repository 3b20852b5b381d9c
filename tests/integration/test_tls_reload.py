"""SIGHUP re-reads [smtp] tls_cert and tls_key: sessions opened after it get the new
certificate, a session already open keeps its own and can still send; a pair that does not load
keeps the previous one. check-config warns about a certificate that expires within 14 days."""

from __future__ import annotations

import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
from pathlib import Path

import tomli_w

from gateway.config import SHIPPED_RULES_DIR
from tests.support.downstream import Downstream, make_self_signed_cert
from tests.support.gateway_process import (
    STAY_AS_WE_ARE,
    GatewayProcess,
    GatewayProcessFactory,
    wait_until,
)

MESSAGE = "From: a@sender.test\r\nTo: b@example.test\r\nSubject: {}\r\n\r\nhello\r\n"


def certificate(directory: Path, name: str) -> tuple[Path, Path, bytes]:
    directory.mkdir()
    cert, key = make_self_signed_cert(directory, name)
    return cert, key, ssl.PEM_cert_to_DER_cert(cert.read_text())


def starttls(gw: GatewayProcess) -> smtplib.SMTP:
    client = smtplib.SMTP(gw.host, gw.port, timeout=10)
    client.starttls(context=ssl._create_unverified_context())  # self-signed test certificates
    return client


def served_certificate(client: smtplib.SMTP) -> bytes:
    der = client.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    assert der is not None
    return der


def test_sighup_serves_the_renewed_certificate_to_new_sessions_only(
    gateway_process: GatewayProcessFactory, downstream: Downstream, tmp_path: Path
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    old_cert, old_key, old_der = certificate(tmp_path / "old", "old.gateway.test")
    new_cert, new_key, new_der = certificate(tmp_path / "new", "new.gateway.test")
    shutil.copy(old_cert, live / "cert.pem")
    shutil.copy(old_key, live / "key.pem")
    gw = gateway_process(
        {
            "relay": {"port": downstream.port},
            "smtp": {"tls_cert": str(live / "cert.pem"), "tls_key": str(live / "key.pem")},
        }
    )
    before = starttls(gw)
    assert served_certificate(before) == old_der

    # Renewal as certbot does it: new files in place, then a reload.
    shutil.copy(new_cert, live / "cert.pem")
    shutil.copy(new_key, live / "key.pem")
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: "TLS certificate reloaded" in gw.log_tail(), 10.0), gw.log_tail()
    with starttls(gw) as after:
        assert served_certificate(after) == new_der
        after.sendmail("a@sender.test", ["b@example.test"], MESSAGE.format("after"))
    # The session opened before the reload was not dropped: it sends on its old certificate.
    before.sendmail("a@sender.test", ["b@example.test"], MESSAGE.format("before"))
    assert served_certificate(before) == old_der
    before.quit()
    downstream.wait_for(2)

    # A broken pair (key of another certificate) is refused; the renewed one stays.
    shutil.copy(old_key, live / "key.pem")
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: "TLS certificate reload failed" in gw.log_tail(), 10.0)
    with starttls(gw) as still:
        assert served_certificate(still) == new_der


def test_check_config_warns_of_a_certificate_expiring_within_14_days(tmp_path: Path) -> None:
    cert, key, _ = certificate(tmp_path / "soon", "mx.gateway.test")  # valid for one day
    config = tmp_path / "gateway.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "smtp": {"tls_cert": str(cert), "tls_key": str(key)},
                "relay": {"domains": ["example.test"]},
                "storage": {"dir": str(tmp_path / "var")},
                "pipeline": {"rules_dir": str(SHIPPED_RULES_DIR)},
                **STAY_AS_WE_ARE,
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"tls_cert {cert}: expires in 0." in result.stderr or "expires in 1.0" in result.stderr
