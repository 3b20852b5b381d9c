"""A damaged spool must not stop the queue: each test failed before its fix."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.errors import SpoolError
from gateway.queue.delivery import DeliveryService
from gateway.queue.dsn import SpoolBouncer
from gateway.queue.spool import Spool
from tests.integration.test_delivery_relay import FAST_QUEUE, message, relay_to, run, until
from tests.support.downstream import Downstream

# Well-formed JSON, wrong types: "received_at" is a string, so `now - received_at` raised a
# TypeError in the queue scanner, which killed it: no retry ever again.
BAD_TYPES = {
    "id": "bad1",
    "mail_from": "",
    "recipients": [{"address": "b@example.test"}],
    "received_at": "yesterday",
    "next_attempt_at": 0,
}


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "queue", min_free_bytes=0)


GOOD_HEADER = {**BAD_TYPES, "received_at": 0}


def plant(spool: Spool, name: str, state: object) -> None:
    """A message file with a sound envelope line, and a state file `state` over it."""
    header = json.dumps({**GOOD_HEADER, "id": name}).encode()
    spool.data_path(name).write_bytes(header + b"\nSubject: x\r\n\r\nx\r\n")
    spool.state_path(name).write_text(json.dumps(state))


@pytest.mark.parametrize(
    "content",
    [b"", b"Subject: x\r\n\r\nx\r\n", b"[1, 2]\nSubject: x\r\n", b'{"id": "bad1"', b"\xff\n"],
)
def test_a_message_file_without_a_sound_envelope_line_is_corrupt(
    spool: Spool, content: bytes
) -> None:
    spool.data_path("bad1").write_bytes(content)
    with pytest.raises(SpoolError, match="corrupt"):
        spool.load("bad1")
    with pytest.raises(SpoolError, match="corrupt"):
        spool.read_data("bad1")
    assert list(spool.entries()) == []
    assert spool.try_claim("bad1") is None


@pytest.mark.parametrize(
    "state",
    [
        BAD_TYPES,
        {**BAD_TYPES, "received_at": 0, "attempts": "3"},
        {**BAD_TYPES, "received_at": 0, "recipients": [{"address": 5}]},
        {**BAD_TYPES, "received_at": 0, "recipients": [{"address": "b@x", "status": "?"}]},
        {**BAD_TYPES, "received_at": 0, "recipients": "b@example.test"},
        # Names another message: a state update would be written to ../../elsewhere.json.
        {**BAD_TYPES, "received_at": 0, "id": "../../elsewhere"},
        {**BAD_TYPES, "received_at": 0, "id": "other"},
    ],
)
def test_a_state_file_with_wrong_types_or_id_is_corrupt(spool: Spool, state: object) -> None:
    plant(spool, "bad1", state)
    with pytest.raises(SpoolError, match="corrupt state file"):
        spool.load("bad1")
    assert list(spool.entries()) == []
    assert spool.try_claim("bad1") is None


def test_queue_keeps_retrying_beside_a_corrupt_entry(spool: Spool, downstream: Downstream) -> None:
    plant(spool, "bad1", BAD_TYPES)
    downstream.stop()
    spool.enqueue("m1", "a@example.org", ["b@example.test"], message(1))

    async def scenario() -> None:
        service = DeliveryService(spool, relay_to(downstream), FAST_QUEUE, "mx.gateway.test")
        await service.start()
        await until(lambda: any(e.attempts for e in spool.entries()))
        await asyncio.sleep(0.2)  # several scans meet the corrupt entry
        downstream.start()  # only the scanner can retry m1 now
        await downstream.wait_for_async(1)
        await until(lambda: spool.ids() == ["bad1"])
        await service.stop()

    run(scenario())


def test_queue_commands_take_config_after_the_action() -> None:
    # As README shows for `quarantine list --config F`; `queue list --config F` was a usage error.
    parser = build_parser()
    args = parser.parse_args(["queue", "--config", "x.toml", "list"])
    assert args.config == "x.toml"
    args = parser.parse_args(["queue", "list", "--config", "x.toml", "--json"])
    assert args.config == "x.toml"
    args = parser.parse_args(["queue", "delete", "--config", "x.toml", "id1"])
    assert (args.config, args.ids) == ("x.toml", ["id1"])


def test_a_corrupt_entry_is_logged_once_not_at_every_scan(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    plant(spool, "bad1", BAD_TYPES)
    for _ in range(3):
        assert list(spool.entries()) == []
    warnings = [r for r in caplog.records if "unreadable entry" in r.getMessage()]
    assert len(warnings) == 1


def test_a_bounce_that_cannot_be_built_does_not_loop_forever(
    spool: Spool, downstream: Downstream
) -> None:
    # A CR LF in ENVID (from "+0D+0A" xtext) cannot go into the DSN's header: the notice
    # failed at every scan and the message never left active/.
    downstream.fail_data("554 5.6.0 Content refused")
    spool.enqueue("m1", "a@example.org", ["b@example.test"], message(), dsn_envid="a\r\nBcc: x")
    bouncer = SpoolBouncer(spool, "mx.gateway.test", downstream.host)

    async def scenario() -> None:
        service = DeliveryService(
            spool, relay_to(downstream), FAST_QUEUE, "mx.gateway.test", bouncer
        )
        await service.start()
        await until(lambda: spool.ids(failed=True) == ["m1"])
        await service.stop()

    run(scenario())
    assert spool.ids() == []
