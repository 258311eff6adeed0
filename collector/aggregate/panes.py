"""Panes from processed samples: the per-sample step of a close, done once.

A close of the per-partition state (collector/aggregate/state.py) takes the samples the
watermark passed, sorted by (series, time), and turns them into one row per (series, pane):
counter increases (exact, as 32-bit half sums, from counters.py's deltas) and gauge sums,
counts, minima and maxima. Every window is then rolled from these rows (windows.py).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from collector.aggregate.counters import Deltas, split_sum_arrays
from collector.aggregate.frames import COUNTER_PANE_SCHEMA, GAUGE_PANE_SCHEMA
from collector.aggregate.grouping import group_starts, group_sum

_LOW32 = np.uint64(0xFFFF_FFFF)


def counter_pane_rows(
    sid: np.ndarray,
    pane: np.ndarray,
    d: Deltas,
    first: np.ndarray,
    per_tier: int | None,
    from_pane: int | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Counter pane rows of samples sorted by (series, time) (`pane`: each sample's pane
    index, `first`: each series' first sample), and - when there is a tier above the panes,
    `per_tier` panes each - that tier's rows over the same samples.

    The tier's rows (tumbling sums of `per_tier` panes) need only the sums of each (series,
    tier pane): taken here, over the sorted samples, they spare the tier roll a sort and
    gathers over every new pane. Integers, so the sums are the same. `from_pane`: pane rows
    of earlier panes are left out (the tier's rows still cover every sample).
    """
    starts = group_starts(first, pane)
    # one sample per (series, pane) - sampling every pane or slower, the usual case - needs
    # no group sums
    one = len(starts) == len(sid)
    hi, lo = (d.delta >> np.uint64(32), d.delta & _LOW32) if one else split_sum_arrays(d.delta, starts)

    def per_pane(x: np.ndarray) -> np.ndarray:
        return x.astype(np.uint32) if one else group_sum(x, starts).astype(np.uint32)

    cols = {
        "sid": sid[starts].astype(np.uint32),
        "pane": pane[starts],
        "hi": hi,
        "lo": lo,
        "dt": d.dt if one else np.add.reduceat(d.dt, starts),
        "n": per_pane(d.valid),
        "resets": per_pane(d.reset),
        "wraps": per_pane(d.wrap),
    }
    if from_pane is not None:
        kept = cols["pane"] >= from_pane
        if not kept.all():
            cols = {k: v[kept] for k, v in cols.items()}
    frame = pl.DataFrame(cols, schema=COUNTER_PANE_SCHEMA)
    if per_tier is None:
        return frame, None
    tg = group_starts(first, pane // per_tier)
    size = np.diff(np.append(tg, len(sid)))

    def count(x: np.ndarray) -> np.ndarray:  # of flags; all or none set is the usual case
        if not x.any():
            return np.zeros(len(tg), np.uint32)
        return (size if x.all() else group_sum(x, tg)).astype(np.uint32)

    tier = pl.DataFrame(
        {
            "sid": sid[tg].astype(np.uint32),
            "pane": pane[tg],
            "hi": group_sum(hi if one else d.delta >> np.uint64(32), tg),
            "lo": group_sum(lo if one else d.delta & _LOW32, tg),
            "dt": group_sum(d.dt, tg),
            "n": count(d.valid),
            "resets": count(d.reset),
            "wraps": count(d.wrap),
        },
        schema=COUNTER_PANE_SCHEMA,
    )
    return frame, tier


def gauge_pane_rows(sid: np.ndarray, pane: np.ndarray, v: np.ndarray, first: np.ndarray) -> pl.DataFrame:
    """Gauge pane rows (sum, count, min, max) of samples sorted by (series, time)."""
    starts = group_starts(first, pane)
    counts = np.diff(np.append(starts, len(sid)))
    one = len(starts) == len(sid)  # one sample per (series, pane): no group sums
    return pl.DataFrame(
        {
            "sid": sid[starts].astype(np.uint32),
            "pane": pane[starts],
            "sum": v if one else np.add.reduceat(v, starts),
            "cnt": counts.astype(np.uint32),
            "min": v if one else np.minimum.reduceat(v, starts),
            "max": v if one else np.maximum.reduceat(v, starts),
        },
        schema=GAUGE_PANE_SCHEMA,
    )
