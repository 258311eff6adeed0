"""Ground truth of a simulated run: what a correct pipeline must publish, exactly.

Part of `collector simulate`. Fed with every generated block (independent of delivery order,
duplicates and late arrival), it keeps per-window partial aggregates and writes a directory
of Parquet files (schema and semantics: docs/simulator.md):

    series.parquet       one row per series (site, metric, labels, kind, width)
    windows.parquet      per series and per site, per window: exact counter delta
                         (Decimal(38, 0)), gauge count/avg/min/max
    samples.parquet      optional: every delivered sample with its true increment
    deliveries.parquet   every Kafka record / submitted batch: agent_id, seq, kind
    epochs.parquet       boot epochs per site: boot_id and counter start time
    meta.json            settings, clock, calibration (fleet averages) and references

Counter increments are exact integers: UInt64 per sample, Decimal(38, 0) once summed (a
site's window can pass 2^64 bytes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from collector.simulate.config import REFERENCE_SPEED_MBPS
from collector.simulate.generator import Block, FleetGenerator
from collector.simulate.topology import NS, FleetModel

DEC = pl.Decimal(38, 0)
# Partial aggregates kept before they are merged (see TruthRecorder._compact).
_MAX_PARTS = 64

SERIES_FILE = "series.parquet"
WINDOWS_FILE = "windows.parquet"
SAMPLES_FILE = "samples.parquet"
DELIVERIES_FILE = "deliveries.parquet"
EPOCHS_FILE = "epochs.parquet"
META_FILE = "meta.json"


def labels_text(labels: tuple[tuple[str, str], ...]) -> str:
    """Canonical label text: sorted by name, Prometheus style: {a="1",b="2"}."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels))
    return "{" + inner + "}"


def series_frame(model: FleetModel) -> pl.DataFrame:
    """The series dimension: series_id = counter row, or n_counters + gauge row."""
    rows: dict[str, list[Any]] = {
        k: []
        for k in (
            "series_id",
            "site_id",
            "country",
            "region",
            "timezone",
            "metric",
            "kind",
            "unit",
            "labels",
            "counter_bits",
            "scale",
        )
    }
    for sid, c in enumerate(model.counters):
        info = model.sites[c.site].info
        for k, v in zip(
            rows,
            (
                sid,
                info.site_id,
                info.country,
                info.region,
                info.timezone,
                c.metric,
                "counter",
                c.unit,
                labels_text(c.labels),
                c.bits,
                c.scale or 1.0,
            ),
            strict=True,
        ):
            rows[k].append(v)
    for gid, g in enumerate(model.gauges):
        info = model.sites[g.site].info
        for k, v in zip(
            rows,
            (
                model.nc + gid,
                info.site_id,
                info.country,
                info.region,
                info.timezone,
                g.metric,
                "gauge",
                g.unit,
                labels_text(g.labels),
                0,
                g.scale or 1.0,
            ),
            strict=True,
        ):
            rows[k].append(v)
    return pl.DataFrame(
        rows,
        schema={
            "series_id": pl.UInt32,
            "site_id": pl.String,
            "country": pl.String,
            "region": pl.String,
            "timezone": pl.String,
            "metric": pl.String,
            "kind": pl.String,
            "unit": pl.String,
            "labels": pl.String,
            "counter_bits": pl.UInt8,
            "scale": pl.Float64,
        },
    )


@dataclass
class _Calib:
    speed_sum: float = 0.0
    speed_n: int = 0
    cov_sum: float = 0.0
    cov_n: int = 0
    tick_mean_max_err: float = 0.0  # worst relative error of a tick's fleet mean


class TruthRecorder:
    """Accumulates the ground truth block by block; `write(dir)` at the end of the run."""

    def __init__(self, model: FleetModel, gen: FleetGenerator, *, samples: bool = False) -> None:
        self.model = model
        self.gen = gen
        self.keep_samples = samples
        self.windows_ns = [int(w) * NS for w in model.settings.truth_windows_s]
        self._c_parts: list[pl.DataFrame] = []
        self._g_parts: list[pl.DataFrame] = []
        self._samples: list[pl.DataFrame] = []
        self._deliveries: list[tuple[Any, ...]] = []
        self._newest: dict[str, int] = {}  # site -> newest event time delivered so far
        self._calib = {c: _Calib() for c in model.settings.countries}
        rec = [
            i
            for i, c in enumerate(model.counters)
            if c.metric == "link_in_octets" and dict(c.labels).get("link", "").startswith("nict")
        ]
        self._record_row: int | None = rec[0] if rec else None
        self._record_max = 0
        self._record_wraps = 0
        self._record_last = (0, -1)  # (value, start time) of the last delivered sample
        self.ticks = 0

    # --- accumulation --------------------------------------------------------------------

    def add(self, block: Block) -> None:
        m = self.model
        self.ticks = block.k0 + block.n_ticks
        self._watch_record_link(block)
        # counters
        pres = block.present[m.counter_site]
        rows, ks = np.nonzero(pres)
        site = m.counter_site[rows]
        t = block.t[site, ks]
        counted = block.counted[site, ks]
        reset = block.reset_sample[rows, ks]
        c = pl.DataFrame(
            {
                "series_id": rows.astype(np.uint32),
                "time_unix_nano": t,
                "value": block.values[rows, ks],
                "increment": block.increment[rows, ks],
                "counted": counted,
                "reset": reset,
                "epoch": block.epoch[site, ks].astype(np.uint32),
                "start_time_unix_nano": block.start[rows, ks],
            }
        ).with_columns(
            pl.when(pl.col("counted")).then(pl.col("increment")).otherwise(None).alias("increment")
        )
        # gauges
        gpres = block.present[m.gauge_site]
        grows, gks = np.nonzero(gpres)
        g = pl.DataFrame(
            {
                "series_id": (grows + m.nc).astype(np.uint32),
                "time_unix_nano": block.t[m.gauge_site[grows], gks],
                "gauge": block.gauges[grows, gks],
            }
        )
        for w in self.windows_ns:
            self._c_parts.append(
                c.group_by(
                    "series_id", (pl.col("time_unix_nano") // w * w).alias("window_start_unix_nano")
                ).agg(
                    pl.lit(w // NS, pl.UInt32).alias("window_s"),
                    pl.col("increment").cast(DEC).sum().alias("delta"),
                    pl.col("increment").filter(pl.col("reset")).cast(DEC).sum().alias("reset_delta"),
                    pl.len().cast(pl.UInt32).alias("samples"),
                    pl.col("increment").count().cast(pl.UInt32).alias("increments"),
                    pl.col("reset").sum().cast(pl.UInt32).alias("resets"),
                )
            )
            self._g_parts.append(
                g.group_by(
                    "series_id", (pl.col("time_unix_nano") // w * w).alias("window_start_unix_nano")
                ).agg(
                    pl.lit(w // NS, pl.UInt32).alias("window_s"),
                    pl.col("gauge").sum().alias("gauge_sum"),
                    pl.col("gauge").min().alias("gauge_min"),
                    pl.col("gauge").max().alias("gauge_max"),
                    pl.len().cast(pl.UInt32).alias("samples"),
                )
            )
        self._compact(_MAX_PARTS)
        if self.keep_samples:
            self._samples.append(
                pl.concat(
                    [
                        c.drop("counted").with_columns(pl.lit(None, pl.Float64).alias("gauge")),
                        g.with_columns(
                            pl.lit(None, pl.UInt64).alias("value"),
                            pl.lit(None, pl.UInt64).alias("increment"),
                            pl.lit(False).alias("reset"),
                            pl.lit(None, pl.UInt32).alias("epoch"),
                            pl.lit(None, pl.Int64).alias("start_time_unix_nano"),
                        ),
                    ],
                    how="diagonal",
                )
            )
        self._calibrate(block)

    def _watch_record_link(self, block: Block) -> None:
        """Largest value and 2^64 wraps of the record link's delivered in-octets counter."""
        if self._record_row is None:
            return
        r = self._record_row
        site = int(self.model.counter_site[r])
        p = np.flatnonzero(block.present[site])
        if not len(p):
            return
        v = block.values[r, p]
        seg = block.start[r, p]
        self._record_max = max(self._record_max, int(v.max()))
        prev_v = np.concatenate([[self._record_last[0]], v[:-1]])
        prev_s = np.concatenate([[self._record_last[1]], seg[:-1]])
        self._record_wraps += int(np.count_nonzero((v < prev_v) & (seg == prev_s)))
        self._record_last = (int(v[-1]), int(seg[-1]))

    def _compact(self, limit: int) -> None:
        """Merge the per-block partial aggregates once there are more than `limit` of them
        (bounded memory for long runs; `limit` 0 merges everything into one frame)."""
        keys = ["series_id", "window_s", "window_start_unix_nano"]
        if len(self._c_parts) > max(limit, 1):
            self._c_parts = [
                pl.concat(self._c_parts, how="diagonal")
                .group_by(keys)
                .agg(
                    pl.col("delta").sum(),
                    pl.col("reset_delta").sum(),
                    pl.col("samples").sum(),
                    pl.col("increments").sum(),
                    pl.col("resets").sum(),
                )
            ]
        if len(self._g_parts) > max(limit, 1):
            self._g_parts = [
                pl.concat(self._g_parts, how="diagonal")
                .group_by(keys)
                .agg(
                    pl.col("gauge_sum").sum(),
                    pl.col("gauge_min").min(),
                    pl.col("gauge_max").max(),
                    pl.col("samples").sum(),
                )
            ]

    def _calibrate(self, block: Block) -> None:
        m = self.model
        C = m.cells
        if not len(C["site"]):
            return
        pres = block.present[C["site"]]
        thp = block.gauges[C["g0"] + 2] * 8 / 1e6
        cov = block.gauges[C["g0"] + 7]
        for c in m.settings.countries:
            cm = C["country"] == c
            if not cm.any():
                continue
            p = pres[cm]
            cal = self._calib[c]
            v = thp[cm]
            cal.speed_sum += float(v[p].sum())
            cal.speed_n += int(p.sum())
            cal.cov_sum += float(cov[cm][p].sum())
            cal.cov_n += int(p.sum())
            n = p.sum(axis=0)
            ok = n > 0
            if ok.any():
                tick_mean = (v * p).sum(axis=0)[ok] / n[ok]
                target = m.settings.speed_mbps[c]
                err = float(np.max(np.abs(tick_mean - target)) / target)
                cal.tick_mean_max_err = max(cal.tick_mean_max_err, err)

    def delivered(self, order: int, b: Any) -> None:
        """Record one delivered batch (a `PlannedBatch`) and its seq as sent."""
        site = b.site.info.site_id
        newest = self._newest.get(site)
        behind = max(0, newest - b.t_min) if newest is not None else 0
        self._newest[site] = max(b.t_max, newest if newest is not None else b.t_max)
        self._deliveries.append(
            (
                order,
                site,
                b.site.agent_id,
                b.seq,
                b.kind,
                b.samples,
                b.t_min,
                b.t_max,
                behind,
                b.epoch,
                b.chunk.index,
            )
        )

    # --- results -------------------------------------------------------------------------

    def calibration(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for c, cal in self._calib.items():
            out[c] = {
                "speed_mbps_target": self.model.settings.speed_mbps[c],
                "speed_mbps_mean": cal.speed_sum / cal.speed_n if cal.speed_n else float("nan"),
                "speed_samples": cal.speed_n,
                "speed_tick_mean_max_rel_error": cal.tick_mean_max_err,
                "coverage_target": self.model.settings.coverage_5g[c],
                "coverage_mean": cal.cov_sum / cal.cov_n if cal.cov_n else float("nan"),
            }
        return out

    def windows(self) -> pl.DataFrame:
        """Per series and per site window truth (see docs/simulator.md)."""
        series = series_frame(self.model)
        self._compact(0)
        empty = pl.DataFrame(
            schema={"series_id": pl.UInt32, "window_s": pl.UInt32, "window_start_unix_nano": pl.Int64}
        )
        c = self._c_parts[0] if self._c_parts else empty
        g = self._g_parts[0] if self._g_parts else empty
        per_series = pl.concat([c, g], how="diagonal_relaxed").join(series, on="series_id")
        site_keys = [
            "site_id",
            "country",
            "region",
            "metric",
            "kind",
            "unit",
            "window_s",
            "window_start_unix_nano",
        ]
        per_site = per_series.group_by(site_keys).agg(
            pl.col("delta").sum(),
            pl.col("reset_delta").sum(),
            pl.col("samples").sum(),
            pl.col("increments").sum(),
            pl.col("resets").sum(),
            pl.col("gauge_sum").sum(),
            pl.col("gauge_min").min(),
            pl.col("gauge_max").max(),
            pl.len().cast(pl.UInt32).alias("series"),
        )
        per_series = per_series.with_columns(
            pl.lit("series").alias("level"), pl.lit(1, pl.UInt32).alias("series")
        )
        per_site = per_site.with_columns(pl.lit("site").alias("level"))
        out = pl.concat([per_series, per_site], how="diagonal_relaxed")
        is_counter = pl.col("kind") == "counter"
        out = out.with_columns(
            pl.when(is_counter).then(pl.col("delta")).otherwise(None).alias("delta"),
            pl.when(is_counter).then(pl.col("reset_delta")).otherwise(None).alias("reset_delta"),
            pl.when(is_counter)
            .then(None)
            .otherwise(pl.col("gauge_sum") / pl.col("samples"))
            .alias("gauge_avg"),
            pl.when(is_counter).then(None).otherwise(pl.col("gauge_min")).alias("gauge_min"),
            pl.when(is_counter).then(None).otherwise(pl.col("gauge_max")).alias("gauge_max"),
            pl.when(is_counter).then(None).otherwise(pl.col("gauge_sum")).alias("gauge_sum"),
        )
        cols = [
            "level",
            "window_s",
            "window_start_unix_nano",
            "site_id",
            "country",
            "region",
            "series_id",
            "metric",
            "labels",
            "kind",
            "unit",
            "counter_bits",
            "series",
            "samples",
            "increments",
            "resets",
            "delta",
            "reset_delta",
            "gauge_sum",
            "gauge_avg",
            "gauge_min",
            "gauge_max",
        ]
        return out.select(cols).sort(
            "level", "window_s", "window_start_unix_nano", "site_id", "metric", "labels", nulls_last=True
        )

    def samples(self) -> pl.DataFrame:
        series = series_frame(self.model).select("series_id", "site_id", "metric", "labels", "kind")
        if not self._samples:
            return series.clear()
        return (
            pl.concat(self._samples)
            .join(series, on="series_id")
            .join(self.epochs().select("site_id", "epoch", "boot_id"), on=["site_id", "epoch"], how="left")
            .sort("series_id", "time_unix_nano")
        )

    def epochs(self) -> pl.DataFrame:
        rows = [
            (self.model.sites[i].info.site_id, e, st.boot_ids[e], st.start_ns[e])
            for i, st in enumerate(self.gen.sites)
            for e in range(len(st.boot_ids))
        ]
        return pl.DataFrame(
            rows,
            schema={
                "site_id": pl.String,
                "epoch": pl.UInt32,
                "boot_id": pl.String,
                "start_time_unix_nano": pl.Int64,
            },
            orient="row",
        )

    def deliveries(self) -> pl.DataFrame:
        return pl.DataFrame(
            self._deliveries,
            schema={
                "order": pl.UInt64,
                "site_id": pl.String,
                "agent_id": pl.String,
                "seq": pl.UInt64,
                "kind": pl.String,
                "samples": pl.UInt32,
                "t_min_unix_nano": pl.Int64,
                "t_max_unix_nano": pl.Int64,
                "behind_ns": pl.Int64,
                "epoch": pl.UInt32,
                "chunk": pl.UInt32,
            },
            orient="row",
        )

    def meta(self) -> dict[str, Any]:
        m = self.model
        return {
            "settings": m.settings.model_dump(mode="json"),
            "start_unix_nano": self.gen.start_ns,
            "interval_ns": m.interval_ns,
            "ticks": self.ticks,
            "end_unix_nano": self.gen.start_ns + self.ticks * m.interval_ns,
            "windows_s": list(m.settings.truth_windows_s),
            "sites": [
                {
                    "site_id": st.info.site_id,
                    "country": st.info.country,
                    "region": st.info.region,
                    "timezone": st.info.timezone,
                    "city": st.city.name,
                    "agent_id": st.agent_id,
                    "silent_from_unix_nano": (
                        self.gen.start_ns + m.silent_tick * m.interval_ns
                        if st.index == m.silent_site
                        else None
                    ),
                }
                for st in m.sites
            ],
            "calibration": self.calibration(),
            "reference_speed_mbps": REFERENCE_SPEED_MBPS,
            "record_link_series_id": self._record_row,
            "record_link_bps": m.settings.record_link_bps if self._record_row is not None else None,
            # of its link_in_octets counter as delivered: largest value, 2^64 wraps
            "record_link_max_value": self._record_max if self._record_row is not None else None,
            "record_link_wraps": self._record_wraps if self._record_row is not None else None,
        }

    def write(self, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        series_frame(self.model).write_parquet(path / SERIES_FILE)
        self.windows().write_parquet(path / WINDOWS_FILE)
        self.epochs().write_parquet(path / EPOCHS_FILE)
        self.deliveries().write_parquet(path / DELIVERIES_FILE)
        if self.keep_samples:
            self.samples().write_parquet(path / SAMPLES_FILE)
        (path / META_FILE).write_text(json.dumps(self.meta(), indent=2, sort_keys=True))
        return path


def window_truth(samples: pl.DataFrame, window_s: int) -> pl.DataFrame:
    """Recompute per-series counter deltas from a (possibly filtered) samples table, e.g. after
    dropping samples an aggregator is allowed to drop as too late."""
    w = window_s * NS
    return (
        samples.filter(pl.col("kind") == "counter")
        .group_by("series_id", (pl.col("time_unix_nano") // w * w).alias("window_start_unix_nano"))
        .agg(pl.col("increment").cast(DEC).sum().alias("delta"))
        .sort("series_id", "window_start_unix_nano")
    )


@dataclass(frozen=True)
class Truth:
    """A ground-truth directory loaded back (see docs/simulator.md for the columns)."""

    series: pl.DataFrame
    windows: pl.DataFrame
    deliveries: pl.DataFrame
    epochs: pl.DataFrame
    samples: pl.DataFrame | None
    meta: dict[str, Any]

    def expected(self, *, level: str, window_s: int, metric: str) -> pl.DataFrame:
        """Window rows of one metric at one level ("series" or "site") and window length."""
        return self.windows.filter(
            (pl.col("level") == level) & (pl.col("window_s") == window_s) & (pl.col("metric") == metric)
        )


def load_truth(path: Path) -> Truth:
    samples = path / SAMPLES_FILE
    return Truth(
        series=pl.read_parquet(path / SERIES_FILE),
        windows=pl.read_parquet(path / WINDOWS_FILE),
        deliveries=pl.read_parquet(path / DELIVERIES_FILE),
        epochs=pl.read_parquet(path / EPOCHS_FILE),
        samples=pl.read_parquet(samples) if samples.exists() else None,
        meta=json.loads((path / META_FILE).read_text()),
    )
