"""Column access to the wire contract: packed columns of a Batch as NumPy arrays.

Sits between the generated protobuf code and everything that reads samples (ingest
validation, the aggregator's decoder). Every column of the contract has a fixed-width
element type, so a packed column is a little-endian array on the wire and
`numpy.frombuffer` reads it without a Python object per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from collector.errors import ProtocolError
from collector.proto.telemetry.v1 import telemetry_pb2 as pb

SCHEMA = "telemetry.v1.Batch"

_U32: np.dtype[Any] = np.dtype("<u4")
_I64: np.dtype[Any] = np.dtype("<i8")
_U64: np.dtype[Any] = np.dtype("<u8")
_F64: np.dtype[Any] = np.dtype("<f8")
# field number -> element dtype, for CounterColumns and GaugeColumns
_COUNTER_FIELDS: dict[int, np.dtype[Any]] = {1: _U32, 2: _I64, 3: _U64}
_GAUGE_FIELDS: dict[int, np.dtype[Any]] = {1: _U32, 2: _I64, 3: _F64}
# DeltaColumns and PeriodGaugeColumns: series index, period start, period end, value
_DELTA_FIELDS: dict[int, np.dtype[Any]] = {1: _U32, 2: _I64, 3: _I64, 4: _U64}
_PERIOD_GAUGE_FIELDS: dict[int, np.dtype[Any]] = {1: _U32, 2: _I64, 3: _I64, 4: _F64}


@dataclass(frozen=True, slots=True)
class Columns:
    """The three columns of one value type; all of equal length once validated."""

    series_index: npt.NDArray[np.uint32]
    time_unix_nano: npt.NDArray[np.int64]
    value: npt.NDArray[np.uint64] | npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.series_index)


@dataclass(frozen=True, slots=True)
class PeriodColumns:
    """The four columns of DeltaColumns / PeriodGaugeColumns: a value over [start, end)."""

    series_index: npt.NDArray[np.uint32]
    start_unix_nano: npt.NDArray[np.int64]
    time_unix_nano: npt.NDArray[np.int64]
    value: npt.NDArray[np.uint64] | npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.series_index)

    def lengths_equal(self) -> bool:
        n = len(self.series_index)
        return n == len(self.start_unix_nano) == len(self.time_unix_nano) == len(self.value)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ProtocolError("columns", "truncated varint in columns")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtocolError("columns", "varint too long in columns")


def skip_field(buf: bytes, pos: int, wire_type: int, number: int = 0) -> int:
    """Position after the payload of a field whose key ended at `pos` (any wire type).

    Unknown fields are legal protobuf (what a future telemetry.v1 field looks like to an
    older reader), so readers skip them instead of failing. Groups (wire types 3/4, long
    deprecated but still legal) are skipped up to their matching end key.
    """
    if wire_type == 0:
        return _varint(buf, pos)[1]
    if wire_type == 1:
        end = pos + 8
    elif wire_type == 2:
        length, pos = _varint(buf, pos)
        end = pos + length
    elif wire_type == 5:
        end = pos + 4
    elif wire_type == 3:
        while True:
            if pos >= len(buf):
                raise ProtocolError("columns", "unterminated group in columns")
            key, pos = _varint(buf, pos)
            if key & 7 == 4:
                if key >> 3 != number:
                    raise ProtocolError("columns", "mismatched group end in columns")
                return pos
            pos = skip_field(buf, pos, key & 7, key >> 3)
    else:
        raise ProtocolError("columns", f"invalid wire type {wire_type} in columns")
    if end > len(buf):
        raise ProtocolError("columns", "truncated field in columns")
    return end


def _columns(raw: bytes, fields: dict[int, np.dtype[Any]]) -> Columns:
    a = _arrays(raw, fields)
    return Columns(a[0], a[1], a[2])


def _arrays(raw: bytes, fields: dict[int, np.dtype[Any]]) -> list[npt.NDArray[Any]]:
    # `raw` is the canonical re-serialisation of a *Columns message by the protobuf runtime:
    # each known repeated field appears once, packed (proto3 default), in field order, and
    # unknown fields (kept by the runtime) follow. Unpacked or split encodings from an agent
    # were already normalised by parsing; the loop still accepts repeats so a different
    # runtime cannot make it wrong. A field this reader does not know (a newer contract's
    # addition, or a known number with an unexpected wire type, which the runtime also kept
    # as unknown) is skipped: the contract evolves by adding fields.
    got: list[npt.NDArray[Any] | None] = [None] * len(fields)
    pos = 0
    end = len(raw)
    while pos < end:
        key, pos = _varint(raw, pos)
        number, wire_type = key >> 3, key & 7
        dtype = fields.get(number)
        if wire_type != 2 or dtype is None:
            pos = skip_field(raw, pos, wire_type, number)
            continue
        length, pos = _varint(raw, pos)
        if pos + length > end:
            raise ProtocolError("columns", "truncated packed column")
        if length % dtype.itemsize:
            raise ProtocolError("columns", f"packed column {number} length {length} not a multiple")
        arr = np.frombuffer(raw, dtype=dtype, count=length // dtype.itemsize, offset=pos)
        prev = got[number - 1]
        got[number - 1] = arr if prev is None else np.concatenate((prev, arr))
        pos += length
    return [a if a is not None else np.empty(0, dtype=fields[i + 1]) for i, a in enumerate(got)]


def counter_columns(batch: pb.Batch) -> Columns:
    """Counter columns of a parsed batch as read-only NumPy arrays (uint64 values)."""
    return _columns(batch.counters.SerializeToString(), _COUNTER_FIELDS)


def gauge_columns(batch: pb.Batch) -> Columns:
    """Gauge columns of a parsed batch as read-only NumPy arrays (float64 values)."""
    return _columns(batch.gauges.SerializeToString(), _GAUGE_FIELDS)


def delta_columns(batch: pb.Batch) -> PeriodColumns:
    """DeltaColumns of a parsed batch (uint64 counts over [start, end))."""
    if not batch.HasField("deltas"):
        return EMPTY_DELTAS
    a = _arrays(batch.deltas.SerializeToString(), _DELTA_FIELDS)
    return PeriodColumns(a[0], a[1], a[2], a[3])


def period_gauge_columns(batch: pb.Batch) -> PeriodColumns:
    """PeriodGaugeColumns of a parsed batch (float64 statistics over [start, end))."""
    if not batch.HasField("period_gauges"):
        return EMPTY_PERIOD_GAUGES
    a = _arrays(batch.period_gauges.SerializeToString(), _PERIOD_GAUGE_FIELDS)
    return PeriodColumns(a[0], a[1], a[2], a[3])


EMPTY_DELTAS = PeriodColumns(*(np.empty(0, dtype=d) for d in _DELTA_FIELDS.values()))
EMPTY_PERIOD_GAUGES = PeriodColumns(*(np.empty(0, dtype=d) for d in _PERIOD_GAUGE_FIELDS.values()))


def parse_batch(data: bytes) -> pb.Batch:
    """Parse batch bytes; raise ProtocolError (not a protobuf exception) when malformed."""
    batch = pb.Batch()
    try:
        batch.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError, but upb may raise others
        raise ProtocolError("not_a_batch", f"not a telemetry.v1.Batch: {exc}") from exc
    return batch


def peek_seq(data: bytes) -> int:
    """Best-effort `seq` (field 2) of bytes that did not parse as a Batch; 0 when unknown.

    Walks the top-level fields until the first one that is malformed, so a batch broken
    after its header still has its nack tied to its seq (see Ack in the .proto).
    """
    pos = 0
    seq = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire_type = key >> 3, key & 7
            if number == 0:
                break
            if number == 2 and wire_type == 0:
                seq, pos = _varint(data, pos)
                continue
            pos = skip_field(data, pos, wire_type, number)
    except ProtocolError:
        pass
    return seq if 0 < seq < 2**64 else 0


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_columns(
    series_index: npt.ArrayLike, time_unix_nano: npt.ArrayLike, value: npt.ArrayLike, *, gauge: bool
) -> bytes:
    """Encode a *Columns message from arrays without a Python object per sample.

    The result can be merged into a batch: `batch.counters.MergeFromString(raw)`.
    """
    arrays: tuple[npt.NDArray[Any], ...] = (
        np.ascontiguousarray(series_index, dtype=_U32),
        np.ascontiguousarray(time_unix_nano, dtype=_I64),
        np.ascontiguousarray(value, dtype=_F64 if gauge else _U64),
    )
    out = bytearray()
    for number, arr in enumerate(arrays, start=1):
        if len(arr):
            out += bytes([(number << 3) | 2]) + _varint_bytes(arr.nbytes) + arr.tobytes()
    return bytes(out)


def encode_period_columns(
    series_index: npt.ArrayLike,
    start_unix_nano: npt.ArrayLike,
    time_unix_nano: npt.ArrayLike,
    value: npt.ArrayLike,
    *,
    gauge: bool,
) -> bytes:
    """Encode a DeltaColumns (gauge=False) or PeriodGaugeColumns message from arrays."""
    arrays: tuple[npt.NDArray[Any], ...] = (
        np.ascontiguousarray(series_index, dtype=_U32),
        np.ascontiguousarray(start_unix_nano, dtype=_I64),
        np.ascontiguousarray(time_unix_nano, dtype=_I64),
        np.ascontiguousarray(value, dtype=_F64 if gauge else _U64),
    )
    out = bytearray()
    for number, arr in enumerate(arrays, start=1):
        if len(arr):
            out += bytes([(number << 3) | 2]) + _varint_bytes(arr.nbytes) + arr.tobytes()
    return bytes(out)
