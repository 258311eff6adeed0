"""The spool's record codec: one batch as it is stored in a segment file, and the scan that
reads a segment back, skipping and counting damage.

Record format (little-endian), repeated until the end of a segment:

    magic "\\xa7S" | format u8 | priority u8 | length u32 | crc32 u32 | seq u64 |
    created_unix_nano i64 | payload (length bytes)

format 1 (RAW): the payload is a serialised telemetry.v1.Batch; format 2 (ZLIB): the same,
zlib-compressed (`spool.compression: zlib`; a batch repeats its series table, so this shrinks
it ~10x). `crc32` is zlib.crc32 over the header fields after it and the format/priority/length,
then the stored payload. A segment is never appended to after a restart, so a torn tail can
only be the last record of a segment; `scan` skips torn and corrupt records, counts them, and
resynchronises on the next record whose checksum holds.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

MAGIC = b"\xa7S"
RAW, ZLIB = 1, 2  # record formats
FORMATS = (RAW, ZLIB)
HEADER = struct.Struct("<2sBBIIQq")
_CRC_FIELDS = struct.Struct("<BBIQq")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    priority: int
    created_unix_nano: int
    offset: int  # of the header within the segment
    length: int  # of the stored payload
    fmt: int = RAW

    @property
    def size(self) -> int:
        return HEADER_SIZE + self.length


def _crc(fmt: int, priority: int, length: int, seq: int, created: int, payload: bytes) -> int:
    head = _CRC_FIELDS.pack(fmt, priority, length, seq, created)
    return zlib.crc32(payload, zlib.crc32(head))


def encode_record(
    seq: int, priority: int, created_unix_nano: int, payload: bytes, *, fmt: int = RAW
) -> bytes:
    """One spool record: header plus the payload as stored (compress first for ZLIB)."""
    n = len(payload)
    return (
        HEADER.pack(
            MAGIC,
            fmt,
            priority,
            n,
            _crc(fmt, priority, n, seq, created_unix_nano, payload),
            seq,
            created_unix_nano,
        )
        + payload
    )


def decode_payload(rec: Record, stored: bytes) -> bytes:
    """The batch bytes of a record (raises zlib.error if a ZLIB payload does not inflate)."""
    return zlib.decompress(stored) if rec.fmt == ZLIB else stored


@dataclass(slots=True)
class ScanResult:
    records: list[Record] = field(default_factory=list)
    corrupt: int = 0  # regions skipped in the middle (checksum, magic or length wrong)
    torn: int = 0  # an incomplete record at the end


def _valid_at(data: bytes | memoryview, pos: int) -> Record | None:
    if pos + HEADER_SIZE > len(data):
        return None
    magic, fmt, prio, length, crc, seq, created = HEADER.unpack_from(data, pos)
    if magic != MAGIC or fmt not in FORMATS or length > MAX_PAYLOAD:
        return None
    end = pos + HEADER_SIZE + length
    if end > len(data):
        return None
    payload = bytes(data[pos + HEADER_SIZE : end])
    if _crc(fmt, prio, length, seq, created, payload) != crc:
        return None
    return Record(seq, prio, created, pos, length, fmt)


def scan(data: bytes) -> ScanResult:
    """Parse a segment's bytes; never raises. Damaged regions are skipped and counted."""
    out = ScanResult()
    pos = 0
    end = len(data)
    while pos < end:
        rec = _valid_at(data, pos)
        if rec is not None:
            out.records.append(rec)
            pos += rec.size
            continue
        # Damaged here: resynchronise on the next position holding a record that checks out.
        nxt = data.find(MAGIC, pos + 1)
        while nxt != -1 and _valid_at(data, nxt) is None:
            nxt = data.find(MAGIC, nxt + 1)
        if nxt == -1:
            out.torn += 1
            break
        out.corrupt += 1
        pos = nxt
    return out
