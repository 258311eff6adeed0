"""Builds telemetry.v1 batches: the series table plus packed sample columns.

Used by every source of the agent and by the simulator. Scalar samples (`counter`,
`gauge`) suit an agent polling a few hundred series; `counter_columns` / `gauge_columns`
take NumPy arrays for high-rate generators (the simulator) without a Python object per
sample. `build()` returns a protobuf Batch; `build_bytes()` returns the same batch already
serialised, without creating protobuf objects per series or sample (the agent's hot path:
each series' table entry is encoded once and reused by every later batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from collector import wire
from collector.proto.telemetry.v1 import telemetry_pb2 as pb

LabelsT = Mapping[str, str] | tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class SiteInfo:
    site_id: str
    country: str  # ISO 3166-1 alpha-2
    region: str
    timezone: str  # IANA

    def to_pb(self) -> pb.Site:
        return pb.Site(site_id=self.site_id, country=self.country, region=self.region, timezone=self.timezone)


@dataclass(frozen=True, slots=True)
class SeriesDef:
    """One row of the series table. Equal defs share one index within a batch."""

    metric: str
    kind: int  # pb.COUNTER or pb.GAUGE
    unit: str
    labels: tuple[tuple[str, str], ...]
    counter_bits: int = 0
    start_time_unix_nano: int = 0
    scale: float = 0.0
    # Cached: a def is hashed at every sample (series_index), labels make that costly.
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "_hash",
            hash(
                (
                    self.metric,
                    self.kind,
                    self.unit,
                    self.labels,
                    self.counter_bits,
                    self.start_time_unix_nano,
                    self.scale,
                )
            ),
        )

    def __hash__(self) -> int:
        return self._hash

    def to_pb(self) -> pb.Series:
        return pb.Series(
            metric=self.metric,
            kind=self.kind,  # type: ignore[arg-type]
            unit=self.unit,
            labels=[pb.Label(name=k, value=v) for k, v in self.labels],
            counter_bits=self.counter_bits,
            start_time_unix_nano=self.start_time_unix_nano,
            scale=self.scale,
        )


_SERIES_BYTES: dict[SeriesDef, bytes] = {}
_SERIES_CACHE_MAX = 1 << 18


def _series_field(d: SeriesDef) -> bytes:
    """The Batch `series` field (one series table entry) for `d`, encoded once."""
    raw = _SERIES_BYTES.get(d)
    if raw is None:
        if len(_SERIES_BYTES) >= _SERIES_CACHE_MAX:
            _SERIES_BYTES.clear()
        raw = _SERIES_BYTES[d] = wire.BATCH.series.len_delimited(d.to_pb().SerializeToString())
    return raw


def _labels(labels: LabelsT) -> tuple[tuple[str, str], ...]:
    items = labels.items() if isinstance(labels, Mapping) else labels
    return tuple(sorted(items))


def counter_def(
    metric: str,
    labels: LabelsT,
    *,
    unit: str,
    bits: int = 64,
    start_time_unix_nano: int = 0,
    scale: float = 0.0,
) -> SeriesDef:
    return SeriesDef(metric, pb.COUNTER, unit, _labels(labels), bits, start_time_unix_nano, scale)


def delta_def(metric: str, labels: LabelsT, *, unit: str, scale: float = 0.0) -> SeriesDef:
    """A DELTA series: each sample is a count over its own period (see `BatchBuilder.delta`)."""
    return SeriesDef(metric, pb.DELTA, unit, _labels(labels), 0, 0, scale)


def gauge_def(metric: str, labels: LabelsT, *, unit: str, scale: float = 0.0) -> SeriesDef:
    return SeriesDef(metric, pb.GAUGE, unit, _labels(labels), 0, 0, scale)


class BatchBuilder:
    """Accumulates samples of one agent and site; `build()` returns the Batch and resets."""

    def __init__(
        self, agent_id: str, site: SiteInfo, boot_id: str, unissued: tuple[int, int] | None = None
    ) -> None:
        self.agent_id = agent_id
        self.site = site
        self.boot_id = boot_id
        # seqs [first, last] the previous process reserved and never issued (Batch fields 14-15)
        self.unissued = unissued
        self._reset()

    def _reset(self) -> None:
        self._index: dict[SeriesDef, int] = {}
        self._c: tuple[list[int], list[int], list[int]] = ([], [], [])
        self._g: tuple[list[int], list[int], list[float]] = ([], [], [])
        self._d: tuple[list[int], list[int], list[int], list[int]] = ([], [], [], [])
        self._pg: tuple[list[int], list[int], list[int], list[float]] = ([], [], [], [])
        self._c_raw: list[bytes] = []
        self._g_raw: list[bytes] = []
        self._n_raw = 0

    def series_index(self, d: SeriesDef) -> int:
        idx = self._index.get(d)
        if idx is None:
            idx = self._index[d] = len(self._index)
        return idx

    # counter() and gauge() run once per sample: series_index is inlined on purpose.
    def counter(self, d: SeriesDef, time_unix_nano: int, value: int) -> None:
        idx = self._index.get(d)
        if idx is None:
            idx = self._index[d] = len(self._index)
        c = self._c
        c[0].append(idx)
        c[1].append(time_unix_nano)
        c[2].append(value)

    def gauge(self, d: SeriesDef, time_unix_nano: int, value: float) -> None:
        idx = self._index.get(d)
        if idx is None:
            idx = self._index[d] = len(self._index)
        g = self._g
        g[0].append(idx)
        g[1].append(time_unix_nano)
        g[2].append(value)

    def delta(self, d: SeriesDef, start_unix_nano: int, end_unix_nano: int, value: int) -> None:
        """A count over the period [start, end) of a DELTA series (not a running total)."""
        cols = self._d
        cols[0].append(self.series_index(d))
        cols[1].append(start_unix_nano)
        cols[2].append(end_unix_nano)
        cols[3].append(value)

    def period_gauge(self, d: SeriesDef, start_unix_nano: int, end_unix_nano: int, value: float) -> None:
        """A statistic (mean, max) over the period [start, end) of a GAUGE series."""
        cols = self._pg
        cols[0].append(self.series_index(d))
        cols[1].append(start_unix_nano)
        cols[2].append(end_unix_nano)
        cols[3].append(value)

    def counter_columns(
        self,
        defs: list[SeriesDef],
        series: npt.NDArray[np.integer],
        time_unix_nano: npt.NDArray[np.int64],
        value: npt.NDArray[np.uint64],
    ) -> None:
        """Add many counter samples; `series` indexes into `defs`."""
        table = np.array([self.series_index(d) for d in defs], dtype=np.uint32)
        self._c_raw.append(wire.encode_columns(table[series], time_unix_nano, value, gauge=False))
        self._n_raw += len(series)

    def gauge_columns(
        self,
        defs: list[SeriesDef],
        series: npt.NDArray[np.integer],
        time_unix_nano: npt.NDArray[np.int64],
        value: npt.NDArray[np.float64],
    ) -> None:
        table = np.array([self.series_index(d) for d in defs], dtype=np.uint32)
        self._g_raw.append(wire.encode_columns(table[series], time_unix_nano, value, gauge=True))
        self._n_raw += len(series)

    def __len__(self) -> int:
        return len(self._c[0]) + len(self._g[0]) + len(self._d[0]) + len(self._pg[0]) + self._n_raw

    @property
    def series_count(self) -> int:
        return len(self._index)

    def build_bytes(self, seq: int, created_unix_nano: int) -> bytes:
        """The serialised Batch (what `build(...).SerializeToString()` means), and reset."""
        f = wire.BATCH
        out = bytearray()
        if self.agent_id:
            out += f.agent_id.len_delimited(self.agent_id.encode())
        out += f.seq.varint(seq)
        out += f.site.len_delimited(self._site_bytes())
        if self.boot_id:
            out += f.boot_id.len_delimited(self.boot_id.encode())
        out += f.created_unix_nano.sfixed64(created_unix_nano)
        for d in self._index:
            out += _series_field(d)
        for field_, cols, raws, gauge in (
            (f.counters, self._c, self._c_raw, False),
            (f.gauges, self._g, self._g_raw, True),
        ):
            body = wire.encode_columns(*cols, gauge=gauge) if cols[0] else b""
            if raws:
                body += b"".join(raws)
            out += field_.len_delimited(body)  # present even when empty, as build() does
        for field_, pcols, gauge in ((f.deltas, self._d, False), (f.period_gauges, self._pg, True)):
            if pcols[0]:  # absent when empty: a batch without periods is as before
                out += field_.len_delimited(wire.encode_period_columns(*pcols, gauge=gauge))
        if self.unissued is not None:
            out += f.unissued_seq_first.varint(self.unissued[0])
            out += f.unissued_seq_last.varint(self.unissued[1])
        self._reset()
        return bytes(out)

    def _site_bytes(self) -> bytes:
        cached = getattr(self, "_site_raw", None)
        if cached is None or cached[0] is not self.site:
            cached = (self.site, self.site.to_pb().SerializeToString())
            self._site_raw = cached
        return cached[1]

    def build(self, seq: int, created_unix_nano: int) -> pb.Batch:
        b = pb.Batch(
            agent_id=self.agent_id,
            seq=seq,
            site=self.site.to_pb(),
            boot_id=self.boot_id,
            created_unix_nano=created_unix_nano,
        )
        if self.unissued is not None:
            b.unissued_seq_first, b.unissued_seq_last = self.unissued
        b.series.extend(d.to_pb() for d in self._index)
        ci, ct, cv = self._c
        b.counters.series_index.extend(ci)
        b.counters.time_unix_nano.extend(ct)
        b.counters.value.extend(cv)
        gi, gt, gv = self._g
        b.gauges.series_index.extend(gi)
        b.gauges.time_unix_nano.extend(gt)
        b.gauges.value.extend(gv)
        if self._d[0]:
            b.deltas.MergeFromString(wire.encode_period_columns(*self._d, gauge=False))
        if self._pg[0]:
            b.period_gauges.MergeFromString(wire.encode_period_columns(*self._pg, gauge=True))
        # Merging appends to repeated fields, after the scalar samples above.
        for raw in self._c_raw:
            b.counters.MergeFromString(raw)
        for raw in self._g_raw:
            b.gauges.MergeFromString(raw)
        self._reset()
        return b
