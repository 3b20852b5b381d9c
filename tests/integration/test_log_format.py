"""One log format per stream ([log] format, issue 32): a served gateway's stderr is all JSON
(log shippers), or all readable text."""

from __future__ import annotations

import json
import logging
import smtplib

import pytest

from gateway.observe.log import TransactionRecord, log_transaction
from gateway.observe.setup import configure_logging
from tests.support.downstream import Downstream
from tests.support.gateway_process import GatewayProcessFactory, wait_until

MESSAGE = b"From: <a@sender.test>\r\nSubject: hi\r\n\r\nHello.\r\n"


def send(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
        client.sendmail("a@sender.test", ["bob@example.test"], MESSAGE)


@pytest.mark.timeout(60)
def test_served_gateway_logs_only_json_lines_when_not_on_a_terminal(
    gateway_process: GatewayProcessFactory, downstream: Downstream
) -> None:
    gw = gateway_process({"relay": {"port": downstream.port}})
    send(gw.port)
    assert wait_until(lambda: '"outcome":"accept"' in gw.log_path.read_text(), 10)
    lines = gw.log_path.read_text().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line, not only transactions
    assert any(p.get("outcome") == "accept" for p in parsed)
    others = [p for p in parsed if "outcome" not in p]
    assert others and all({"ts", "level", "logger", "pid", "msg"} <= set(p) for p in others)
    assert any("antivirus is disabled" in p["msg"] for p in others)


@pytest.mark.timeout(60)
def test_text_format_is_readable_lines(
    gateway_process: GatewayProcessFactory, downstream: Downstream
) -> None:
    gw = gateway_process({"relay": {"port": downstream.port}, "log": {"format": "text"}})
    send(gw.port)
    assert wait_until(lambda: " accept score=" in gw.log_path.read_text(), 10)
    lines = gw.log_path.read_text().splitlines()
    assert not [line for line in lines if line.startswith("{")]
    [tx] = [line for line in lines if " accept score=" in line]
    assert "gateway.transaction[" in tx and "from=<a@sender.test> to=bob@example.test" in tx


def test_json_lines_carry_tracebacks(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("info", "json")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("gateway.test").exception("it failed")
        record = TransactionRecord("T1", "192.0.2.1", 25, "h", False, "", ["b@x.test"], [],
                                   "accept", "250 ok", 0.0, "", [], 10, {}, 0.1)  # fmt: skip
        log_transaction(record)
    finally:  # the process's logging as it was, for the tests that follow
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["msg"] == "it failed" and "ValueError: boom" in lines[0]["exc"]
    assert lines[1]["id"] == "T1" and lines[1]["outcome"] == "accept"
