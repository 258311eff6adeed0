"""Why a batch leaves the spool without an OK ack (the label values of the agent's drop
counter), and the error of a spool directory that cannot be used at all."""

from __future__ import annotations

from collector.errors import CollectorError

DROP_SPOOL_FULL = "spool_full"
DROP_MAX_AGE = "max_age"
DROP_TOO_LARGE = "too_large"
DROP_IO_ERROR = "io_error"
DROP_CORRUPT = "corrupt"
DROP_TORN = "torn"


class SpoolError(CollectorError):
    """The spool directory cannot be used at all (permissions, not a directory)."""
