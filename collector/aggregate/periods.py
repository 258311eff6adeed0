"""Period samples: counts (DELTA series) and statistics (period gauges) over [start, end).

The aggregator's second path, beside the event-time panes of collector/aggregate/state.py.
A 3GPP TS 32.435 PM value is a count over its granularity period, final when the file is
written and delivered minutes later; a spool replay delivers such periods hours later.
Neither needs a watermark: a period is complete in itself, so it never waits for panes and
is never made late by the site's live (server, link) data. What it needs instead:

* idempotence: the same (series, start, end) delivered twice counts once (a repeated file,
  a re-sent batch with a new seq) - dropped and counted as `duplicate`;
* order independence: a period older than the series' newest is kept at its own period
  (it goes to the window log and the dedup memory) when it ended at most `period_horizon_s`
  before the series' newest period, else dropped as `too_old`; it is never folded in at
  another time;
* no overlap: a period overlapping another period of the same series (but not equal to
  it) is dropped as `overlap`, since its count would partly be counted twice.

What is published per series is its newest period: rate = value * scale / (end - start)
for counts (integers until that one division, exact as the counters' deltas), the value for
statistics, with `window` = the period's length ("15m"). The frames below have the shape of
the pane path's closed windows, so collector/aggregate/outputs.py derives every family
(rates, site sums, handover ratio) from both paths with the same code.

A series whose next period is overdue by more than `stale_ttl_s` (the partition's event
clock when its newest period arrived + the period's length + ttl < the clock now) is
dropped, like a stale pane series. The event clock is the newest sample or period end of
the partition, so this is a function of the record sequence, as everything else here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from collector import wire
from collector.aggregate.frames import period_increase
from collector.errors import ProtocolError
from collector.proto.telemetry.v1 import telemetry_pb2 as pb

NS = 1_000_000_000
KEY = ["sid", "start", "end"]
# `seen`: the partition's event clock when the period was accepted (for expiry).
DELTA_SCHEMA = {"sid": pl.UInt32, "start": pl.Int64, "end": pl.Int64, "value": pl.UInt64, "seen": pl.Int64}
GAUGE_SCHEMA = {"sid": pl.UInt32, "start": pl.Int64, "end": pl.Int64, "value": pl.Float64, "seen": pl.Int64}


def period_label(seconds: int) -> str:
    """The `window` label of a period: 15m, 1h, 30s (as outputs.window_label)."""
    return (
        f"{seconds // 3600}h"
        if seconds % 3600 == 0
        else f"{seconds // 60}m"
        if seconds % 60 == 0
        else f"{seconds}s"
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What became of the period samples of one record."""

    accepted: int = 0
    duplicate: int = 0
    too_old: int = 0
    overlap: int = 0


# on_period(period_s, accepted counts, accepted statistics): accepted rows (sid, start, end,
# value) of one period length, for the window log.
PeriodSink = Callable[[int, pl.DataFrame, pl.DataFrame], None]


class PeriodStore:
    """Period samples of one partition: a bounded history per series for dedup and order."""

    def __init__(self, horizon_ns: int, ttl_ns: int) -> None:
        self.horizon_ns = horizon_ns
        self.ttl_ns = ttl_ns
        self.hist: dict[bool, pl.DataFrame] = {
            False: pl.DataFrame(schema=DELTA_SCHEMA),
            True: pl.DataFrame(schema=GAUGE_SCHEMA),
        }
        self.clock_ns: int | None = None  # newest event time known to the partition
        self._expired_at: int | None = None
        self._latest: tuple[pl.DataFrame, pl.DataFrame] | None = None

    # ------------------------------------------------------------------ ingest
    def add(
        self,
        sid: npt.NDArray[np.uint32],
        start: npt.NDArray[np.int64],
        end: npt.NDArray[np.int64],
        value: npt.NDArray[np.uint64] | npt.NDArray[np.float64],
        *,
        gauge: bool,
    ) -> tuple[Verdict, pl.DataFrame]:
        """Merge one record's period samples; returns the verdict and the accepted rows."""
        schema = GAUGE_SCHEMA if gauge else DELTA_SCHEMA
        if len(end):
            self.note_clock(int(end.max()))
        seen = np.full(len(sid), self.clock_ns or 0, np.int64)
        new = pl.DataFrame(
            {"sid": sid, "start": start, "end": end, "value": value, "seen": seen}, schema=schema
        )
        n = len(new)
        new = new.unique(KEY, keep="first", maintain_order=True)
        dup = n - len(new)
        h = self.hist[gauge]
        if len(h):
            before = len(new)
            new = new.join(h.select(KEY), on=KEY, how="anti", maintain_order="left")
            dup += before - len(new)
        # too old: ended more than the horizon before the series' newest period
        ends = pl.concat([h.select("sid", "end"), new.select("sid", "end")])
        newest = ends.group_by("sid").agg(newest=pl.col("end").max())
        new = new.join(newest, on="sid", how="left", maintain_order="left")
        fresh = new["end"] >= new["newest"] - self.horizon_ns
        too_old = len(new) - int(fresh.sum())
        new = new.filter(fresh).drop("newest")
        # overlap with a kept period, or with an earlier period of the same record
        overlap = 0
        if len(new):
            bad = np.zeros(len(new), bool)
            if len(h):
                hits = (
                    new.with_row_index("i")
                    .join(h.select("sid", hs="start", he="end"), on="sid")
                    .filter((pl.col("start") < pl.col("he")) & (pl.col("hs") < pl.col("end")))
                )
                bad[hits["i"].unique().to_numpy()] = True
            order = new.with_row_index("i").sort("sid", "start", "i")
            prev_end = order.select(pl.col("end").cum_max().shift(1).over("sid"))["end"]
            inside = (order["start"] < prev_end).fill_null(False).to_numpy()
            bad[order["i"].to_numpy()[inside]] = True
            overlap = int(bad.sum())
            if overlap:
                new = new.filter(pl.Series(~bad))
        if len(new):
            merged = pl.concat([h, new]) if len(h) else new
            newest_all = merged.group_by("sid").agg(newest=pl.col("end").max())
            self.hist[gauge] = (
                merged.join(newest_all, on="sid")
                .filter(pl.col("end") >= pl.col("newest") - self.horizon_ns)
                .drop("newest")
            )
            self._latest = None
        return Verdict(len(new), dup, too_old, overlap), new

    def note_clock(self, t_ns: int | None) -> None:
        """The partition's event clock moved (its newest sample or period end)."""
        if t_ns is not None and (self.clock_ns is None or t_ns > self.clock_ns):
            self.clock_ns = t_ns

    # ------------------------------------------------------------------ expiry
    def expire(self) -> None:
        """Drop the series whose next period is overdue by more than the stale TTL."""
        clock = self.clock_ns
        if clock is None or (self._expired_at is not None and clock - self._expired_at < NS):
            return
        self._expired_at = clock
        for gauge, h in self.hist.items():
            if not len(h):
                continue
            newest = h.group_by("sid").agg(
                pl.col("seen").max().alias("seen"), (pl.col("end") - pl.col("start")).max().alias("len")
            )
            gone = newest.filter(pl.col("seen") + pl.col("len") + self.ttl_ns < clock)["sid"]
            if len(gone):
                self.hist[gauge] = h.filter(~pl.col("sid").is_in(gone.implode()))
                self._latest = None

    def sids(self) -> npt.NDArray[np.uint32]:
        """Series ids this store holds (the registry must not free them)."""
        parts = [h["sid"].to_numpy() for h in self.hist.values() if len(h)]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint32)

    def forget(self, sids: npt.NDArray[np.uint32]) -> None:
        if len(sids):
            gone = pl.Series(sids.astype(np.uint32)).implode()
            for g, h in self.hist.items():
                self.hist[g] = h.filter(~pl.col("sid").is_in(gone))
            self._latest = None

    # ------------------------------------------------------------------ views
    def latest(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Newest period of every series, shaped like closed pane windows (plus `window`,
        `window_s`): counts as (inc, dt, n, resets, wraps), statistics as (sum, cnt, min, max)."""
        if self._latest is None:
            out = []
            for gauge in (False, True):
                h = self.hist[gauge]
                top = h.filter(pl.col("end") == pl.col("end").max().over("sid"))
                length_s = ((pl.col("end") - pl.col("start")) // NS).alias("window_s")
                top = top.with_columns(length_s)
                labels = {int(s): period_label(int(s)) for s in top["window_s"].unique().to_list()}
                window = pl.col("window_s").replace_strict(labels, return_dtype=pl.String, default="")
                if gauge:
                    out.append(
                        top.select(
                            "sid",
                            "end",
                            sum=pl.col("value"),
                            cnt=pl.lit(1, pl.UInt32),
                            min=pl.col("value"),
                            max=pl.col("value"),
                            window=window,
                            window_s=pl.col("window_s"),
                        )
                    )
                else:
                    out.append(
                        top.select(
                            "sid",
                            "end",
                            **period_increase(),
                            window=window,
                            window_s=pl.col("window_s"),
                        )
                    )
            self._latest = (out[0], out[1])
        return self._latest

    def rows(self) -> int:
        return sum(len(h) for h in self.hist.values())

    def state_bytes(self) -> int:
        return sum(int(h.estimated_size()) for h in self.hist.values())

    # ------------------------------------------------------------------ checkpoint
    def frames(self) -> dict[str, pl.DataFrame]:
        return {"periods_delta": self.hist[False], "periods_gauge": self.hist[True]}

    def restore(self, frames: dict[str, pl.DataFrame], clock_ns: int | None) -> None:
        if "periods_delta" in frames:
            self.hist[False] = frames["periods_delta"].cast(DELTA_SCHEMA)  # type: ignore[arg-type]
        if "periods_gauge" in frames:
            self.hist[True] = frames["periods_gauge"].cast(GAUGE_SCHEMA)  # type: ignore[arg-type]
        self.clock_ns = clock_ns
        self._latest = None


def decode_periods(batch: pb.Batch, n_series: int) -> tuple[wire.PeriodColumns, wire.PeriodColumns]:
    """DeltaColumns and PeriodGaugeColumns of a batch, checked like the other columns; raise
    ProtocolError(reason) for a record the dead-letter topic should get."""
    try:
        deltas = wire.delta_columns(batch)
        gauges = wire.period_gauge_columns(batch)
    except ProtocolError as exc:
        raise ProtocolError("columns") from exc
    for cols in (deltas, gauges):
        if not cols.lengths_equal():
            raise ProtocolError("column_lengths")
        if not len(cols):
            continue
        if int(cols.series_index.max()) >= n_series:
            raise ProtocolError("series_index")
        if int(cols.start_unix_nano.min()) < 0:
            raise ProtocolError("time_range")
        if not (cols.start_unix_nano < cols.time_unix_nano).all():
            raise ProtocolError("period")
    if len(gauges) and not np.isfinite(gauges.value).all():
        raise ProtocolError("gauge_not_finite")
    return deltas, gauges
