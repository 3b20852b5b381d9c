"""The real SMTP front end on 127.0.0.1, port 0, for plain synchronous tests (smtplib, sockets).

The front end runs with a real Pipeline (build_checks + the shipped rules), a real Spool and a
real QuarantineStore under tmp_path, on its own event loop in a background thread. Delivery is
not started: a recorder collects the ids the front end hands to it (pass `delivery=` to plug a
real DeliveryService in).

    def test_x(gateway: RunningGateway) -> None:
        with gateway.client() as smtp:
            smtp.sendmail("a@sender.test", ["bob@example.test"], message)
        assert gateway.spool.ids() == gateway.delivery.notified

    def test_y(gateway_factory: GatewayFactory) -> None:
        gw = gateway_factory({"smtp": {"max_recipients": 2}})
"""

from __future__ import annotations

import asyncio
import dataclasses
import smtplib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.checks.greylist import build_greylist
from gateway.config import SHIPPED_RULES_DIR, ChecksConfig, Config, config_from_dict
from gateway.pipeline.engine import Pipeline
from gateway.pipeline.registry import Services, build_checks
from gateway.pipeline.scoring import load_policy
from gateway.quarantine.store import QuarantineStore
from gateway.queue.spool import Spool
from gateway.smtp.handler import DeliveryNotifier
from gateway.smtp.server import SmtpFrontEnd
from gateway.state.keys import Clock

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 15.0
DOMAIN = "example.test"


class RecordingDelivery:
    """Stands in for DeliveryService: remembers which messages it was told about."""

    def __init__(self) -> None:
        self.notified: list[str] = []

    def notify(self, msg_id: str, data: bytes | None = None) -> None:
        self.notified.append(msg_id)


def only_checks(*names: str) -> dict[str, Any]:
    """A `checks` table enabling just `names`: tests of the front end need no DNS or clamd."""
    return {f.name: {"enabled": f.name in names} for f in dataclasses.fields(ChecksConfig)}


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def scan_config(storage_dir: Path, nameserver: str) -> Config:
    """Every default check but the antivirus, as `gateway scan` runs them, with DNS asked of
    a loopback test server."""
    return config_from_dict(
        {
            "storage": {"dir": str(storage_dir)},
            "dns": {"nameservers": [nameserver], "timeout_s": 0.5, "lifetime_s": 1.0},
            "checks": {"antivirus": {"enabled": False}},
        }
    )


def gateway_config(storage_dir: Path, overrides: dict[str, Any] | None = None) -> Config:
    base: dict[str, Any] = {
        "smtp": {"listen": "127.0.0.1:0", "hostname": "mx.gateway.test"},
        "relay": {"domains": [DOMAIN]},
        "storage": {"dir": str(storage_dir)},
        "checks": only_checks("headers", "gtube"),
    }
    return config_from_dict(merge(base, overrides or {}))


class RunningGateway:
    def __init__(
        self,
        config: Config,
        delivery: DeliveryNotifier | None = None,
        services: Services | None = None,
        sock: socket.socket | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.clock = clock  # the greylist's clock, when a test moves time itself
        self.sock = sock  # an already bound listening socket (SO_REUSEPORT tests), or None
        self.spool = Spool(config.queue_dir, config.queue.min_free_bytes)
        self.quarantine = QuarantineStore(config.quarantine_dir)
        self.recorder = RecordingDelivery()
        self.delivery: DeliveryNotifier = delivery or self.recorder
        self.services = services or Services()
        self.host = ""
        self.port = 0
        self.front_end: SmtpFrontEnd | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="gateway-under-test", daemon=True)

    def start(self) -> RunningGateway:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise TimeoutError("gateway did not start")
        if self._error is not None:
            raise RuntimeError("gateway failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STOP_TIMEOUT_S)
        self.quarantine.close()
        if self._thread.is_alive():
            raise RuntimeError("gateway thread did not stop")

    def client(self, timeout_s: float = 10.0) -> smtplib.SMTP:
        return smtplib.SMTP(self.host, self.port, local_hostname="client.test", timeout=timeout_s)

    def call(self, coro_factory: Callable[[], Any], timeout_s: float = 10.0) -> Any:
        """Run a coroutine on the gateway's loop (e.g. `lambda: gw.front_end.stop()`)."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coro_factory(), self._loop)
        return future.result(timeout_s)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        checks = build_checks(self.config, self.services)
        pipeline = Pipeline(
            checks,
            load_policy(self.config.rules_dir, SHIPPED_RULES_DIR),
            self.config.pipeline.deadline_s,
        )
        greylist = build_greylist(self.config, self.clock)
        self.front_end = SmtpFrontEnd(
            self.config, pipeline, self.spool, self.delivery, self.quarantine, greylist=greylist
        )
        self.host, self.port = await self.front_end.start(self.sock)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.front_end.stop(drain_timeout_s=5.0)
            await pipeline.close()
            if greylist is not None:
                greylist.close()


GatewayFactory = Callable[..., RunningGateway]


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start front ends with config overrides (a dict merged into the test defaults)."""
    started: list[RunningGateway] = []

    def start(
        overrides: dict[str, Any] | None = None,
        delivery: DeliveryNotifier | None = None,
        services: Services | None = None,
        sock: socket.socket | None = None,
        clock: Clock | None = None,
    ) -> RunningGateway:
        storage = tmp_path / f"var{len(started)}"
        config = gateway_config(storage, overrides)
        gateway = RunningGateway(config, delivery, services, sock, clock)
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(gateway_factory: GatewayFactory) -> RunningGateway:
    """The front end with the test defaults: relay domain example.test, headers + GTUBE checks."""
    return gateway_factory()
