"""Composition of one running gateway: builds the real clients and wires them together.

`gateway serve` (cli.py) runs one `Runtime` per worker process. With `[smtp] workers = N > 1`
a supervisor process reserves the port and starts N workers that each listen on it with
SO_REUSEPORT (the kernel spreads connections); every worker delivers from the shared spool,
whose per-message locks keep two workers from relaying the same message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import hashlib
import logging
import multiprocessing
import multiprocessing.queues
import os
import queue
import signal
import socket
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway import heap
from gateway.checks.greylist import build_greylist
from gateway.config import SHIPPED_RULES_DIR, Config, parse_hostport
from gateway.errors import GatewayError
from gateway.files import private_dir
from gateway.net.dns import Resolver
from gateway.observe import metrics
from gateway.observe.http import MetricsServer, Probes
from gateway.observe.setup import configure_logging, reopen_log_files
from gateway.pipeline.engine import Pipeline
from gateway.pipeline.registry import Services, build_checks, declared_symbols
from gateway.pipeline.runner import PhaseRunner
from gateway.pipeline.scoring import load_policy
from gateway.privileges import (
    Identity,
    drop_to,
    prepare_storage,
    target_identity,
    unreadable_for,
)
from gateway.quarantine.store import QuarantineStore
from gateway.queue.admin import stats as queue_stats
from gateway.queue.delivery import DeliveryService
from gateway.queue.dsn import SpoolBouncer
from gateway.queue.known_recipients import KNOWN_RECIPIENTS_FILE, KnownRecipients
from gateway.queue.spool import Spool
from gateway.queue.verify import RecipientVerifier
from gateway.setup import certificate_problem
from gateway.smtp.server import SmtpFrontEnd, bind_listener

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 30.0
# Workers are restarted when they die, unless they crash this often in this window.
MAX_CRASHES = 5
CRASH_WINDOW_S = 60.0
WORKER_START_TIMEOUT_S = 60.0
BLOCKING_THREADS = 32
HEAP_TRIM_INTERVAL_S = 5.0
HEAP_TRIM_AFTER_BYTES = 32 << 20
SERVE_LOCK_FILE = "serve.lock"
METRICS_DIR = "metrics"  # per-process counts of prometheus_client's multiprocess mode


def build_pipeline(config: Config, services: Services | None = None) -> Pipeline:
    """Checks + policy as configured; raises ConfigError / ModelError with clear messages."""
    if services is None:
        services = Services(resolver=Resolver.from_config(config.dns))
    checks = build_checks(config, services)
    policy = load_policy(config.rules_dir, SHIPPED_RULES_DIR)
    return Pipeline(checks, policy, config.pipeline.deadline_s, declared=declared_symbols(config))


def known_recipients(config: Config) -> KnownRecipients | None:
    """The on-disk recipients the internal server confirmed ([verify] known_ttl_s)."""
    if config.verify.known_ttl_s <= 0:
        return None
    try:
        return KnownRecipients(config.storage_dir / KNOWN_RECIPIENTS_FILE)
    except (OSError, sqlite3.Error) as exc:  # RCPT still works, as before, without it
        log.warning("verify: known recipients unavailable: %s", exc)
        return None


class Runtime:
    """Everything one worker process runs: SMTP front end, delivery, periodic housekeeping."""

    def __init__(self, config: Config, metrics_sock: socket.socket | None = None) -> None:
        self.config = config
        self._metrics_sock = metrics_sock
        self._metrics_server: MetricsServer | None = None
        storage = config.storage_dir
        try:
            private_dir(storage)
        except OSError as exc:
            raise GatewayError(
                f"cannot use [storage] dir {storage}: {exc.strerror or exc}"
            ) from None
        self.services = Services(resolver=Resolver.from_config(config.dns))
        self.pipeline = build_pipeline(config, self.services)
        self._retired: set[asyncio.Task[None]] = set()
        self.spool = Spool(config.queue_dir, config.queue.min_free_bytes)
        self.quarantine = QuarantineStore(
            config.quarantine_dir,
            max_bytes=config.quarantine.max_bytes,
            max_messages=config.quarantine.max_messages,
        )
        # Bounces go back through the internal server, which is the one that sends mail out.
        bouncer = SpoolBouncer(self.spool, config.smtp.hostname, config.relay.host)
        self.delivery = DeliveryService(
            self.spool, config.relay, config.queue, config.smtp.hostname, bouncer
        )
        self.verifier = (
            RecipientVerifier(
                config.relay, config.verify, config.smtp.hostname, known=known_recipients(config)
            )
            if config.verify.enabled
            else None
        )
        self.greylist = build_greylist(config)
        self.front_end = SmtpFrontEnd(
            config,
            self.pipeline,
            self.spool,
            self.delivery,
            self.quarantine,
            self.verifier,
            self.greylist,
        )
        self._housekeeping: asyncio.Task[None] | None = None
        self._heap_return: asyncio.Task[None] | None = None
        if not config.checks.antivirus.enabled:
            log.warning(
                "antivirus is disabled ([checks.antivirus] enabled = false): "
                "messages are relayed without a virus scan"
            )

    async def start(self, sock: socket.socket | None = None) -> tuple[str, int]:
        if sock is None:
            # Before anything else starts: a port in use is one clear line, not a traceback
            # from a half-started gateway whose delivery workers already run.
            listen = self.config.smtp.listen
            sock = listening(listen, lambda: bind_listener(listen, reuse_port=False))
        await self.delivery.start()
        address = await self.front_end.start(sock)
        if self._metrics_sock is not None:
            probes = Probes(self.config, self._model_loaded, self._state)
            self._metrics_server = MetricsServer(self._metrics_sock, probes, self._model_version())
            self._metrics_server.start()
        self._housekeeping = asyncio.create_task(self._expire_quarantine())
        self._heap_return = asyncio.create_task(self._return_heap_after_bursts())
        return address

    async def stop(self) -> None:
        """Stop accepting, let sessions in DATA finish (bounded), finish in-flight deliveries."""
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.stop)
        for task in (self._housekeeping, self._heap_return):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.front_end.stop(DRAIN_TIMEOUT_S)
        for task in list(self._retired):
            task.cancel()
        if self.verifier is not None:
            await self.verifier.close()
        await self.delivery.stop()
        await self.pipeline.close()
        if self.greylist is not None:
            self.greylist.close()
        # After delivery: no delivered message's bytes stay behind in recycled/.
        await asyncio.to_thread(self.spool.close)

    def _model_loaded(self) -> bool:
        if not self.config.checks.classifier.enabled:
            return True
        return any(check.name == "classifier" for check in self.pipeline.checks)

    def _model_version(self) -> str:
        """The model file's name and the start of its SHA-256: which artefact is serving."""
        classifier = self.config.checks.classifier
        if not classifier.enabled:
            return "off"
        try:
            digest = hashlib.sha256(Path(classifier.model).read_bytes()).hexdigest()
        except OSError:
            return "unreadable"
        return f"{Path(classifier.model).name}@{digest[:12]}"

    def _state(self) -> metrics.State:
        """For a scrape, from the metrics thread: the queue files and the quarantine index."""
        queue = queue_stats(self.spool, time.time())
        return metrics.State(queue.size, queue.oldest_age_s, self.quarantine.held_count())

    def reload(self) -> None:
        """SIGHUP (systemctl reload): the rules, and the TLS certificate and key."""
        self.front_end.reload_tls()
        self.reload_rules()

    def reload_rules(self) -> None:
        """SIGHUP: rebuild every check and the policy from the rule files, then swap them in
        at once. Any problem keeps all of the previous rules (nothing half-reloaded)."""
        try:
            fresh = build_pipeline(self.config, self.services)
        except Exception as exc:  # keep serving with the previous rules
            log.error("rules reload failed, keeping the previous rules: %s", exc)
            return
        retired = self.pipeline.adopt(fresh)
        # Transactions in flight may still be inside a retired check: close it later.
        task = asyncio.get_running_loop().create_task(self._close_later(retired))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)
        log.info("rules reloaded from %s", self.config.rules_dir)

    async def _close_later(self, retired: PhaseRunner) -> None:
        await asyncio.sleep(self.config.pipeline.deadline_s)
        await retired.close()

    async def _expire_quarantine(self) -> None:
        days = self.config.quarantine.retention_days
        while True:
            try:
                result = await asyncio.to_thread(self.quarantine.expire, days)
                if result.entries or result.orphan_files:
                    log.info(
                        "quarantine expiry removed %d entries and %d orphan files",
                        result.entries,
                        result.orphan_files,
                    )
            except Exception:
                log.exception("quarantine expiry failed")
            await asyncio.sleep(self.config.quarantine.expire_interval_s)

    async def _return_heap_after_bursts(self) -> None:
        """When memory the worker freed but kept has grown by HEAP_TRIM_AFTER_BYTES and no
        message is being received or checked, give it back to the OS (gateway/heap.py): after
        a burst of large messages the RSS drops back instead of staying at its peak."""
        memory = self.front_end.message_memory
        baseline = heap.slack_bytes()
        while baseline is not None:
            await asyncio.sleep(HEAP_TRIM_INTERVAL_S)
            slack = heap.slack_bytes()
            if memory.held_bytes or slack is None or slack < baseline + HEAP_TRIM_AFTER_BYTES:
                continue
            before = heap.resident_bytes() or 0
            await asyncio.to_thread(heap.trim)
            after = heap.resident_bytes() or 0
            baseline = heap.slack_bytes()
            log.info("freed heap returned to the OS: RSS %d -> %d MB", before >> 20, after >> 20)


async def run_worker(
    config: Config,
    sock: socket.socket | None,
    on_ready: Callable[[str, int], None],
    metrics_sock: socket.socket | None = None,
) -> None:
    """Run one Runtime until SIGTERM/SIGINT; SIGHUP reloads rules."""
    # A reload asked for while the rules are first loaded must not kill the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # logrotate's reopen: not a reason to die
    loop = asyncio.get_running_loop()
    # Spool fsyncs, the quarantine and the attachments check run in threads; the default pool
    # (cores + 4) would queue them behind each other under load. SPF, DKIM and ARC, which can
    # wait on DNS for seconds, have the resolver's own threads ([dns] blocking_threads).
    loop.set_default_executor(ThreadPoolExecutor(max_workers=BLOCKING_THREADS))
    runtime = Runtime(config, metrics_sock)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, runtime.reload)
    loop.add_signal_handler(signal.SIGUSR1, reopen_log_files)
    host, port = await runtime.start(sock)
    on_ready(host, port)
    await stop.wait()
    log.info("stopping: draining sessions and deliveries")
    await runtime.stop()


def listening(listen: str, bind: Callable[[], socket.socket]) -> socket.socket:
    """`bind()`, with an OSError (address in use, not ours, no permission) as a GatewayError."""
    try:
        return bind()
    except OSError as exc:
        raise GatewayError(f"cannot listen on {listen}: {exc.strerror or exc}") from None


def lock_storage(storage: Path) -> int:
    """An exclusive lock on the storage dir for as long as `serve` runs (the descriptor): a
    second instance on the same spool and quarantine refuses to start."""
    try:
        private_dir(storage)
        fd = os.open(storage / SERVE_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise GatewayError(f"cannot use [storage] dir {storage}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise GatewayError(
            f"another gateway serve (pid {holder}) is running on [storage] dir {storage}"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def refuse_if_listened_on(listen: str) -> None:
    """GatewayError if some socket already listens on `listen`. The workers bind with
    SO_REUSEPORT, which another process of the same user is let share silently (taking part
    of the traffic into its own spool); a bind without it fails while any socket listens."""
    host, port = parse_hostport(listen, 25)
    if port == 0:
        return  # a port of its own is picked
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    def bind_plain() -> socket.socket:
        probe = socket.socket(family, kind, proto)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
            probe.bind(address)
        except OSError:
            probe.close()
            raise
        return probe

    listening(listen, bind_plain).close()


def reserve_port(listen: str) -> socket.socket:
    """Bind (without listening) with SO_REUSEPORT: holds the port, so port 0 picks one for all
    workers, yet receives no connections itself."""
    host, port = parse_hostport(listen, 25)
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def _worker_main(
    config: Config,
    listen: str,
    ready: multiprocessing.queues.Queue[int],
    identity: Identity | None,
) -> None:
    configure_logging(config.log.level, config.log.format, config.log.syslog, config.log.file)
    sock = bind_listener(listen, reuse_port=True)
    metrics_sock = bind_metrics(config, reuse_port=True)
    become(config, identity)
    on_ready = lambda host, port: ready.put(os.getpid())  # noqa: E731
    asyncio.run(run_worker(config, sock, on_ready, metrics_sock))


def bind_metrics(config: Config, reuse_port: bool) -> socket.socket | None:
    """The [metrics] listener, bound while still root (port 25's peer may be a low port too)."""
    listen = config.metrics.listen
    if not listen:
        return None
    sock = listening(listen, lambda: bind_listener(listen, reuse_port=reuse_port))
    sock.setblocking(True)  # served by a thread, not the event loop
    return sock


def become(config: Config, identity: Identity | None) -> None:
    """After binding, before reading any mail or model: drop root, then start counting."""
    if identity is not None:
        drop_to(identity)
    if config.metrics.listen:
        metrics.setup(config.storage_dir / METRICS_DIR)


def _wait_ready(
    ready: multiprocessing.queues.Queue[int],
    workers: dict[int, multiprocessing.process.BaseProcess],
    count: int,
) -> bool:
    """True once `count` workers listen; False if one dies first or the time runs out."""
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    started = 0
    while started < count and time.monotonic() < deadline:
        try:
            ready.get(timeout=0.5)
            started += 1
        except queue.Empty:
            if any(not p.is_alive() for p in workers.values()):
                return False
    return started == count


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def supervise(config: Config, identity: Identity | None, announce: Callable[[str], None]) -> int:
    """Run `[smtp] workers` worker processes on one port; forward SIGTERM/SIGHUP; restart a
    worker that dies unexpectedly. Returns the exit code. Started as root it stays root (it
    reads no mail: it only starts workers, which bind as root and then drop to `identity`,
    so that a restarted worker can bind port 25 again, as Postfix's master does)."""
    refuse_if_listened_on(config.smtp.listen)
    if config.metrics.listen:
        refuse_if_listened_on(config.metrics.listen)
    holder = listening(config.smtp.listen, lambda: reserve_port(config.smtp.listen))
    host, port = holder.getsockname()[:2]
    listen = format_address(host, port)
    context = multiprocessing.get_context("spawn")
    ready: multiprocessing.queues.Queue[int] = context.Queue()
    workers: dict[int, multiprocessing.process.BaseProcess] = {}

    def start_worker(slot: int) -> None:
        process = context.Process(target=_worker_main, args=(config, listen, ready, identity))
        process.start()
        workers[slot] = process

    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        if signum == signal.SIGUSR1:
            reopen_log_files()
        for process in workers.values():
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM if signum == signal.SIGINT else signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, forward)
    for slot in range(config.smtp.workers):
        start_worker(slot)
    exit_code = 0
    if _wait_ready(ready, workers, config.smtp.workers):
        announce(listen)
    else:
        log.error("workers did not all start within %ss", WORKER_START_TIMEOUT_S)
        stopping, exit_code = True, 1
        forward(signal.SIGTERM, None)
    crashes: collections.deque[float] = collections.deque(maxlen=MAX_CRASHES)
    while not stopping:
        time.sleep(0.5)
        for slot, process in list(workers.items()):
            if process.is_alive() or stopping:
                continue
            log.error("worker %d (pid %s) exited with %s", slot, process.pid, process.exitcode)
            crashes.append(time.monotonic())
            if len(crashes) == MAX_CRASHES and crashes[-1] - crashes[0] < CRASH_WINDOW_S:
                # A worker that keeps dying would only hide the cause: stop and say so.
                log.error("%d worker crashes within %.0fs: giving up", MAX_CRASHES, CRASH_WINDOW_S)
                stopping, exit_code = True, 1
                forward(signal.SIGTERM, None)
                break
            start_worker(slot)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S + 30
    for process in workers.values():
        process.join(timeout=max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
    holder.close()
    return exit_code


def serve(config: Config, announce: Callable[[str], None]) -> int:
    """`gateway serve`: one process, or a supervisor with workers. Blocks until stopped.
    Everything that needs root (checking who to become, the storage directory, the ports) is
    done first; a problem with any is one line and exit 2."""
    identity = target_identity(config.process)
    prepare_storage(config.storage_dir, identity)
    if config.smtp.tls_cert and config.smtp.tls_key:
        problem, warning = certificate_problem(config.smtp.tls_cert, config.smtp.tls_key)
        if problem:
            raise GatewayError(problem)
        if warning:
            log.warning("%s", warning)
    if identity is not None and identity.uid != os.geteuid():
        needed = [config.rules_dir, Path(config.checks.classifier.model)]
        # The certificate and key are read again on SIGHUP, by then as the user.
        needed += [Path(p) for p in (config.smtp.tls_cert, config.smtp.tls_key) if p]
        if problem := unreadable_for(identity, needed):
            raise GatewayError(problem)
    lock = lock_storage(config.storage_dir)
    try:
        if config.metrics.listen:
            metrics_dir = config.storage_dir / METRICS_DIR
            metrics.prepare_dir(metrics_dir)
            if identity is not None and os.geteuid() == 0:
                os.chown(metrics_dir, identity.uid, identity.gid)
        if config.smtp.workers > 1:
            return supervise(config, identity, announce)
        listen = config.smtp.listen
        sock = listening(listen, lambda: bind_listener(listen, reuse_port=False))
        metrics_sock = bind_metrics(config, reuse_port=False)
        become(config, identity)
        on_ready = lambda host, port: announce(format_address(host, port))  # noqa: E731
        asyncio.run(run_worker(config, sock, on_ready, metrics_sock))
        return 0
    finally:
        os.close(lock)
