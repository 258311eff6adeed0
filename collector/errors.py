"""The exception tree of the collector.

Every error says whether retrying the same operation later can succeed (`retriable`).
Catch the narrowest type; the entrypoint turns these into exit codes and log lines, the
ingest service turns them into gRPC statuses on the Ack.
"""

from __future__ import annotations


class CollectorError(Exception):
    """Base of every error the collector raises on purpose."""

    retriable: bool = False


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
    """Bytes or a batch that do not satisfy the wire contract (never retriable as is)."""


class ValidationError(ProtocolError):
    """A well-formed batch that breaks a rule; `code` is the gRPC code name to answer with."""

    def __init__(self, reason: str, *, code: str = "INVALID_ARGUMENT", rule: str = "invalid"):
        self.reason = reason
        self.code = code
        self.rule = rule
        super().__init__(reason)


class BackpressureError(CollectorError):
    """A bounded queue or window is full; try again later."""

    retriable = True


class BrokerError(CollectorError):
    """Kafka did not take a record (timeout, broker down, producer wedged)."""

    retriable = True

    def __init__(self, message: str, *, timeout: bool = False):
        self.timeout = timeout
        super().__init__(message)


class BrokerLaunchError(CollectorError):
    """The embedded broker could not be started."""
