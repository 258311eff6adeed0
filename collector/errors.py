"""The exception tree of the collector.

Each type carries what its callers branch on, and nothing else: `ConfigError` the key and
the file (the entrypoint prints them), `ProtocolError` a short `reason` code (the
aggregator's dead-letter header and decode-error label), `RuleViolation` a broken rule
(the ingest's rejection label) and the gRPC code to answer with, `BrokerError` whether
Kafka timed out (the ingest answers DEADLINE_EXCEEDED then, else UNAVAILABLE). Catch the narrowest type;
the entrypoint turns these into exit codes and log lines, the ingest service into gRPC
statuses on the Ack.
"""

from __future__ import annotations


class CollectorError(Exception):
    """Base of every error the collector raises on purpose."""


class ConfigError(CollectorError):
    """A setting is missing or wrong. The message names the key and the file."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None):
        self.message = message
        self.key = key
        self.source = source
        where = " ".join(p for p in (f"in {source}" if source else "", f"at {key}" if key else "") if p)
        super().__init__(f"{message} ({where})" if where else message)

    def located(self, source: str | None) -> ConfigError:
        """This error naming `source` too, unless it names one already. Code that checks a
        value long after loading (an adapter's options, a TLS file) knows the key but not
        the file; the entrypoint, which loaded the file, fills it in."""
        if self.source is not None or source is None:
            return self
        err = ConfigError(self.message, key=self.key, source=source)
        err.__cause__ = self.__cause__
        return err


class ProtocolError(CollectorError):
    """Bytes or a batch that do not satisfy the wire contract (sending them again cannot help).

    `reason`: a short code naming what is wrong ("schema", "not_a_batch"), fit for a metric
    label and a dead-letter header; `message` (the str()) may say more, for people.
    """

    def __init__(self, reason: str, message: str | None = None):
        self.reason = reason
        self.message = reason if message is None else message
        super().__init__(self.message)


class RuleViolation(ProtocolError):
    """A well-formed batch that breaks a rule of the contract: `reason` is the rule's short
    name (a metric label), `message` names the offending field, `code` is the gRPC code name
    to answer with."""

    def __init__(self, rule: str, message: str, *, code: str = "INVALID_ARGUMENT"):
        self.code = code
        super().__init__(rule, message)


class BrokerError(CollectorError):
    """Kafka did not take a record (timeout, broker down, producer wedged); worth retrying."""

    def __init__(self, message: str, *, timeout: bool = False):
        self.timeout = timeout
        super().__init__(message)


class BrokerLaunchError(CollectorError):
    """The embedded broker could not be started."""
