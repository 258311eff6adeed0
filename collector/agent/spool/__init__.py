"""The agent's durable spool (see store.py): batches on disk from `submit` until acked.

store.py        Spool: the segment store, its index by seq, the sender's side
records.py      the record codec and the scan that recovers a damaged segment
segments.py     one segment file
ack_journal.py  acks.log, the done seq ranges
seq_file.py     the persisted highest reserved seq
rejected.py     rejected/, batches the ingest refused
reasons.py      drop reasons and SpoolError
"""

from collector.agent.spool.reasons import (
    DROP_CORRUPT,
    DROP_IO_ERROR,
    DROP_MAX_AGE,
    DROP_SPOOL_FULL,
    DROP_TOO_LARGE,
    DROP_TORN,
    SpoolError,
)
from collector.agent.spool.store import Spool, SpoolCounters

__all__ = [
    "DROP_CORRUPT",
    "DROP_IO_ERROR",
    "DROP_MAX_AGE",
    "DROP_SPOOL_FULL",
    "DROP_TOO_LARGE",
    "DROP_TORN",
    "Spool",
    "SpoolCounters",
    "SpoolError",
]
