"""Fetched record batches' CRCs checked with the CPU's CRC32C instruction.

Every Kafka v2 record batch carries a CRC32C of its bytes; aiokafka's consumer checks it
(`check_crcs`, on by default, and on in the aggregator: a flipped bit in a packed counter
value would otherwise be published as a wrong rate). aiokafka computes it in software, a
table-driven loop of about 1.4 GB/s on this machine, which made it a third of the bare
consumer's CPU on uncompressed 100-sample batches. google-crc32c computes the same checksum
with the CPU's CRC32C instruction (SSE4.2, ARMv8), about 11 GB/s.

`install()` makes aiokafka's fetcher check every complete batch of a fetched partition that
way first; when all of them match, aiokafka skips its own check of that fetch. Anything else
- a batch that does not match, a legacy (v0/v1) message set, a header this walk cannot read -
leaves aiokafka's own check on for that fetch, so a corrupt batch still raises
CorruptRecordException exactly where it did before, and records before it still come. The
change is process-wide: every aiokafka consumer of the process checks in hardware, with the
same results. aiokafka has no hook for this: `install()` replaces two names of its fetcher
module, and does nothing (aiokafka checks in software, as before) unless aiokafka's
PartitionRecords has the signature this was written against and google-crc32c has its C
implementation.
"""

from __future__ import annotations

import inspect
import logging
import threading
from typing import Any

import google_crc32c
from aiokafka.consumer import fetcher as _fetcher

log = logging.getLogger(__name__)

# A v2 record batch: base offset (8 bytes), length (4) of the rest, leader epoch (4),
# magic (1), CRC (4), then the bytes the CRC covers (attributes onward: 40 more bytes of
# header, then the records).
_LOG_OVERHEAD = 12
_MAGIC_AT = 16
_CRC_AT = 17
_CRC_FROM = 21
_V2_HEADER = 61
_PARTITION_RECORDS_ARGS = (
    "tp",
    "records",
    "aborted_transactions",
    "fetch_offset",
    "key_deserializer",
    "value_deserializer",
    "check_crcs",
    "isolation_level",
)

_original: tuple[Any, Any] | None = None  # aiokafka's own (MemoryRecords, PartitionRecords)
_fetched = threading.local()  # the raw bytes of the records object just made, per thread


def batches_match(raw: bytes | memoryview) -> bool:
    """True when every complete batch in `raw` (a fetched partition's record bytes) is a v2
    batch whose CRC32C matches, computed in hardware. A trailing partial batch (the broker
    stopped at its size limit) is not read by aiokafka either and does not count. False for
    anything else: the caller then leaves the check to aiokafka."""
    mv = memoryview(raw)
    n = len(mv)
    pos = 0
    while n - pos >= _LOG_OVERHEAD:
        end = pos + _LOG_OVERHEAD + int.from_bytes(mv[pos + 8 : pos + 12], "big", signed=True)
        if end > n:
            return True  # partial tail, as aiokafka's MemoryRecords sees it
        if end - pos < _V2_HEADER or mv[pos + _MAGIC_AT] != 2:
            return False
        if google_crc32c.value(mv[pos + _CRC_FROM : end].tobytes()) != int.from_bytes(
            mv[pos + _CRC_AT : pos + _CRC_FROM], "big"
        ):
            return False
        pos = end
    return True


def install() -> bool:
    """Check fetched batches' CRCs in hardware in every aiokafka consumer of this process (see
    the module doc); idempotent. False (and aiokafka unchanged) when it cannot."""
    global _original
    if _original is not None:
        return True
    if google_crc32c.implementation != "c":
        log.info("google-crc32c has no C implementation here: record batch CRCs are checked by aiokafka")
        return False
    memory_records, partition_records = _fetcher.MemoryRecords, _fetcher.PartitionRecords
    params = tuple(inspect.signature(partition_records.__init__).parameters)[1:]
    if params != _PARTITION_RECORDS_ARGS:
        log.warning(
            "aiokafka's PartitionRecords%s is not the one expected: record batch CRCs are checked "
            "by aiokafka (in software)",
            params,
        )
        return False

    def fetched_records(raw: bytes) -> Any:
        records = memory_records(raw)
        _fetched.last = (records, raw)
        return records

    class HardwareCrcPartitionRecords(partition_records):  # type: ignore[misc, valid-type]
        def __init__(
            self,
            tp: Any,
            records: Any,
            aborted_transactions: Any,
            fetch_offset: int,
            key_deserializer: Any,
            value_deserializer: Any,
            check_crcs: bool,
            isolation_level: Any,
        ) -> None:
            last = getattr(_fetched, "last", None)
            _fetched.last = None
            if check_crcs and last is not None and last[0] is records and batches_match(last[1]):
                check_crcs = False  # every batch matched its CRC32C, checked above
            super().__init__(
                tp,
                records,
                aborted_transactions,
                fetch_offset,
                key_deserializer,
                value_deserializer,
                check_crcs,
                isolation_level,
            )

    _original = (memory_records, partition_records)
    _fetcher.MemoryRecords = fetched_records
    _fetcher.PartitionRecords = HardwareCrcPartitionRecords
    return True


def uninstall() -> None:
    """Give aiokafka back its own names (for tests)."""
    global _original
    if _original is not None:
        _fetcher.MemoryRecords, _fetcher.PartitionRecords = _original
        _original = None
