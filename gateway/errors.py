"""One exception tree. Third-party errors are mapped to these at the module that calls them."""


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration (TOML or rules) is invalid. `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class CheckError(GatewayError):
    """A check could not reach a decision (its dependency failed, it timed out, ...)."""


class DnsError(GatewayError):
    """A DNS lookup failed in a way that is not an answer (timeout, SERVFAIL, refused)."""


class DnsTimeout(DnsError):
    """No answer within the configured lifetime."""


class ThreadsBusy(GatewayError):
    """No thread of a shared pool came free for this client in time (gateway.threads)."""


class ScannerError(GatewayError):
    """The virus scanner is down, timed out or answered garbage."""


class SpoolError(GatewayError):
    """The durable spool could not store a message (disk full, permissions)."""


class SpoolFull(SpoolError):
    """Not enough free space to accept a message safely."""


class AlreadyQueued(SpoolError):
    """A message with this queue id is already in the spool."""


class ModelError(GatewayError):
    """The classifier artefact is missing, unsafe or does not match this code."""


class QuarantineError(GatewayError):
    """The quarantine store failed (missing, locked, corrupt entry)."""


class QuarantineFull(QuarantineError):
    """Holding this message would pass [quarantine] max_bytes or max_messages."""


class QuarantineNotFound(QuarantineError):
    """No quarantined message has this id (never held, already deleted or expired)."""


class QuarantineCorrupt(QuarantineError):
    """A quarantine entry exists but its index row or message file is damaged or missing."""


class QuarantineMissing(QuarantineError):
    """There is no quarantine store where the configuration says (nothing held yet, wrong dir)."""
