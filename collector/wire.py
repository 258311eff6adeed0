"""The telemetry.v1 wire format where it is written and read by hand: the one codec.

Sits between the generated protobuf code and everything that reads or writes batches without
a protobuf object per sample or per series: the agent's `BatchBuilder.build_bytes`, the
simulator's encoder, ingest validation and the aggregator's decoder. Every field number and
wire type comes from the generated descriptor (`telemetry_pb2.DESCRIPTOR`), never from a
literal, so the .proto stays the one contract.

- primitives: varints, field keys, length-delimited fields, skipping any field (`skip_field`);
- the contract's keys: `BATCH` (top-level fields of a Batch) and the column layouts;
- packed columns <-> NumPy arrays: every column of the contract has a fixed-width element
  type, so a packed column is a little-endian array on the wire, `numpy.frombuffer` reads it
  and `ndarray.tobytes` writes it;
- `parse_batch` (the runtime's parse with our error) and `peek_seq` (the seq of bytes that
  do not parse).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from collector.errors import ProtocolError
from collector.proto.telemetry.v1 import telemetry_pb2 as pb

SCHEMA = "telemetry.v1.Batch"

# ------------------------------------------------------------------ primitives

WIRE_VARINT, WIRE_FIXED64, WIRE_LEN, WIRE_GROUP_START, WIRE_GROUP_END, WIRE_FIXED32 = 0, 1, 2, 3, 4, 5

_SFIXED64 = struct.Struct("<q")


def encode_varint(n: int) -> bytes:
    """`n` (0 <= n < 2**64) as a protobuf base-128 varint."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def varint_size(n: int) -> int:
    """Bytes `encode_varint(n)` takes."""
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it) of the varint at `pos`; ProtocolError when it is truncated
    or longer than ten bytes."""
    try:
        b = buf[pos]
        if b < 0x80:
            return b, pos + 1
        result = b & 0x7F
        shift = 7
        pos += 1
        while True:
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result, pos
            shift += 7
            if shift > 63:
                raise ProtocolError("malformed", "varint too long")
    except IndexError:
        raise ProtocolError("malformed", "truncated varint") from None


def skip_field(buf: bytes, pos: int, wire_type: int, number: int = 0) -> int:
    """Position after the payload of a field whose key ended at `pos` (any wire type).

    Unknown fields are legal protobuf (what a future telemetry.v1 field looks like to an
    older reader), so readers skip them instead of failing. Groups (wire types 3/4, long
    deprecated but still legal) are skipped up to their matching end key.
    """
    if wire_type == WIRE_VARINT:
        return read_varint(buf, pos)[1]
    if wire_type == WIRE_FIXED64:
        end = pos + 8
    elif wire_type == WIRE_LEN:
        length, pos = read_varint(buf, pos)
        end = pos + length
    elif wire_type == WIRE_FIXED32:
        end = pos + 4
    elif wire_type == WIRE_GROUP_START:
        while True:
            if pos >= len(buf):
                raise ProtocolError("malformed", "unterminated group")
            key, pos = read_varint(buf, pos)
            if key & 7 == WIRE_GROUP_END:
                if key >> 3 != number:
                    raise ProtocolError("malformed", "mismatched group end")
                return pos
            pos = skip_field(buf, pos, key & 7, key >> 3)
    else:
        raise ProtocolError("malformed", f"invalid wire type {wire_type}")
    if end > len(buf):
        raise ProtocolError("malformed", "truncated field")
    return end


# wire type of a field that is not packed, by descriptor type
_WIRE_TYPES = {
    FieldDescriptor.TYPE_DOUBLE: WIRE_FIXED64,
    FieldDescriptor.TYPE_FLOAT: WIRE_FIXED32,
    FieldDescriptor.TYPE_INT64: WIRE_VARINT,
    FieldDescriptor.TYPE_UINT64: WIRE_VARINT,
    FieldDescriptor.TYPE_INT32: WIRE_VARINT,
    FieldDescriptor.TYPE_FIXED64: WIRE_FIXED64,
    FieldDescriptor.TYPE_FIXED32: WIRE_FIXED32,
    FieldDescriptor.TYPE_BOOL: WIRE_VARINT,
    FieldDescriptor.TYPE_STRING: WIRE_LEN,
    FieldDescriptor.TYPE_GROUP: WIRE_GROUP_START,
    FieldDescriptor.TYPE_MESSAGE: WIRE_LEN,
    FieldDescriptor.TYPE_BYTES: WIRE_LEN,
    FieldDescriptor.TYPE_UINT32: WIRE_VARINT,
    FieldDescriptor.TYPE_ENUM: WIRE_VARINT,
    FieldDescriptor.TYPE_SFIXED32: WIRE_FIXED32,
    FieldDescriptor.TYPE_SFIXED64: WIRE_FIXED64,
    FieldDescriptor.TYPE_SINT32: WIRE_VARINT,
    FieldDescriptor.TYPE_SINT64: WIRE_VARINT,
}


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a contract message as it appears on the wire: number, wire type, key."""

    name: str
    number: int
    wire_type: int
    key: int  # number << 3 | wire type: the value of the key varint
    key_bytes: bytes  # the key as written

    @classmethod
    def of(cls, message: Descriptor, name: str) -> Field:
        fd = message.fields_by_name[name]
        wire_type = WIRE_LEN if fd.is_packed else _WIRE_TYPES[fd.type]
        key = fd.number << 3 | wire_type
        return cls(name, fd.number, wire_type, key, encode_varint(key))

    def len_delimited(self, payload: bytes) -> bytes:
        """The whole field: key, length, payload (a string, a message, a packed column)."""
        return self.key_bytes + encode_varint(len(payload)) + payload

    def len_delimited_size(self, payload_size: int) -> int:
        """Bytes `len_delimited` of a payload of `payload_size` bytes takes."""
        return len(self.key_bytes) + varint_size(payload_size) + payload_size

    def varint(self, value: int) -> bytes:
        return self.key_bytes + encode_varint(value)

    def sfixed64(self, value: int) -> bytes:
        return self.key_bytes + _SFIXED64.pack(value)


@dataclass(frozen=True, slots=True)
class BatchFields:
    """The top-level fields of telemetry.v1.Batch (named as in the .proto)."""

    agent_id: Field
    seq: Field
    site: Field
    boot_id: Field
    created_unix_nano: Field
    series: Field
    counters: Field
    gauges: Field
    deltas: Field
    period_gauges: Field
    unissued_seq_first: Field
    unissued_seq_last: Field


_MESSAGES = pb.DESCRIPTOR.message_types_by_name  # the generated file descriptor's messages
BATCH = BatchFields(**{f.name: Field.of(_MESSAGES["Batch"], f.name) for f in fields(BatchFields)})

# ------------------------------------------------------------------ packed columns

# element type of a packed column, by descriptor type (all fixed-width, little-endian)
_DTYPES: dict[int, np.dtype[Any]] = {
    FieldDescriptor.TYPE_FIXED32: np.dtype("<u4"),
    FieldDescriptor.TYPE_SFIXED64: np.dtype("<i8"),
    FieldDescriptor.TYPE_FIXED64: np.dtype("<u8"),
    FieldDescriptor.TYPE_DOUBLE: np.dtype("<f8"),
}


@dataclass(frozen=True, slots=True)
class ColumnLayout:
    """The packed columns of one *Columns message, in the order of our column tuples."""

    fields: tuple[Field, ...]
    dtypes: tuple[np.dtype[Any], ...]
    slot: dict[int, int]  # field number -> position in `fields`

    @classmethod
    def of(cls, message: Descriptor, names: tuple[str, ...]) -> ColumnLayout:
        fs = tuple(Field.of(message, n) for n in names)
        dtypes = tuple(_DTYPES[message.fields_by_name[n].type] for n in names)
        return cls(fs, dtypes, {f.number: i for i, f in enumerate(fs)})

    @property
    def keys(self) -> tuple[int, ...]:
        return tuple(f.key for f in self.fields)

    def encode(self, arrays: tuple[npt.ArrayLike, ...]) -> bytes:
        """The message from arrays (one per field, in layout order); empty columns left out."""
        out = bytearray()
        for f, dtype, a in zip(self.fields, self.dtypes, arrays, strict=True):
            arr = np.ascontiguousarray(a, dtype=dtype)
            if len(arr):
                out += f.key_bytes
                out += encode_varint(arr.nbytes)
                out += arr.tobytes()
        return bytes(out)

    def decode(self, raw: bytes) -> list[npt.NDArray[Any]]:
        """Arrays of the message's packed columns, in layout order (read-only views of `raw`).

        `raw` is usually the canonical re-serialisation of a *Columns message by the protobuf
        runtime: each known repeated field once, packed (proto3 default), in field order,
        unknown fields (kept by the runtime) after them. Unpacked or split encodings from an
        agent were already normalised by parsing; the loop still accepts repeats so a
        different runtime cannot make it wrong. A field this reader does not know (a newer
        contract's addition, or a known number with an unexpected wire type, which the
        runtime also kept as unknown) is skipped: the contract evolves by adding fields.
        """
        got: list[npt.NDArray[Any] | None] = [None] * len(self.fields)
        pos = 0
        end = len(raw)
        while pos < end:
            try:
                key, pos = read_varint(raw, pos)
                number, wire_type = key >> 3, key & 7
                i = self.slot.get(number)
                if wire_type != WIRE_LEN or i is None:
                    pos = skip_field(raw, pos, wire_type, number)
                    continue
                length, pos = read_varint(raw, pos)
            except ProtocolError as exc:
                raise ProtocolError("columns", f"{exc} in columns") from None
            dtype = self.dtypes[i]
            if pos + length > end:
                raise ProtocolError("columns", "truncated packed column")
            if length % dtype.itemsize:
                raise ProtocolError("columns", f"packed column {number} length {length} not a multiple")
            arr = np.frombuffer(raw, dtype=dtype, count=length // dtype.itemsize, offset=pos)
            prev = got[i]
            got[i] = arr if prev is None else np.concatenate((prev, arr))
            pos += length
        return [a if a is not None else np.empty(0, dtype=self.dtypes[i]) for i, a in enumerate(got)]


_SAMPLE = ("series_index", "time_unix_nano", "value")
_PERIOD = ("series_index", "start_time_unix_nano", "time_unix_nano", "value")
COUNTERS = ColumnLayout.of(_MESSAGES["CounterColumns"], _SAMPLE)
GAUGES = ColumnLayout.of(_MESSAGES["GaugeColumns"], _SAMPLE)
DELTAS = ColumnLayout.of(_MESSAGES["DeltaColumns"], _PERIOD)
PERIOD_GAUGES = ColumnLayout.of(_MESSAGES["PeriodGaugeColumns"], _PERIOD)


@dataclass(frozen=True, slots=True)
class Columns:
    """The three columns of one value type; all of equal length once validated."""

    series_index: npt.NDArray[np.uint32]
    time_unix_nano: npt.NDArray[np.int64]
    value: npt.NDArray[np.uint64] | npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.series_index)

    def head(self, n: int) -> Columns:
        """The first n samples (views), or these columns when they have no more."""
        if n >= len(self.series_index):
            return self
        return Columns(self.series_index[:n], self.time_unix_nano[:n], self.value[:n])


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


def counter_columns(batch: pb.Batch) -> Columns:
    """Counter columns of a parsed batch as read-only NumPy arrays (uint64 values)."""
    return Columns(*COUNTERS.decode(batch.counters.SerializeToString()))


def gauge_columns(batch: pb.Batch) -> Columns:
    """Gauge columns of a parsed batch as read-only NumPy arrays (float64 values)."""
    return Columns(*GAUGES.decode(batch.gauges.SerializeToString()))


def delta_columns(batch: pb.Batch) -> PeriodColumns:
    """DeltaColumns of a parsed batch (uint64 counts over [start, end))."""
    if not batch.HasField("deltas"):
        return EMPTY_DELTAS
    return PeriodColumns(*DELTAS.decode(batch.deltas.SerializeToString()))


def period_gauge_columns(batch: pb.Batch) -> PeriodColumns:
    """PeriodGaugeColumns of a parsed batch (float64 statistics over [start, end))."""
    if not batch.HasField("period_gauges"):
        return EMPTY_PERIOD_GAUGES
    return PeriodColumns(*PERIOD_GAUGES.decode(batch.period_gauges.SerializeToString()))


EMPTY_DELTAS = PeriodColumns(*(np.empty(0, dtype=d) for d in DELTAS.dtypes))
EMPTY_PERIOD_GAUGES = PeriodColumns(*(np.empty(0, dtype=d) for d in PERIOD_GAUGES.dtypes))


def encode_columns(
    series_index: npt.ArrayLike, time_unix_nano: npt.ArrayLike, value: npt.ArrayLike, *, gauge: bool
) -> bytes:
    """Encode a CounterColumns (gauge=False) or GaugeColumns message from arrays, without a
    Python object per sample. The result can be merged into a batch:
    `batch.counters.MergeFromString(raw)`."""
    return (GAUGES if gauge else COUNTERS).encode((series_index, time_unix_nano, value))


def encode_period_columns(
    series_index: npt.ArrayLike,
    start_unix_nano: npt.ArrayLike,
    time_unix_nano: npt.ArrayLike,
    value: npt.ArrayLike,
    *,
    gauge: bool,
) -> bytes:
    """Encode a DeltaColumns (gauge=False) or PeriodGaugeColumns message from arrays."""
    return (PERIOD_GAUGES if gauge else DELTAS).encode((series_index, start_unix_nano, time_unix_nano, value))


# ------------------------------------------------------------------ whole batches


def parse_batch(data: bytes) -> pb.Batch:
    """Parse batch bytes; raise ProtocolError (not a protobuf exception) when malformed."""
    batch = pb.Batch()
    try:
        batch.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError, but upb may raise others
        raise ProtocolError("not_a_batch", f"not a telemetry.v1.Batch: {exc}") from exc
    return batch


def peek_seq(data: bytes) -> int:
    """Best-effort `seq` of bytes that did not parse as a Batch; 0 when unknown.

    Walks the top-level fields until the first one that is malformed, so a batch broken
    after its header still has its nack tied to its seq (see Ack in the .proto).
    """
    pos = 0
    seq = 0
    try:
        while pos < len(data):
            key, pos = read_varint(data, pos)
            number, wire_type = key >> 3, key & 7
            if number == 0:
                break
            if key == BATCH.seq.key:
                seq, pos = read_varint(data, pos)
                continue
            pos = skip_field(data, pos, wire_type, number)
    except ProtocolError:
        pass
    return seq if 0 < seq < 2**64 else 0
