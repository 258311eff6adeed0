"""Helpers for the simulator's tests: small fleets, a reference decoder written with Python
integers (independent of the simulator's NumPy code), Kafka read-back."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from collector import wire
from collector.simulate.config import SimulateSettings
from collector.simulate.truth import labels_text
from tests.kafka_support import read_topic as read_topic  # re-exported for older imports

NS = 10**9
START_S = 1_780_000_000  # 2026-05-28T20:26:40Z


def small(**kw: Any) -> SimulateSettings:
    """A small fleet (1 site per country, few entities), fast-forward, fixed start."""
    base: dict[str, Any] = dict(
        sites_per_country=1,
        links_per_site=4,
        cells_per_site=3,
        hosts_per_site=1,
        cpus_per_host=2,
        acceleration=0.0,
        start_unix_s=START_S,
        batch_samples=200,
        batch_ticks=4,
    )
    base.update(kw)
    return SimulateSettings.model_validate(base)


@dataclass(frozen=True, slots=True)
class Sample:
    time_unix_nano: int
    value: int | float
    bits: int
    boot_id: str
    start_time_unix_nano: int
    agent_id: str
    seq: int


SeriesKey = tuple[str, str, str]  # site_id, metric, labels text


def decode(values: Iterable[bytes]) -> tuple[dict[SeriesKey, list[Sample]], int]:
    """Counter and gauge samples per series from Batch bytes; a repeated (agent_id, seq) is
    dropped. Returns (series -> samples in event-time order, duplicates dropped)."""
    seen: set[tuple[str, int]] = set()
    dups = 0
    out: dict[SeriesKey, list[Sample]] = defaultdict(list)
    for raw in values:
        b = wire.parse_batch(raw)
        if (b.agent_id, b.seq) in seen:
            dups += 1
            continue
        seen.add((b.agent_id, b.seq))
        keys = [
            (b.site.site_id, s.metric, labels_text(tuple((lb.name, lb.value) for lb in s.labels)))
            for s in b.series
        ]
        for cols, is_counter in ((wire.counter_columns(b), True), (wire.gauge_columns(b), False)):
            for i, t, v in zip(
                cols.series_index.tolist(), cols.time_unix_nano.tolist(), cols.value.tolist(), strict=True
            ):
                s = b.series[i]
                out[keys[i]].append(
                    Sample(
                        t,
                        int(v) if is_counter else float(v),
                        s.counter_bits if is_counter else 0,
                        b.boot_id,
                        s.start_time_unix_nano,
                        b.agent_id,
                        b.seq,
                    )
                )
    for v in out.values():
        v.sort(key=lambda s: s.time_unix_nano)
    return dict(out), dups


def increments(samples: list[Sample]) -> list[int | None]:
    """Reference counter math with Python ints: None for the first sample; after a restart
    (boot_id or start time changed) the new value (the counter counted from 0); a decrease is
    a wrap of the declared width."""
    out: list[int | None] = []
    prev: Sample | None = None
    for s in samples:
        assert isinstance(s.value, int)
        if prev is None:
            out.append(None)
        elif (s.boot_id, s.start_time_unix_nano) != (prev.boot_id, prev.start_time_unix_nano):
            out.append(s.value)
        elif s.value >= prev.value:
            out.append(s.value - int(prev.value))
        else:
            out.append(s.value + 2**s.bits - int(prev.value))
        prev = s
    return out


def window_deltas(
    series: dict[SeriesKey, list[Sample]], window_s: int
) -> tuple[dict[tuple[SeriesKey, int], Decimal], dict[tuple[str, str, int], Decimal]]:
    """Per series and per (site, metric) window deltas from the reference decoder."""
    w = window_s * NS
    per_series: dict[tuple[SeriesKey, int], Decimal] = defaultdict(Decimal)
    per_site: dict[tuple[str, str, int], Decimal] = defaultdict(Decimal)
    for key, samples in series.items():
        if samples[0].bits == 0:
            continue
        for s, inc in zip(samples, increments(samples), strict=True):
            ws = s.time_unix_nano // w * w
            per_series[(key, ws)] += inc or 0
            per_site[(key[0], key[1], ws)] += inc or 0
    return dict(per_series), dict(per_site)
