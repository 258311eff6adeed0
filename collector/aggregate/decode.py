"""Kafka record -> validated column arrays: the aggregator's decoder.

First stage of the aggregator: takes the record value exactly as the agent sent it (a
telemetry.v1.Batch), parses it once and hands out the packed columns as NumPy arrays
(collector/wire.py) - no Python object per sample. A record that is not a valid batch
raises ProtocolError with a short reason; the service sends it to the dead-letter topic.

The series table is usually byte-identical from one batch of an agent to the next, so the
decoder also returns its raw bytes (`table_key`) when the batch is canonically encoded;
the state caches the per-table mapping under that key and skips per-series Python work.

`Decoder` remembers each agent's last table and, when the next record repeats it byte for
byte, reads the record without the protobuf runtime at all: the few header fields are
walked in Python, the table is one memory comparison, the packed columns are NumPy views.
Anything it does not expect (a new table, a field it does not know, an unpacked column, a
repeated field) goes through the full parse instead, so both paths accept exactly the same
records and give the same result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError

from collector import wire
from collector.aggregate.periods import decode_periods
from collector.errors import ProtocolError
from collector.kafka import SCHEMA_HEADER
from collector.proto.telemetry.v1 import telemetry_pb2 as pb


def _key(f: wire.Field) -> int:
    """The key of a Batch field, which the fast paths compare with one byte of the record."""
    if len(f.key_bytes) != 1:
        raise ValueError(f"Batch.{f.name} (field {f.number}) has a key of more than one byte")
    return f.key


_SERIES_TAG = _key(wire.BATCH.series)
_COUNTERS_TAG = _key(wire.BATCH.counters)
_GAUGES_TAG = _key(wire.BATCH.gauges)
_K_GAP_FIRST = _key(wire.BATCH.unissued_seq_first)
_K_GAP_LAST = _key(wire.BATCH.unissued_seq_last)
# The fields after the series table, in field order (canonical serialisation).
_TAIL = (wire.BATCH.counters, wire.BATCH.gauges, wire.BATCH.deltas, wire.BATCH.period_gauges)
_GAPS = (wire.BATCH.unissued_seq_first, wire.BATCH.unissued_seq_last)
_varint = wire.read_varint  # bound once: the fast paths call it per field


@dataclass(frozen=True, slots=True)
class Decoded:
    batch: pb.Batch | None  # None when read by the fast path (see Decoder)
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
    country: str = ""
    region: str = ""

    @property
    def n_samples(self) -> int:
        return len(self.counters) + len(self.gauges) + len(self.deltas) + len(self.period_gauges)

    def series(self) -> Sequence[pb.Series]:
        """The batch's series table (parsed from its bytes when the fast path read it)."""
        if self.batch is not None:
            return self.batch.series
        assert self.table_key is not None
        return pb.Batch.FromString(self.table_key).series


def series_table_bytes(data: bytes, batch: pb.Batch) -> bytes | None:
    """Raw bytes of the series table when the batch is laid out canonically, else None.

    Canonical means: header fields (1..5), then every series entry, then the column fields
    and the unissued seq range (14-15), as every protobuf serializer writes them. Only the
    header fields are walked in Python; the end of the table follows from the canonical size
    of the fields after it.
    """
    try:
        pos = 0
        end = len(data)
        while pos < end:
            key, p = _varint(data, pos)
            if key >> 3 >= wire.BATCH.series.number:
                break
            pos = wire.skip_field(data, p, key & 7, key >> 3)
        tail = 0
        first = None
        for f in _TAIL:
            if batch.HasField(f.name):
                tail += f.len_delimited_size(getattr(batch, f.name).ByteSize())
                first = f.key if first is None else first
        for f in _GAPS:
            value = getattr(batch, f.name)
            if value:  # the unissued seq range: after the columns; proto3 leaves a zero out
                tail += len(f.key_bytes) + wire.varint_size(value)
                first = f.key if first is None else first
        stop = end - tail
        if stop < pos:
            return None
        if stop < end and data[stop] != first:
            # The tail must start with the first column field present exactly there.
            return None
        if stop > pos and data[pos] != _SERIES_TAG:
            return None
        return data[pos:stop]
    except (IndexError, ProtocolError):
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
    except ProtocolError:
        return False


Headers = Mapping[str, bytes] | Sequence[tuple[str, bytes]]
RawRecord = tuple[int, bytes | None, Headers | None]  # (offset, value, headers) of a Kafka record


def _plain_headers(headers: Headers) -> bool:
    """Headers as the ingest writes them (the schema, then agent_id and seq) or the schema
    alone: nothing in them to look at."""
    return (
        isinstance(headers, (tuple, list))  # (a tuple of types: no union built per call)
        and headers[0] == _SCHEMA_OK
        and (
            len(headers) == 1
            or (len(headers) == 3 and headers[1][0] == "agent_id" and headers[2][0] == "seq")
        )
    )


def _check_headers(headers: Headers | None) -> None:
    if not headers:
        return
    if isinstance(headers, Mapping):
        schema = headers.get("schema")
        if schema is not None and schema != SCHEMA_HEADER:
            raise ProtocolError("schema")
        return
    for name, val in headers:
        if name == "schema" and val != SCHEMA_HEADER:
            raise ProtocolError("schema")


def _check_columns(cc: wire.Columns, gc: wire.Columns, n_series: int) -> None:
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


def decode(value: bytes | None, headers: Headers | None = None) -> Decoded:
    """Parse and check one record value; raise ProtocolError(reason) when it is unusable."""
    _check_headers(headers)
    if not value:
        raise ProtocolError("empty")
    return _decode_full(value)


def _decode_full(value: bytes) -> Decoded:
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
    _check_columns(cc, gc, len(batch.series))
    deltas, period_gauges = decode_periods(batch, len(batch.series))
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
        country=batch.site.country,
        region=batch.site.region,
    )


# Keys of the header fields of a Batch (before the series table).
_K_AGENT = _key(wire.BATCH.agent_id)
_K_SEQ = _key(wire.BATCH.seq)
_K_SITE = _key(wire.BATCH.site)
_K_BOOT = _key(wire.BATCH.boot_id)
_K_CREATED = _key(wire.BATCH.created_unix_nano)
_CREATED_SIZE = 1 + 8  # its one-byte key and sfixed64 value
if wire.BATCH.created_unix_nano.wire_type != wire.WIRE_FIXED64:
    raise ValueError("Batch.created_unix_nano must be a 64-bit fixed-width field")
# Keys of the three packed columns, the same in CounterColumns and GaugeColumns.
_K_COL = wire.COUNTERS.keys
if wire.GAUGES.keys != _K_COL or any(k >= 0x80 for k in _K_COL):
    raise ValueError("CounterColumns and GaugeColumns must share one-byte column keys")
_MAX_AGENTS = 65536
_SCHEMA_OK = ("schema", SCHEMA_HEADER)
_EMPTY = (b"", b"", b"")


def unissued_range(first: int, last: int, seq: int) -> tuple[int, int] | None:
    """The unissued seq range a batch declares, when it is usable: both ends set, in order,
    and before the batch's own seq (a range that is not is ignored: it is only a hint for the
    completeness ledger, never a reason to refuse the batch)."""
    if first and first <= last < seq:
        return (first, last)
    return None


class Rec:
    """One record as the poll path reads it: header scalars and the raw little-endian bytes of
    each packed column (series index, time, value), joined per poll into one array each."""

    __slots__ = (
        "agent_id",
        "batch",
        "boot_id",
        "c",
        "country",
        "deltas",
        "g",
        "n_series",
        "nc",
        "ng",
        "period_gauges",
        "region",
        "seq",
        "site_id",
        "table_key",
        "unissued",
        "value",
    )

    def __init__(
        self,
        value: bytes,
        agent_id: str,
        seq: int,
        site: tuple[str, str, str],
        boot_id: str,
        table_key: bytes | None,
        n_series: int,
        c: tuple[bytes, bytes, bytes],
        g: tuple[bytes, bytes, bytes],
        batch: pb.Batch | None,
    ) -> None:
        self.value = value
        self.agent_id = agent_id
        self.seq = seq
        self.site_id, self.country, self.region = site
        self.boot_id = boot_id
        self.table_key = table_key
        self.n_series = n_series
        self.c = c
        self.g = g
        self.nc = len(c[0]) >> 2
        self.ng = len(g[0]) >> 2
        self.batch = batch
        # period samples (collector/aggregate/periods.py); only the full parse reads them
        self.deltas = wire.EMPTY_DELTAS
        self.period_gauges = wire.EMPTY_PERIOD_GAUGES
        # seqs [first, last] the agent declares it never issued (Batch fields 14-15), or None
        self.unissued: tuple[int, int] | None = None

    @property
    def n_samples(self) -> int:
        return self.nc + self.ng + len(self.deltas) + len(self.period_gauges)

    def series(self) -> Sequence[pb.Series]:
        if self.batch is not None:
            return self.batch.series
        assert self.table_key is not None
        return pb.Batch.FromString(self.table_key).series


def _col_bytes(data: bytes, pos: int, end: int) -> tuple[bytes, bytes, bytes] | None:
    """The three packed columns of a *Columns message at data[pos:end], each at most once and
    in field order; None for anything else (the full parse handles it)."""
    out = [b"", b"", b""]
    k = 0
    while pos < end:
        key = data[pos]
        while k < 3 and _K_COL[k] != key:
            k += 1
        if k == 3:
            return None
        p = pos + 1
        n = data[p]
        if n < 0x80:  # one-byte length (inlined: a call per field costs more than the rest)
            p += 1
        else:
            n, p = _varint(data, p)
        if p + n > end:
            return None
        out[k] = data[p : p + n]
        k += 1
        pos = p + n
    if len(out[0]) & 3 or len(out[1]) & 7 or len(out[2]) & 7:
        return None
    if len(out[0]) >> 2 != len(out[1]) >> 3 or len(out[1]) != len(out[2]):
        return None
    return out[0], out[1], out[2]


class _Layout:
    """An agent's header as its last fast-path record had it: the bytes of the site and boot
    fields between seq and created (or the table), whether created was there, its table;
    and, once `_known` has read one of its records, how that record's counter columns were
    laid out (see `_known`)."""

    __slots__ = ("agent", "boot", "columns", "created", "known", "mid", "names")

    def __init__(
        self,
        agent: str,
        mid: bytes,
        boot: str,
        names: tuple[str, str, str],
        created: bool,
        known: tuple[bytes, int],
    ) -> None:
        self.agent = agent
        self.mid = mid
        self.boot = boot
        self.names = names
        self.created = created
        self.known = known
        # (bytes from the counters field's key to the series index data, then the sizes and
        # keys of the three packed columns): a record whose counters start with these bytes
        # and end the record has its columns at the same offsets
        self.columns: _ColumnLayout | None = None


class _ColumnLayout:
    __slots__ = ("head", "key1", "key2", "n0", "n1", "n2", "nh", "nk1", "nk2", "span")

    def __init__(self, head: bytes, n0: int, key1: bytes, n1: int, key2: bytes, n2: int) -> None:
        self.head, self.n0, self.key1, self.n1, self.key2, self.n2 = head, n0, key1, n1, key2, n2
        self.nh, self.nk1, self.nk2 = len(head), len(key1), len(key2)  # (read per record)
        self.span = self.nh + n0 + self.nk1 + n1 + self.nk2 + n2


@dataclass(frozen=True, slots=True)
class KnownPoll:
    """Records read by `Decoder.read_known`: per record its agent's layout, its seq and its
    counter and gauge sample counts; the records' columns, concatenated in record order."""

    layouts: list[_Layout]
    seqs: list[int]
    nc: list[int]
    ng: list[int]
    counters: wire.Columns
    gauges: wire.Columns

    def first_bad(self) -> int:
        """The position of the first record that fails `check`, or -1."""
        n_series = np.fromiter((lay.known[1] for lay in self.layouts), np.int64, len(self.layouts))
        bad = _bad_records(n_series, self.counters, self.nc, self.gauges, self.ng)
        return int(np.argmax(bad)) if bad.any() else -1


def _three_columns(data: bytes, pos: int, end: int) -> tuple[bytes, bytes, bytes] | None:
    """`_col_bytes` for the usual case - all three columns present, lengths below 2^14 -
    with the length varints read inline; None otherwise (then `_col_bytes` decides)."""
    out: list[bytes] = []
    for tag in _K_COL:
        if pos + 2 >= end or data[pos] != tag:
            return None
        n = data[pos + 1]
        if n < 0x80:
            pos += 2
        else:
            hi = data[pos + 2]
            if hi >= 0x80:
                return None
            n = (n & 0x7F) | (hi << 7)
            pos += 3
        out.append(data[pos : pos + n])
        pos += n
    if pos != end:
        return None
    a, b, c = out
    if len(a) & 3 or len(b) & 7 or len(a) >> 2 != len(b) >> 3 or len(b) != len(c):
        return None
    return a, b, c


def _column_layout(data: bytes, at: int, cols: tuple[bytes, bytes, bytes]) -> _ColumnLayout | None:
    """How the counters field at data[at:] (which ends the record) lays out its three columns,
    read back from the slices `_three_columns`/`_col_bytes` took; None when a column is empty."""
    a, b, c = cols
    if not (a and b and c):
        return None
    end = len(data)
    q2 = end - len(c)
    key2 = data[q2 - 1 - wire.varint_size(len(c)) : q2]
    r1 = q2 - len(key2)
    q1 = r1 - len(b)
    key1 = data[q1 - 1 - wire.varint_size(len(b)) : q1]
    r0 = q1 - len(key1)
    q0 = r0 - len(a)
    head = data[at:q0]
    # the slices must be exactly where this reading puts them (else no layout is kept)
    if data[q0:r0] != a or data[q1:r1] != b or key1[0] != _K_COL[1] or key2[0] != _K_COL[2]:
        return None
    if wire.encode_varint(len(b)) != key1[1:] or wire.encode_varint(len(c)) != key2[1:]:
        return None
    return _ColumnLayout(head, len(a), key1, len(b), key2, len(c))


class Decoder:
    """Reads records for the aggregator, remembering each agent's last series table.

    The fast path applies only when a record repeats its agent's previous table exactly and
    carries nothing but fields 1..8, each once, in canonical order, with packed columns of
    consistent lengths; the per-sample checks (series index in range, event time, finite
    gauges) are then done for a whole poll at once (`check`). Any other record goes through
    the full parse (`decode`), which applies the same checks, so a record is accepted or
    refused identically by both paths.
    """

    def __init__(self) -> None:
        self._tables: dict[str, tuple[bytes, int]] = {}  # agent_id -> (table bytes, series)
        self._sites: dict[bytes, tuple[str, str, str]] = {}
        # agent field bytes (tag, length, id) -> the agent's last header layout (see _known)
        self._layouts: dict[bytes, _Layout] = {}
        self.fast = 0  # records read by the fast path (for tests and the benchmark)

    def read(self, value: bytes | None, headers: Headers | None = None) -> Rec:
        """One record; raises ProtocolError(reason) for a record the full parse refuses.
        A record read by the fast path still needs `check` (done per poll)."""
        # (the headers as the ingest writes them - the schema, then agent_id and seq - or the
        # schema alone, need no look)
        if headers and not _plain_headers(headers):
            _check_headers(headers)
        if not value:
            raise ProtocolError("empty")
        try:
            r = self._known(value)
            if r is None:
                r = self._fast(value)
        except (IndexError, UnicodeDecodeError, ProtocolError):
            r = None
        if r is not None:
            self.fast += 1
            return r
        d = _decode_full(value)
        assert d.batch is not None
        key = d.table_key
        if key is not None and table_is_series_only(key):
            if len(self._tables) >= _MAX_AGENTS:
                self._tables.clear()
            self._tables[d.agent_id] = (key, len(d.batch.series))
        cc, gc = d.counters, d.gauges
        r = Rec(
            value,
            d.agent_id,
            d.seq,
            (d.site_id, d.country, d.region),
            d.boot_id,
            key,
            len(d.batch.series),
            (cc.series_index.tobytes(), cc.time_unix_nano.tobytes(), cc.value.tobytes()),
            (gc.series_index.tobytes(), gc.time_unix_nano.tobytes(), gc.value.tobytes()),
            d.batch,
        )
        r.deltas, r.period_gauges = d.deltas, d.period_gauges
        r.unissued = unissued_range(d.batch.unissued_seq_first, d.batch.unissued_seq_last, d.seq)
        return r

    def _fast(self, data: bytes) -> Rec | None:
        pos, end = 0, len(data)
        agent = boot = ""
        seq = 0
        site = b""
        seen = 0
        key = -1
        # where the layout fields end: agent, seq, (site, boot), created; -1 = not in field order
        a_end = seq_end = mid_end = -1
        created = False
        while pos < end:
            key = data[pos]
            if key in (_SERIES_TAG, _COUNTERS_TAG, _GAUGES_TAG):
                break
            bit = 1 << (key >> 3)
            if seen & bit:
                return None  # a repeated field: last-one-wins / merge rules, leave to protobuf
            in_order = seen < bit
            seen |= bit
            if key == _K_SEQ:
                seq, pos = _varint(data, pos + 1)
                if in_order and a_end >= 0:
                    seq_end = pos
                continue
            if key == _K_CREATED:
                if in_order and seq_end >= 0:
                    mid_end, created = pos, True
                pos += _CREATED_SIZE
                continue
            if key != _K_AGENT and key != _K_SITE and key != _K_BOOT:
                return None
            p = pos + 1
            n = data[p]
            if n < 0x80:
                p += 1
            else:
                n, p = _varint(data, p)
            if p + n > end:
                return None
            if key == _K_AGENT:
                agent = data[p : p + n].decode()
                if pos == 0:
                    a_end = p + n
            elif key == _K_BOOT:
                boot = data[p : p + n].decode()
            else:
                site = data[p : p + n]
            pos = p + n
        if pos > end or not agent or not seq or not site:
            return None
        n_series = 0
        table = b""
        known = None
        if key == _SERIES_TAG:
            known = self._tables.get(agent)
            if known is None or not data.startswith(known[0], pos):
                return None
            if seq_end >= 0 and mid_end < 0:
                mid_end = pos
            table, n_series = known
            pos += len(table)
            if pos < end and data[pos] == _SERIES_TAG:
                return None  # more series than the known table
        cols = [_EMPTY, _EMPTY]
        for i, tag in enumerate((_COUNTERS_TAG, _GAUGES_TAG)):
            if pos < end and data[pos] == tag:
                n, p = _varint(data, pos + 1)
                if p + n > end:
                    return None
                got = _col_bytes(data, p, p + n)
                if got is None:
                    return None
                cols[i] = got
                pos = p + n
        # fields 14-15 (unissued seqs), written last by the agents of a restarted boot
        gap_first = gap_last = 0
        if pos < end and data[pos] == _K_GAP_FIRST:
            gap_first, pos = _varint(data, pos + 1)
        if pos < end and data[pos] == _K_GAP_LAST:
            gap_last, pos = _varint(data, pos + 1)
        if pos != end:
            return None  # a field after the columns (newer contract, or non-canonical order)
        names = self._sites.get(site)
        if names is None:
            try:
                sm = pb.Site.FromString(site)
            except DecodeError:
                return None
            names = (sm.site_id, sm.country, sm.region)
            if len(self._sites) >= _MAX_AGENTS:
                self._sites.clear()
            self._sites[site] = names
        if not names[0]:
            return None
        if known is not None and mid_end >= 0 and 0 < a_end < 130:
            if len(self._layouts) >= _MAX_AGENTS:
                self._layouts.clear()
            self._layouts[data[:a_end]] = _Layout(agent, data[seq_end:mid_end], boot, names, created, known)
        r = Rec(data, agent, seq, names, boot, table, n_series, cols[0], cols[1], None)
        if gap_first or gap_last:  # (_known never reads a record with them: it ends before)
            r.unissued = unissued_range(gap_first, gap_last, seq)
        return r

    def _known(self, data: bytes) -> Rec | None:
        """A record laid out exactly like its agent's previous one (agent, seq, the same site
        and boot fields, created, the same series table, then the columns): read with a few
        comparisons instead of walking the header. A subset of what `_fast` reads, with the
        same result; None for anything else."""
        h = self._header(data)
        if h is None:
            return None
        lay, seq, p = h
        got = self._columns(lay, data, p)
        if got is None:
            return None
        c, g, gap_first, gap_last = got
        table, n_series = lay.known
        r = Rec(data, lay.agent, seq, lay.names, lay.boot, table, n_series, c, g, None)
        if gap_first or gap_last:
            r.unissued = unissued_range(gap_first, gap_last, seq)
        return r

    def _header(self, data: bytes) -> tuple[_Layout, int, int] | None:
        """Of a record whose header is laid out exactly like its agent's previous one (agent,
        seq, the same site and boot fields, created, the same series table): that layout, the
        seq and where the fields after the table start; None otherwise."""
        if data[0] != _K_AGENT or data[1] >= 0x80:
            return None
        p = 2 + data[1]
        lay = self._layouts.get(data[:p])
        if lay is None or data[p] != _K_SEQ or self._tables.get(lay.agent) is not lay.known:
            return None
        seq = data[p + 1]
        if seq < 0x80:
            p += 2
        elif data[p + 2] < 0x80:  # (seqs below 2^14 and 2^21 inline: no call per record)
            seq = (seq & 0x7F) | data[p + 2] << 7
            p += 3
        elif data[p + 3] < 0x80:
            seq = (seq & 0x7F) | (data[p + 2] & 0x7F) << 7 | data[p + 3] << 14
            p += 4
        else:
            seq, p = _varint(data, p + 1)
        mid = lay.mid
        if not seq or not data.startswith(mid, p):
            return None
        p += len(mid)
        if lay.created:
            if data[p] != _K_CREATED:
                return None
            p += _CREATED_SIZE
        table = lay.known[0]
        if not data.startswith(table, p):
            return None
        return lay, seq, p + len(table)

    def _columns(
        self, lay: _Layout, data: bytes, p: int
    ) -> tuple[tuple[bytes, bytes, bytes], tuple[bytes, bytes, bytes], int, int] | None:
        """The counter and gauge columns and the unissued seq fields (14-15, 0 when absent)
        that end a record at data[p:] (`_header`'s position), or None when anything else is
        there."""
        end = len(data)
        lc = lay.columns
        if lc is not None and p + lc.span == end and data.startswith(lc.head, p):
            # counters only, laid out like this agent's previous record: the three columns
            # at the same offsets (their keys and sizes checked, so the same checks hold)
            q = p + lc.nh
            r0 = q + lc.n0
            if data.startswith(lc.key1, r0):
                q1 = r0 + lc.nk1
                r1 = q1 + lc.n1
                if data.startswith(lc.key2, r1):
                    return (data[q:r0], data[q1:r1], data[r1 + lc.nk2 : end]), _EMPTY, 0, 0
        cols_at = p
        cols = [_EMPTY, _EMPTY]
        for i, tag in ((0, _COUNTERS_TAG), (1, _GAUGES_TAG)):
            if p < end and data[p] == tag:
                n, q = _varint(data, p + 1)
                if q + n > end:
                    return None
                got = _three_columns(data, q, q + n) or _col_bytes(data, q, q + n)
                if got is None:
                    return None
                cols[i] = got
                p = q + n
        gap_first = gap_last = 0  # fields 14-15 (unissued seqs), as in _fast
        if p < end and data[p] == _K_GAP_FIRST:
            gap_first, p = _varint(data, p + 1)
        if p < end and data[p] == _K_GAP_LAST:
            gap_last, p = _varint(data, p + 1)
        if p != end:
            return None
        if not (gap_first or gap_last) and cols[1] is _EMPTY and cols[0] is not _EMPTY:
            lay.columns = _column_layout(data, cols_at, cols[0])
        return cols[0], cols[1], gap_first, gap_last

    def read_known(self, records: Sequence[RawRecord], max_samples: int | None = None) -> KnownPoll | None:
        """The longest prefix of `records` that `_known` reads without a Rec: records whose
        headers need no look, laid out like their agent's previous one, without unissued seq
        fields (and, given `max_samples`, the shortest such prefix holding that many samples);
        None when the first record is not one. Its per-sample checks are not done
        (`KnownPoll.first_bad`): what `read` and `check` give for the same records. Not
        counted in `fast`: the caller counts the records it keeps."""
        lays: list[_Layout] = []
        seqs: list[int] = []
        cs: list[tuple[bytes, bytes, bytes]] = []
        gs: list[tuple[bytes, bytes, bytes]] = []
        nc: list[int] = []
        ng: list[int] = []
        budget = max_samples if max_samples is not None else -1
        header, columns = self._header, self._columns
        for _, value, headers in records:
            if (headers and not _plain_headers(headers)) or not value:
                break
            try:
                h = header(value)
                if h is None:
                    break
                got = columns(h[0], value, h[2])
            except (IndexError, ProtocolError):
                break
            if got is None or got[2] or got[3]:
                break
            lays.append(h[0])
            seqs.append(h[1])
            cs.append(got[0])
            gs.append(got[1])
            nc.append(len(got[0][0]) >> 2)
            ng.append(len(got[1][0]) >> 2)
            if budget > 0:
                budget -= nc[-1] + ng[-1]
                if budget <= 0:
                    break
        if not lays:
            return None
        return KnownPoll(lays, seqs, nc, ng, _joined(cs, wire.COUNTERS), _joined(gs, wire.GAUGES))

    def decode(self, value: bytes | None, headers: Headers | None = None) -> Decoded:
        """One record fully checked, as `decode()` (the fast path when it applies)."""
        r = self.read(value, headers)
        cc, gc = poll_columns([r])
        if check([r], cc, gc):
            return decode(r.value)  # raises the full parse's reason
        return Decoded(
            r.batch,
            r.agent_id,
            r.seq,
            r.site_id,
            r.boot_id,
            r.table_key,
            cc,
            gc,
            r.deltas,
            r.period_gauges,
            r.country,
            r.region,
        )


def _joined(cols: Sequence[tuple[bytes, bytes, bytes]], layout: wire.ColumnLayout) -> wire.Columns:
    """Records' packed columns (raw bytes each), concatenated in record order."""
    a, b, c = (np.frombuffer(b"".join(x[k] for x in cols), dtype=layout.dtypes[k]) for k in range(3))
    return wire.Columns(a, b, c)


def poll_columns(recs: Sequence[Rec]) -> tuple[wire.Columns, wire.Columns]:
    """Counter and gauge columns of a poll's records, concatenated in record order."""
    return _joined([r.c for r in recs], wire.COUNTERS), _joined([r.g for r in recs], wire.GAUGES)


def check(recs: Sequence[Rec], cc: wire.Columns, gc: wire.Columns) -> list[int]:
    """Positions of records whose samples fail the per-sample checks of the full parse (series
    index out of range, event time before 1970, a non-finite gauge), for a whole poll."""
    n_series = np.fromiter((r.n_series for r in recs), np.int64, len(recs))
    bad = _bad_records(n_series, cc, [r.nc for r in recs], gc, [r.ng for r in recs])
    return np.flatnonzero(bad).tolist()


def _bad_records(
    n_series: np.ndarray, cc: wire.Columns, nc: Sequence[int], gc: wire.Columns, ng: Sequence[int]
) -> np.ndarray:
    """`check`'s mask of records (n_series, nc, ng: per record)."""
    bad = np.zeros(len(n_series), bool)
    for cols, counts in ((cc, nc), (gc, ng)):
        if not len(cols):
            continue
        wrong = (cols.series_index >= np.repeat(n_series, counts)) | (cols.time_unix_nano < 0)
        if cols is gc:
            wrong |= ~np.isfinite(cols.value)
        if wrong.any():
            bad[np.repeat(np.arange(len(n_series)), counts)[wrong]] = True
    return bad
