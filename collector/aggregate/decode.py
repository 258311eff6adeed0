"""Kafka record -> validated column arrays: the aggregator's decoder.

First stage of the aggregator: takes the record value exactly as the agent sent it (a
telemetry.v1.Batch), parses it once and hands out the packed columns as NumPy arrays
(collector/wire.py) - no Python object per sample. A record that is not a valid batch
raises ProtocolError with a short reason; the service sends it to the dead-letter topic.

The series table is usually byte-identical from one batch of an agent to the next, so the
decoder also returns its raw bytes (`table_key`) when the batch is canonically encoded;
the state caches the per-table mapping under that key and skips per-series Python work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from collector import wire
from collector.aggregate.periods import decode_periods
from collector.errors import ProtocolError
from collector.proto.telemetry.v1 import telemetry_pb2 as pb

SCHEMA_HEADER = wire.SCHEMA.encode()
_SERIES_TAG = 0x32  # field 6, wire type 2
_COUNTERS_TAG = 0x3A  # field 7, wire type 2
_GAUGES_TAG = 0x42  # field 8, wire type 2
_DELTAS_TAG = 0x4A  # field 9, wire type 2
_PERIOD_GAUGES_TAG = 0x52  # field 10, wire type 2
# The column fields after the series table, in field order (canonical serialisation).
_TAIL = (("counters", _COUNTERS_TAG), ("gauges", _GAUGES_TAG), ("deltas", _DELTAS_TAG),
         ("period_gauges", _PERIOD_GAUGES_TAG))


@dataclass(frozen=True, slots=True)
class Decoded:
    batch: pb.Batch
    agent_id: str
    seq: int
    site_id: str
    boot_id: str
    table_key: bytes | None
    counters: wire.Columns
    gauges: wire.Columns
    # Period samples (collector/aggregate/periods.py): DELTA counts and period statistics.
    deltas: wire.PeriodColumns = wire.EMPTY_DELTAS
    period_gauges: wire.PeriodColumns = wire.EMPTY_PERIOD_GAUGES

    @property
    def n_samples(self) -> int:
        return len(self.counters) + len(self.gauges) + len(self.deltas) + len(self.period_gauges)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise IndexError
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise IndexError


def _skip(buf: bytes, pos: int, wire_type: int) -> int:
    if wire_type == 0:
        return _varint(buf, pos)[1]
    if wire_type == 1:
        return pos + 8
    if wire_type == 2:
        length, pos = _varint(buf, pos)
        return pos + length
    if wire_type == 5:
        return pos + 4
    raise IndexError


def _len_field(tag: int, size: int) -> int:
    """Bytes a length-delimited field of `size` payload bytes takes: tag, varint length, payload."""
    n, rest = 1, size
    while rest >= 0x80:
        rest >>= 7
        n += 1
    return 1 + n + size


def series_table_bytes(data: bytes, batch: pb.Batch) -> bytes | None:
    """Raw bytes of the series table when the batch is laid out canonically, else None.

    Canonical means: header fields (1..5), then every series entry, then counters and
    gauges, as every protobuf serializer writes them. Only the header fields are walked in
    Python; the end of the table follows from the canonical size of the two column fields.
    """
    try:
        pos = 0
        end = len(data)
        while pos < end:
            key, p = _varint(data, pos)
            if key >> 3 >= 6:
                break
            pos = _skip(data, p, key & 7)
        tail = 0
        first = None
        for name, tag in _TAIL:
            if batch.HasField(name):
                tail += _len_field(tag, getattr(batch, name).ByteSize())
                first = tag if first is None else first
        stop = end - tail
        if stop < pos:
            return None
        if stop < end and data[stop] != first:
            # The tail must start with the first column field present exactly there.
            return None
        if stop > pos and data[pos] != _SERIES_TAG:
            return None
        return data[pos:stop]
    except IndexError:
        return None


def table_is_series_only(table: bytes) -> bool:
    """True when `table` is a sequence of series entries (field 6) and nothing else."""
    try:
        pos = 0
        while pos < len(table):
            key, pos = _varint(table, pos)
            if key != _SERIES_TAG:
                return False
            length, pos = _varint(table, pos)
            pos += length
        return pos == len(table)
    except IndexError:
        return False


def decode(value: bytes | None, headers: dict[str, bytes] | None = None) -> Decoded:
    """Parse and check one record value; raise ProtocolError(reason) when it is unusable."""
    if headers is not None:
        schema = headers.get("schema")
        if schema is not None and schema != SCHEMA_HEADER:
            raise ProtocolError("schema")
    if not value:
        raise ProtocolError("empty")
    batch = wire.parse_batch(value)
    if not batch.agent_id:
        raise ProtocolError("no_agent_id")
    if batch.seq == 0:
        raise ProtocolError("no_seq")
    if not batch.site.site_id:
        raise ProtocolError("no_site")
    try:
        cc = wire.counter_columns(batch)
        gc = wire.gauge_columns(batch)
    except ProtocolError as exc:
        raise ProtocolError("columns") from exc
    n_series = len(batch.series)
    for cols in (cc, gc):
        if not len(cols.series_index) == len(cols.time_unix_nano) == len(cols.value):
            raise ProtocolError("column_lengths")
        if len(cols) and int(cols.series_index.max()) >= n_series:
            raise ProtocolError("series_index")
        if len(cols) and int(cols.time_unix_nano.min()) < 0:
            # Event time before 1970: the ingest refuses it; from elsewhere it would land in
            # a negative pane, which the (series, pane) grouping key cannot represent.
            raise ProtocolError("time_range")
    if len(gc) and not np.isfinite(gc.value).all():
        # A gauge must be a number; NaN/Inf would poison min/max/avg of a whole window.
        raise ProtocolError("gauge_not_finite")
    deltas, period_gauges = decode_periods(batch, n_series)
    return Decoded(
        batch=batch,
        agent_id=batch.agent_id,
        seq=batch.seq,
        site_id=batch.site.site_id,
        boot_id=batch.boot_id,
        table_key=series_table_bytes(value, batch),
        counters=cc,
        gauges=gc,
        deltas=deltas,
        period_gauges=period_gauges,
    )
