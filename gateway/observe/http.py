"""The [metrics] listener: /metrics (Prometheus text), /healthz (alive) and /readyz (able to
take mail: 200, or 503 with the reasons as JSON), for monitoring and load balancers.

A thread of the serving process, on a socket bound before privileges were dropped. The probes
are blocking and bounded (PROBE_TIMEOUT_S each), so a stuck clamd or internal server makes
/readyz say so within seconds instead of hanging the scraper.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from gateway.config import Config, parse_hostport
from gateway.observe import metrics

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 1.0
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class Probes:
    """What /readyz asks, and the state /metrics reports beside the counts."""

    def __init__(
        self,
        config: Config,
        model_loaded: Callable[[], bool],
        state: Callable[[], metrics.State],
    ) -> None:
        self.config = config
        self.model_loaded = model_loaded
        self.state = state

    def not_ready(self) -> list[str]:
        problems = []
        if why := _not_writable(self.config.queue_dir):
            problems.append(f"spool not writable: {why}")
        if not self.model_loaded():
            problems.append("classifier model not loaded")
        relay = self.config.relay
        if why := _smtp_greets(relay.host, relay.port):
            problems.append(f"internal server {relay.host}:{relay.port}: {why}")
        antivirus = self.config.checks.antivirus
        if antivirus.enabled and (why := _clamd_pongs(antivirus.address)):
            problems.append(f"clamd {antivirus.address}: {why}")
        return problems


def _not_writable(directory: Path) -> str | None:
    try:
        fd, name = tempfile.mkstemp(prefix=".readyz-", dir=directory)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _smtp_greets(host: str, port: int) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as conn:
            conn.settimeout(PROBE_TIMEOUT_S)
            greeting = conn.recv(512)
            conn.sendall(b"QUIT\r\n")
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    if not greeting.startswith(b"220"):
        return f"greeted with {greeting[:40]!r}"
    return None


def _clamd_pongs(address: str) -> str | None:
    try:
        if address.startswith("tcp://"):
            host, port = parse_hostport(address.removeprefix("tcp://"), 3310)
            conn = socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S)
        else:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.settimeout(PROBE_TIMEOUT_S)
            conn.connect(address)
        with conn:
            conn.settimeout(PROBE_TIMEOUT_S)
            conn.sendall(b"zPING\0")
            answer = conn.recv(64)
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    if not answer.startswith(b"PONG"):
        return f"answered {answer[:40]!r}"
    return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        probes = self.server.probes
        if path == "/metrics":
            self._send(200, PROMETHEUS_TEXT, metrics.render(probes.state, self.server.model))
        elif path == "/healthz":
            self._json(200, {"status": "alive", "pid": os.getpid()})
        elif path == "/readyz":
            started = time.monotonic()
            problems = probes.not_ready()
            took_s = round(time.monotonic() - started, 3)
            status = 503 if problems else 200
            body = {"ready": not problems, "reasons": problems, "took_s": took_s}
            self._json(status, body)
        else:
            self._json(404, {"error": "not found", "paths": ["/metrics", "/healthz", "/readyz"]})

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, "application/json", json.dumps(body).encode() + b"\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics: %s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sock: socket.socket, probes: Probes, model: str) -> None:
        # The socket was bound before privileges were dropped: adopt it instead of binding.
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.address_family = sock.family
        self.probes = probes
        self.model = model
        self.server_activate()


class MetricsServer:
    def __init__(self, sock: socket.socket, probes: Probes, model: str) -> None:
        self._server = _Server(sock, probes, model)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
