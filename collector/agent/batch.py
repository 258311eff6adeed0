"""Builds telemetry.v1 batches: the series table plus packed sample columns.

Used by every source of the agent and by the simulator. Scalar samples (`counter`,
`gauge`) suit an agent polling a few hundred series; `counter_columns` / `gauge_columns`
take NumPy arrays for high-rate generators (the simulator) without a Python object per
sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
        return pb.Site(site_id=self.site_id, country=self.country, region=self.region,
                       timezone=self.timezone)


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

    def to_pb(self) -> pb.Series:
        return pb.Series(
            metric=self.metric, kind=self.kind, unit=self.unit,  # type: ignore[arg-type]
            labels=[pb.Label(name=k, value=v) for k, v in self.labels],
            counter_bits=self.counter_bits, start_time_unix_nano=self.start_time_unix_nano,
            scale=self.scale,
        )


def _labels(labels: LabelsT) -> tuple[tuple[str, str], ...]:
    items = labels.items() if isinstance(labels, Mapping) else labels
    return tuple(sorted(items))


def counter_def(metric: str, labels: LabelsT, *, unit: str, bits: int = 64,
                start_time_unix_nano: int = 0, scale: float = 0.0) -> SeriesDef:
    return SeriesDef(metric, pb.COUNTER, unit, _labels(labels), bits, start_time_unix_nano, scale)


def gauge_def(metric: str, labels: LabelsT, *, unit: str, scale: float = 0.0) -> SeriesDef:
    return SeriesDef(metric, pb.GAUGE, unit, _labels(labels), 0, 0, scale)


class BatchBuilder:
    """Accumulates samples of one agent and site; `build()` returns the Batch and resets."""

    def __init__(self, agent_id: str, site: SiteInfo, boot_id: str) -> None:
        self.agent_id = agent_id
        self.site = site
        self.boot_id = boot_id
        self._reset()

    def _reset(self) -> None:
        self._index: dict[SeriesDef, int] = {}
        self._c: tuple[list[int], list[int], list[int]] = ([], [], [])
        self._g: tuple[list[int], list[int], list[float]] = ([], [], [])
        self._c_raw: list[bytes] = []
        self._g_raw: list[bytes] = []
        self._n_raw = 0

    def series_index(self, d: SeriesDef) -> int:
        idx = self._index.get(d)
        if idx is None:
            idx = self._index[d] = len(self._index)
        return idx

    def counter(self, d: SeriesDef, time_unix_nano: int, value: int) -> None:
        i, t, v = self._c
        i.append(self.series_index(d))
        t.append(time_unix_nano)
        v.append(value)

    def gauge(self, d: SeriesDef, time_unix_nano: int, value: float) -> None:
        i, t, v = self._g
        i.append(self.series_index(d))
        t.append(time_unix_nano)
        v.append(value)

    def counter_columns(self, defs: list[SeriesDef], series: npt.NDArray[np.integer],
                        time_unix_nano: npt.NDArray[np.int64],
                        value: npt.NDArray[np.uint64]) -> None:
        """Add many counter samples; `series` indexes into `defs`."""
        table = np.array([self.series_index(d) for d in defs], dtype=np.uint32)
        self._c_raw.append(wire.encode_columns(table[series], time_unix_nano, value, gauge=False))
        self._n_raw += len(series)

    def gauge_columns(self, defs: list[SeriesDef], series: npt.NDArray[np.integer],
                      time_unix_nano: npt.NDArray[np.int64],
                      value: npt.NDArray[np.float64]) -> None:
        table = np.array([self.series_index(d) for d in defs], dtype=np.uint32)
        self._g_raw.append(wire.encode_columns(table[series], time_unix_nano, value, gauge=True))
        self._n_raw += len(series)

    def __len__(self) -> int:
        return len(self._c[0]) + len(self._g[0]) + self._n_raw

    @property
    def series_count(self) -> int:
        return len(self._index)

    def build(self, seq: int, created_unix_nano: int) -> pb.Batch:
        b = pb.Batch(agent_id=self.agent_id, seq=seq, site=self.site.to_pb(),
                     boot_id=self.boot_id, created_unix_nano=created_unix_nano)
        b.series.extend(d.to_pb() for d in self._index)
        ci, ct, cv = self._c
        b.counters.series_index.extend(ci)
        b.counters.time_unix_nano.extend(ct)
        b.counters.value.extend(cv)
        gi, gt, gv = self._g
        b.gauges.series_index.extend(gi)
        b.gauges.time_unix_nano.extend(gt)
        b.gauges.value.extend(gv)
        # Merging appends to repeated fields, after the scalar samples above.
        for raw in self._c_raw:
            b.counters.MergeFromString(raw)
        for raw in self._g_raw:
            b.gauges.MergeFromString(raw)
        self._reset()
        return b
