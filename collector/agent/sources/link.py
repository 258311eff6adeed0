"""Link source: per-link counters, status, speed and optical readings from an adapter.

The source turns `LinkReading`s into the catalogue's `link_*` series; *where* readings come
from is an adapter (collector/agent/sources/link_adapters.py: the `LinkAdapter` interface,
the built-in `linux` and `synthetic` adapters, and how one is chosen).
"""

from __future__ import annotations

import fnmatch
import logging
import math
from dataclasses import dataclass

from collector.agent.batch import BatchBuilder, SeriesDef, counter_def, gauge_def
from collector.agent.config import LinkSourceSettings
from collector.agent.sources import Source
from collector.agent.sources.link_adapters import COUNTERS, OPTICAL, LinkAdapter, LinkReading, make_adapter
from collector.catalog import unit_of

log = logging.getLogger(__name__)

# Metric names and units are the catalogue's (collector/catalog.py): `link_<counter field>`.
COUNTER_METRICS = {f: "link_" + f for f in COUNTERS}
OPTICAL_METRICS = {f: "link_optical_" + f for f in OPTICAL}


# --- the source -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Plan:
    counters: tuple[tuple[str, SeriesDef], ...]
    oper: SeriesDef
    speed: SeriesDef
    optical: tuple[tuple[str, SeriesDef], ...]


class LinkSource(Source):
    name = "link"

    def __init__(self, settings: LinkSourceSettings, adapter: LinkAdapter | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.interval_s = settings.interval_s
        self.priority = settings.priority
        self.adapter = adapter or make_adapter(settings.adapter, dict(settings.options))
        # Per (link, adapter media, widths, counter start): the series defs, built once.
        self._plans: dict[tuple[str, str | None, int, tuple[tuple[str, int], ...], int], _Plan | None] = {}
        # Device adapters (snmp, gnmi) report per-target health: shared with the metrics.
        self.stats.targets = getattr(self.adapter, "targets", {})

    def _want(self, name: str) -> bool:
        s = self.settings
        return any(fnmatch.fnmatchcase(name, p) for p in s.include) and not any(
            fnmatch.fnmatchcase(name, p) for p in s.exclude
        )

    def _media(self, r: LinkReading) -> str:
        for pattern, media in self.settings.media.items():
            if fnmatch.fnmatchcase(r.name, pattern):
                return media
        return r.media or "copper"

    def _plan(self, r: LinkReading) -> _Plan | None:
        if not self._want(r.name):
            return None
        widths = {f: r.counter_bits for f in COUNTERS} | dict(r.counter_bits_of)
        if any(b not in (32, 64) for b in widths.values()):
            log.error(
                "link %s: adapter declares counter widths %s; only 32 or 64 exist on the wire: link skipped",
                r.name,
                sorted(set(widths.values())),
            )
            return None
        labels = {"link": r.name, "media": self._media(r)}
        return _Plan(
            counters=tuple(
                (
                    f,
                    counter_def(
                        COUNTER_METRICS[f],
                        labels,
                        unit=unit_of(COUNTER_METRICS[f]),
                        bits=widths[f],
                        start_time_unix_nano=r.counter_start_unix_nano,
                    ),
                )
                for f in COUNTERS
            ),
            oper=gauge_def("link_oper_up", labels, unit=unit_of("link_oper_up")),
            speed=gauge_def("link_speed_bytes", labels, unit=unit_of("link_speed_bytes")),
            optical=tuple(
                (attr, gauge_def(metric, labels, unit=unit_of(metric)))
                for attr, metric in OPTICAL_METRICS.items()
            ),
        )

    async def collect(self, builder: BatchBuilder, now_unix_nano: int) -> None:
        counter, gauge, plans = builder.counter, builder.gauge, self._plans
        isfinite = math.isfinite
        for r in await self.adapter.read():
            key = (r.name, r.media, r.counter_bits, r.counter_bits_of, r.counter_start_unix_nano)
            if key in plans:
                plan = plans[key]
            else:
                if len(plans) > 100_000:  # links come and go; do not grow forever
                    plans.clear()
                plan = plans[key] = self._plan(r)
            if plan is None:
                continue
            t = r.time_unix_nano or now_unix_nano
            for attr, d in plan.counters:
                v = getattr(r, attr)
                if v is not None:
                    if 0 <= v < 1 << d.counter_bits:
                        counter(d, t, v)
                    else:  # the ingest would refuse the whole batch for it
                        self.stats.errors += 1
                        log.warning(
                            "link %s: %s=%r does not fit %d bits: sample skipped",
                            r.name,
                            attr,
                            v,
                            d.counter_bits,
                        )
            if r.oper_up is not None:
                gauge(plan.oper, t, 1.0 if r.oper_up else 0.0)
            if r.speed_bytes_per_second is not None:
                gauge(plan.speed, t, float(r.speed_bytes_per_second))
            for attr, d in plan.optical:
                v = getattr(r, attr)
                if v is not None and isfinite(v):
                    gauge(d, t, v)

    async def close(self) -> None:
        await self.adapter.close()
