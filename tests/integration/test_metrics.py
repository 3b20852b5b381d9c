"""[metrics] listen: the real `gateway serve` scraped over HTTP, parsed with prometheus_client's
own parser; counters move after mail goes through SMTP; /healthz and /readyz answer."""

from __future__ import annotations

import json
import smtplib
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.clamd_fixture import free_port
from tests.support.downstream import Downstream
from tests.support.gateway_process import GatewayProcess, GatewayProcessFactory, wait_until

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
HTTP_TIMEOUT_S = 10.0


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(f"{base}/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def send(gw: GatewayProcess, subject: str, body: str = "hello") -> None:
    message = f"From: a@sender.test\r\nTo: b@example.test\r\nSubject: {subject}\r\n\r\n{body}\r\n"
    with smtplib.SMTP(gw.host, gw.port, timeout=10) as client:
        client.sendmail("a@sender.test", ["b@example.test"], message)


@pytest.mark.parametrize("workers", [1, 2])
def test_counters_move_after_mail_and_one_scrape_covers_all_workers(
    gateway_process: GatewayProcessFactory, downstream: Downstream, workers: int
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    gw = gateway_process(
        {
            "relay": {"port": downstream.port},
            "smtp": {"workers": workers},
            "metrics": {"listen": listen},
        }
    )
    base = f"http://{listen}"
    before = scrape(base)
    assert value(before, "mailgate_transactions_total", action="accept") == 0
    assert before[("mailgate_build_info", (("model", "off"), ("version", "0.1.0")))] == 1

    sent = 6
    for i in range(sent):
        send(gw, f"m{i}")
    with pytest.raises(smtplib.SMTPDataError):
        send(gw, "gtube", GTUBE)  # the GTUBE string is rejected
    downstream.wait_for(sent)

    def delivered() -> bool:
        return value(scrape(base), "mailgate_deliveries_total", outcome="delivered") == sent

    assert wait_until(delivered, 10.0), scrape(base)
    after = scrape(base)
    assert value(after, "mailgate_transactions_total", action="accept") == sent
    assert value(after, "mailgate_transactions_total", action="reject") == 1
    assert value(after, "mailgate_symbols_total", symbol="GTUBE_REJECT") == 1
    assert value(after, "mailgate_smtp_replies_total", code="220") == sent + 1
    assert value(after, "mailgate_smtp_replies_total", code="554") >= 1
    assert value(after, "mailgate_check_seconds_count", check="gtube") == sent + 1
    assert value(after, "mailgate_session_seconds_count") == sent + 1
    assert value(after, "mailgate_queue_messages") == 0
    assert value(after, "mailgate_quarantine_held_messages") == 0


def test_health_and_readiness(
    gateway_process: GatewayProcessFactory, downstream: Downstream
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    dead_port = free_port()  # nothing listens there: the internal server is "down"
    gw = gateway_process({"relay": {"port": downstream.port}, "metrics": {"listen": listen}})
    status, body = get(f"http://{listen}/healthz")
    assert status == 200 and json.loads(body)["status"] == "alive"
    status, body = get(f"http://{listen}/readyz")
    assert (status, json.loads(body)["reasons"]) == (200, [])
    gw.stop()

    listen = f"127.0.0.1:{free_port()}"
    gateway_process(
        {
            "relay": {"port": dead_port},
            "metrics": {"listen": listen},
            "checks": {"antivirus": {"enabled": True, "address": f"tcp://127.0.0.1:{dead_port}"}},
        },
        name="down",
    )
    status, body = get(f"http://{listen}/readyz")
    reasons = json.loads(body)["reasons"]
    assert status == 503
    assert any(r.startswith(f"internal server 127.0.0.1:{dead_port}") for r in reasons), reasons
    assert any(r.startswith(f"clamd tcp://127.0.0.1:{dead_port}") for r in reasons), reasons
    assert json.loads(body)["took_s"] < 5
    assert get(f"http://{listen}/healthz")[0] == 200
