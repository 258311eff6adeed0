"""Test helpers for the aggregator: build batches with the protobuf classes, and compute
ground truth windows independently of the aggregator (plain Python integers)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from collector.proto.telemetry.v1 import telemetry_pb2 as pb

NS = 1_000_000_000


@dataclass
class SeriesDef:
    metric: str
    labels: dict[str, str]
    kind: int = pb.COUNTER
    bits: int = 64
    start: int = 0
    scale: float = 0.0
    unit: str = "bytes"


def make_batch(
    *, agent: str, seq: int, site: str, country: str = "JP", region: str = "Kanto",
    boot: str = "boot-1", series: list[SeriesDef],
    counters: list[tuple[int, int, int]] = (),  # type: ignore[assignment]
    gauges: list[tuple[int, int, float]] = (),  # type: ignore[assignment]
) -> bytes:
    b = pb.Batch(agent_id=agent, seq=seq, boot_id=boot, created_unix_nano=0,
                 site=pb.Site(site_id=site, country=country, region=region, timezone="UTC"))
    for s in series:
        b.series.append(pb.Series(
            metric=s.metric, kind=s.kind, unit=s.unit,
            labels=[pb.Label(name=k, value=v) for k, v in s.labels.items()],
            counter_bits=s.bits if s.kind == pb.COUNTER else 0,
            start_time_unix_nano=s.start, scale=s.scale))
    if counters:
        b.counters.series_index.extend(i for i, _, _ in counters)
        b.counters.time_unix_nano.extend(t for _, t, _ in counters)
        b.counters.value.extend(v for _, _, v in counters)
    if gauges:
        b.gauges.series_index.extend(i for i, _, _ in gauges)
        b.gauges.time_unix_nano.extend(t for _, t, _ in gauges)
        b.gauges.value.extend(v for _, _, v in gauges)
    return b.SerializeToString()


@dataclass
class TruthCounter:
    """Reference counter math: the definition, in Python integers, one sample at a time."""

    bits: int = 64
    prev: tuple[int, int, object] | None = None  # (t, value, epoch)
    deltas: list[tuple[int, int, int]] = field(default_factory=list)  # (t, delta, dt)
    resets: int = 0

    def add(self, t: int, v: int, epoch: object) -> None:
        mod = 1 << self.bits
        if self.prev is not None:
            pt, pv, pe = self.prev
            if pe != epoch or v >= mod or pv >= mod:
                self.resets += 1
            elif v >= pv:
                self.deltas.append((t, v - pv, t - pt))
            elif (v - pv) % mod < mod // 2:
                self.deltas.append((t, (v - pv) % mod, t - pt))
            else:
                self.resets += 1
        self.prev = (t, v, epoch)


def window_truth(deltas: list[tuple[int, int, int]], window_ns: int, pane_ns: int,
                 ends: list[int]) -> dict[int, tuple[int, int, int]]:
    """end -> (increase, dt, n) over deltas whose sample time lies in [end - window, end)."""
    out: dict[int, tuple[int, int, int]] = {}
    by_pane: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for t, d, dt in deltas:
        by_pane[t // pane_ns].append((d, dt))
    for end in ends:
        inc = dts = n = 0
        for p in range((end - window_ns) // pane_ns, end // pane_ns):
            for d, dt in by_pane.get(p, ()):
                inc += d
                dts += dt
                n += 1
        if n:
            out[end] = (inc, dts, n)
    return out
