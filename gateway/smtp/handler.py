"""The thin policy layer between the SMTP protocol and the pipeline: one method per phase.

It owns the relay gate and the recipient limit, runs each phase of the pipeline, turns
verdicts into replies, puts accepted mail in the spool and held mail in the quarantine
(blocking calls in a thread; the reply goes out only after they returned), and logs one line
per transaction. Any exception in a phase becomes `451 4.3.0` with the transaction id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from gateway.authresults import authentication_results_field, sender_authenticated
from gateway.checks.greylist import Greylist
from gateway.config import Config
from gateway.content import first_received_client, received_fields
from gateway.errors import QuarantineFull, SpoolFull
from gateway.model import (
    Action,
    CheckResult,
    Connection,
    Envelope,
    Phase,
    Transaction,
    Verdict,
    new_id,
)
from gateway.observe.log import (
    TransactionRecord,
    check_times,
    connection_fields,
    log_transaction,
    verdict_fields,
)
from gateway.ourfields import remove_our_fields
from gateway.pipeline.engine import Pipeline
from gateway.queue.committer import GroupCommitter
from gateway.queue.dsn import mail_dsn_options, rcpt_dsn_options
from gateway.queue.spool import Prepared, Spool
from gateway.smtp import replies
from gateway.smtp.addresses import RelayDenied, RelayGate
from gateway.smtp.data import DataCollector, DataProblem
from gateway.smtp.limits import MessageMemory
from gateway.smtp.proxy import trusted
from gateway.smtp.stamp import gateway_headers, prefix_subject, stamp
from gateway.threads import shielded

log = logging.getLogger(__name__)

ABANDONED = "abandoned"
MAX_REFUSED_LOGGED = 100


class DeliveryNotifier(Protocol):
    def notify(self, msg_id: str, spooled: Prepared | None = None) -> None: ...


class RecipientChecker(Protocol):
    async def verify(self, rcpt: str) -> Literal["ok", "unknown", "unavailable"]: ...


class QuarantineSink(Protocol):
    def add(self, tx: Transaction, verdict: Verdict, data: bytes) -> str: ...


@dataclass
class OpenTransaction:
    """A transaction between MAIL and its end; `tx` is what the pipeline sees."""

    tx: Transaction
    sender_given: bool = True  # False for a refusal at connect or HELO: no MAIL FROM yet
    started: float = field(default_factory=time.monotonic)
    refused: list[dict[str, str]] = field(default_factory=list)  # the first MAX_REFUSED_LOGGED
    refused_omitted: int = 0
    verdict: Verdict | None = None
    # DSN parameters (RFC 3461): RET and ENVID of MAIL, NOTIFY and ORCPT of each recipient
    # in rcpt_tos order; the spool keeps them for the bounce, if one is ever needed.
    dsn_ret: str = ""
    dsn_envid: str = ""
    rcpt_notify: list[tuple[str, ...]] = field(default_factory=list)
    rcpt_orcpt: list[str] = field(default_factory=list)
    # A trusted relay (backup MX) that handed the message on: the client its Received names
    # was judged, our Received names the relay.
    relayed_by: Connection | None = None


@dataclass
class SessionState:
    """What one SMTP session knows. `results` of CONNECT and HELO carry into each transaction."""

    connection: Connection
    results: dict[str, CheckResult] = field(default_factory=dict)
    next_id: str = field(default_factory=new_id)
    open: OpenTransaction | None = None

    def transaction(self, envelope: Envelope) -> Transaction:
        return Transaction(self.next_id, self.connection, envelope, results=self.results)


class SmtpHandler:
    def __init__(
        self,
        config: Config,
        pipeline: Pipeline,
        spool: Spool,
        delivery: DeliveryNotifier,
        quarantine: QuarantineSink,
        verifier: RecipientChecker | None = None,
        greylist: Greylist | None = None,
    ) -> None:
        self.config = config
        self.greylist = greylist
        self.pipeline = pipeline
        self.spool = spool
        self.committer = GroupCommitter(spool)
        self.delivery = delivery
        self.quarantine = quarantine
        self.verifier = verifier
        self.gate = RelayGate(config.relay.domains)
        self.hostname = config.smtp.hostname
        self.message_memory = MessageMemory(
            config.smtp.max_inflight_bytes,
            config.smtp.max_inflight_bytes_per_ip,
            config.smtp.ipv6_prefix_length,
        )

    # -- session-level phases: a refusal is returned, None means go on ------------------------

    async def connect(self, session: SessionState) -> str | None:
        tx = session.transaction(Envelope("", ()))
        try:
            outcome = await self.pipeline.run_phase(Phase.CONNECT, tx)
        except Exception:
            log.exception("CONNECT phase failed, transaction %s", tx.id)
            reply = replies.internal_error_closing(tx.id)
            self._log_refusal(session, tx, reply, None, sender_given=False)
            return reply
        session.results = dict(outcome.tx.results)
        if not outcome.stop:
            return None
        verdict = outcome.verdict
        if verdict.reply:
            reply = replies.configured(verdict.reply)
        elif verdict.action is Action.REJECT:
            reply = replies.refused_at_connect(tx.id, public_reason(verdict))
        else:
            reply = replies.deferred_at_connect(tx.id, public_reason(verdict))
        if not reply.startswith(("421", "554")):
            # A refused greeting must close the session, which only 421 and 554 say; a
            # configured 5xx stays a refusal (a 421 would make the client retry for ever).
            refuse = verdict.action is Action.REJECT
            at_connect = replies.refused_at_connect if refuse else replies.deferred_at_connect
            reply = at_connect(tx.id, public_reason(verdict))
        self._log_refusal(session, outcome.tx, reply, verdict, sender_given=False)
        return reply

    async def helo(self, session: SessionState, name: str, esmtp: bool) -> str | None:
        self.abandon(session)
        session.connection.helo = name
        session.connection.esmtp = esmtp
        tx = session.transaction(Envelope("", ()))
        try:
            outcome = await self.pipeline.run_phase(Phase.HELO, tx)
        except Exception:
            session.connection.helo = ""
            return self._internal_error(session, tx, Phase.HELO)
        if outcome.stop:
            reply = self._refusal(outcome.verdict, tx.id, during_data=False)
            self._log_refusal(session, outcome.tx, reply, outcome.verdict, sender_given=False)
            session.connection.helo = ""  # a refused greeting is no greeting: MAIL gets 503
            return reply
        session.results = dict(outcome.tx.results)
        return None

    def refused_by_limit(self, session: SessionState, reply: str) -> None:
        """A session turned away by the connection limits is logged like any refusal."""
        tx = session.transaction(Envelope("", ()))
        self._log_refusal(session, tx, reply, None, sender_given=False)

    def reset_after_tls(self, session: SessionState) -> None:
        """RFC 3207 4.2: forget everything learnt before the TLS handshake."""
        self.abandon(session)
        session.connection.helo = ""
        session.connection.esmtp = False
        session.connection.tls = True
        session.results = {}

    # -- transaction phases: the reply is returned -------------------------------------------

    async def mail(
        self,
        session: SessionState,
        sender: str,
        options: tuple[str, ...],
        smtputf8: bool,
        declared_size: int,
        params: Sequence[str] = (),
    ) -> str:
        tx = session.transaction(Envelope(sender, (), options, smtputf8))
        try:
            # statvfs answers from the kernel's cached counters: a thread hop would cost more.
            if not self.spool.has_room(declared_size):
                self._log_refusal(session, tx, replies.NO_STORAGE, None, reason="spool full")
                return replies.NO_STORAGE
            if declared_size > self.message_memory.free_bytes(session.connection.client_ip):
                # RFC 1870 6.1: too big for now, not for good.
                self._warn_no_memory(tx)
                self._log_refusal(
                    session, tx, replies.NO_STORAGE, None, reason=DataProblem.NO_MEMORY.value
                )
                return replies.NO_STORAGE
            outcome = await self.pipeline.run_phase(Phase.MAIL, tx)
        except Exception:
            return self._internal_error(session, tx, Phase.MAIL)
        if outcome.stop:
            reply = self._refusal(outcome.verdict, tx.id, during_data=False)
            self._log_refusal(session, outcome.tx, reply, outcome.verdict)
            return reply
        ret, envid = mail_dsn_options(params)
        session.open = OpenTransaction(
            outcome.tx, verdict=outcome.verdict, dsn_ret=ret, dsn_envid=envid
        )
        return replies.sender_ok()

    async def rcpt(self, session: SessionState, path: str, params: Sequence[str] = ()) -> str:
        current = session.open
        assert current is not None, "the protocol checks MAIL before RCPT"
        envelope = current.tx.envelope
        if len(envelope.rcpt_tos) >= self.config.smtp.max_recipients:
            return self._refuse_rcpt(current, path, replies.TOO_MANY_RECIPIENTS)
        try:
            address = self.gate.accept(path, envelope.smtputf8)
        except RelayDenied as denied:
            return self._refuse_rcpt(current, path, replies.relay_denied(denied.reason))
        if address in envelope.rcpt_tos:
            # The same recipient twice (as given, or after the domain is lower-cased): one
            # copy is relayed, as RFC 5321 3.3 lets a server do.
            return replies.recipient_ok()
        candidate = current.tx.with_envelope(
            Envelope(
                envelope.mail_from,
                (*envelope.rcpt_tos, address),
                envelope.mail_options,
                envelope.smtputf8,
            )
        )
        try:
            outcome = await self.pipeline.run_phase(Phase.RCPT, candidate)
        except Exception:
            log.exception("RCPT phase failed, transaction %s", candidate.id)
            return self._refuse_rcpt(current, path, replies.internal_error(candidate.id))
        current.verdict = outcome.verdict
        if outcome.stop:
            reply = self._refusal(outcome.verdict, candidate.id, during_data=False)
            return self._refuse_rcpt(current, path, reply)
        if refusal := await self._verify(address):
            return self._refuse_rcpt(current, path, refusal)
        current.tx = outcome.tx
        notify, orcpt = rcpt_dsn_options(params)
        current.rcpt_notify.append(notify)
        current.rcpt_orcpt.append(orcpt)
        return replies.recipient_ok()

    async def _verify(self, address: str) -> str | None:
        """Ask the internal server whether the user exists (cached): no backscatter later."""
        if self.verifier is None:
            return None
        result = await self.verifier.verify(address)
        if result == "unknown":
            return replies.UNKNOWN_RECIPIENT
        if result == "unavailable" and self.config.verify.on_unavailable == "tempfail":
            return replies.RECIPIENT_UNVERIFIED
        return None

    async def data(self, session: SessionState, collected: DataCollector) -> str:
        current = session.open
        assert current is not None, "the protocol checks RCPT before DATA"
        session.open = None
        session.next_id = new_id()
        problem = collected.problem
        if problem is not None:
            reply = {
                DataProblem.TOO_BIG: replies.too_big(self.config.smtp.max_message_bytes),
                DataProblem.LINE_TOO_LONG: replies.LINE_TOO_LONG,
                DataProblem.BARE_LINE_ENDING: replies.BARE_LINE_ENDING,
                DataProblem.NO_MEMORY: replies.NO_STORAGE,
            }[problem]
            action = Action.REJECT
            if problem is DataProblem.NO_MEMORY:
                action = Action.TEMPFAIL
                self._warn_no_memory(current.tx)
            self._log(current, action.value, reply, collected.size, reason=problem.value)
            return reply
        tx = current.tx.with_raw(collected.message())
        hops = received_fields(tx.raw)
        if hops > self.config.smtp.max_received_headers:
            reply = replies.too_many_hops(hops, self.config.smtp.max_received_headers)
            self._log(current, Action.REJECT.value, reply, len(tx.raw), reason="mail loop")
            return reply
        try:
            if trusted(tx.connection.client_ip, self.config.smtp.trusted_relays):
                relayed = await self._judge_relayed_client(tx)
                if relayed is not tx:
                    current.relayed_by, tx = tx.connection, relayed
            outcome = await self.pipeline.run_phase(Phase.DATA, tx, final=True)
        except asyncio.CancelledError:
            # The connection went away while the checks ran: nothing stored, but logged.
            self._log(current, ABANDONED, "", len(tx.raw))
            raise
        except Exception:
            log.exception("DATA phase failed, transaction %s", tx.id)
            reply = replies.internal_error(tx.id)
            self._log(current, Action.TEMPFAIL.value, reply, len(tx.raw))
            return reply
        current.tx, current.verdict = outcome.tx, outcome.verdict
        if self.greylist is not None:  # needs the score: a step after the verdict
            current.verdict = await self.greylist.judge(outcome.tx, outcome.verdict)
        # Shielded: once the message is being stored, a vanished client must not cut the
        # store, the delivery notice or the log line in half.
        return await shielded(self._finish(current))

    async def _judge_relayed_client(self, tx: Transaction) -> Transaction:
        """Mail our own backup MX relayed: judge the client named by the Received field it
        added on top (SPF, DNS lists, HELO checks run again for that client), not the backup
        MX. Unchanged when that field names no client, or another trusted relay."""
        client = first_received_client(tx.raw)
        if client is None or trusted(client[0], self.config.smtp.trusted_relays):
            return tx
        ip, helo = client
        relay = tx.connection
        connection = Connection(relay.id, ip, helo=helo or relay.helo, esmtp=relay.esmtp)
        relayed = Transaction(tx.id, connection, tx.envelope, tx.raw, results=tx.results)
        for phase in (Phase.CONNECT, Phase.HELO, Phase.MAIL):
            relayed = (await self.pipeline.run_phase(phase, relayed)).tx
        log.info("transaction %s: relayed by %s, judged as from %s", tx.id, relay.client_ip, ip)
        return relayed

    def abandon(self, session: SessionState, reply: str = "") -> None:
        """RSET, a new HELO/EHLO, STARTTLS, QUIT, a timeout or a lost connection end the open
        transaction, if any; `reply` is what ended it (e.g. the 421 of a timeout)."""
        current = session.open
        if current is not None:
            if current.refused and not current.tx.envelope.rcpt_tos:
                # Every recipient was refused: that is how this transaction was decided.
                self._log(current, Action.REJECT.value, current.refused[-1]["reply"], 0)
            else:
                self._log(current, ABANDONED, reply, 0)
            session.open = None
            session.next_id = new_id()

    # -- internals -----------------------------------------------------------------------------

    async def _finish(self, current: OpenTransaction) -> str:
        tx, verdict = current.tx, current.verdict
        assert verdict is not None
        queue_id = quarantine_id = ""
        outcome = verdict.action.value
        if verdict.action in (Action.REJECT, Action.TEMPFAIL):
            reply = self._refusal(verdict, tx.id, during_data=True)
        else:
            # Incoming X-Spam-* and Authentication-Results naming us are forgeries to the
            # internal server: removed from what is queued. The quarantine keeps them as
            # evidence; a release removes them there (gateway.quarantine.admin).
            extra = [authentication_results_field(self.hostname, tx)]
            hop = tx
            if current.relayed_by is not None:  # our Received names who connected: the relay
                hop = Transaction(tx.id, current.relayed_by, tx.envelope, tx.raw, tx.results)
            ours = gateway_headers(hop, verdict, self.hostname, extra)
            try:
                if verdict.action in (Action.ACCEPT, Action.TAG):
                    env = tx.envelope
                    prepared = self.spool.prepare(
                        tx.id,
                        env.mail_from,
                        env.rcpt_tos,
                        stamp(_for_delivery(tx.raw, self.hostname, verdict), ours),
                        dsn_ret=current.dsn_ret,
                        dsn_envid=current.dsn_envid,
                        rcpt_notify=current.rcpt_notify,
                        rcpt_orcpt=current.rcpt_orcpt,
                        sender_authenticated=sender_authenticated(tx),
                    )
                    await self.committer.commit(prepared)
                    self.delivery.notify(tx.id, prepared)
                    queue_id, reply = tx.id, replies.queued(tx.id)
                else:
                    data = stamp(tx.raw, ours)
                    quarantine_id = await asyncio.to_thread(self.quarantine.add, tx, verdict, data)
                    reply = replies.held(quarantine_id)
            except SpoolFull:
                log.warning("spool full, transaction %s deferred", tx.id)
                outcome, reply = Action.TEMPFAIL.value, replies.NO_STORAGE
            except QuarantineFull as exc:
                log.warning("%s; transaction %s deferred", exc, tx.id)
                outcome, reply = Action.TEMPFAIL.value, replies.QUARANTINE_FULL
            except Exception:
                log.exception("storing transaction %s failed", tx.id)
                outcome, reply = Action.TEMPFAIL.value, replies.storage_error(tx.id)
        self._log(current, outcome, reply, len(tx.raw), queue_id, quarantine_id)
        return reply

    def _warn_no_memory(self, tx: Transaction) -> None:
        log.warning(
            "transaction %s deferred: [smtp] max_inflight_bytes or"
            " max_inflight_bytes_per_ip reached (client %s)",
            tx.id,
            tx.connection.client_ip,
        )

    def _refusal(self, verdict: Verdict, tx_id: str, during_data: bool) -> str:
        if verdict.reply:
            return replies.configured(verdict.reply)
        if verdict.action is Action.TEMPFAIL:
            return replies.deferred(tx_id, public_reason(verdict))
        if during_data:
            return replies.rejected(tx_id, public_reason(verdict))
        return replies.refused(tx_id, public_reason(verdict))

    def _refuse_rcpt(self, current: OpenTransaction, path: str, reply: str) -> str:
        if len(current.refused) < MAX_REFUSED_LOGGED:
            current.refused.append({"rcpt": path, "reply": reply})
        else:  # the log line stays bounded however many RCPTs a client sends
            current.refused_omitted += 1
        return reply

    def _internal_error(self, session: SessionState, tx: Transaction, phase: Phase) -> str:
        log.exception("%s phase failed, transaction %s", phase.name, tx.id)
        reply = replies.internal_error(tx.id)
        self._log_refusal(session, tx, reply, None, sender_given=phase >= Phase.MAIL)
        return reply

    def _log_refusal(
        self,
        session: SessionState,
        tx: Transaction,
        reply: str,
        verdict: Verdict | None,
        sender_given: bool = True,
        reason: str = "",
    ) -> None:
        """A transaction that ends before MAIL was accepted (connect, HELO, MAIL refused)."""
        current = OpenTransaction(tx, sender_given=sender_given, verdict=verdict)
        outcome = verdict.action.value if verdict else Action.TEMPFAIL.value
        self._log(current, outcome, reply, 0, reason=reason)
        session.next_id = new_id()

    def _log(
        self,
        current: OpenTransaction,
        outcome: str,
        reply: str,
        size: int,
        queue_id: str = "",
        quarantine_id: str = "",
        reason: str = "",
    ) -> None:
        tx = current.tx
        fields = verdict_fields(current.verdict)
        if reason:
            fields["reason"] = reason
        log_transaction(
            TransactionRecord(
                id=tx.id,
                **connection_fields(tx.connection),
                sender=tx.envelope.mail_from if current.sender_given else None,
                recipients=list(tx.envelope.rcpt_tos),
                refused_recipients=current.refused,
                refused_recipients_omitted=current.refused_omitted,
                outcome=outcome,
                reply=reply,
                size=size,
                check_times_s=check_times(tx.results.values()),
                total_s=round(time.monotonic() - current.started, 6),
                queue_id=queue_id,
                quarantine_id=quarantine_id,
                **fields,
            )
        )


def public_reason(verdict: Verdict) -> str:
    """What a reply may say about a verdict. A check failure reads "check NAME failed: error";
    the error text can name internal hosts and ports, so only "check NAME failed" is shown and
    the rest stays in the log."""
    if verdict.action is Action.TEMPFAIL and verdict.forced_by is None:
        return verdict.reason.partition(":")[0]
    return verdict.reason


def _for_delivery(raw: bytes, hostname: str, verdict: Verdict) -> bytes:
    """What is queued under our stamp: without the sender's copies of our fields, and with
    the junk tag's Subject prefix when the verdict is `tag`."""
    cleaned = remove_our_fields(raw, hostname)
    return (
        prefix_subject(cleaned, verdict.subject_prefix) if verdict.action is Action.TAG else cleaned
    )
