"""Panes from processed samples: the per-sample step of a close, done once.

A close of the per-partition state (collector/aggregate/state.py) takes the samples the
watermark passed, sorted by (series, time), and turns them into one row per (series, pane):
counter increases (exact, as 32-bit half sums, from counters.py's deltas) and gauge sums,
counts, minima and maxima. Every window is then rolled from these rows (windows.py).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from collector.aggregate.counters import Deltas
from collector.aggregate.frames import COUNTER_PANE_SCHEMA, GAUGE_PANE_SCHEMA, frame
from collector.aggregate.grouping import group_starts

_LOW32 = np.uint64(0xFFFF_FFFF)
_SHIFT32 = np.uint64(32)


def _running(x: np.ndarray, dtype: type) -> np.ndarray:
    """The running sum of x with a 0 in front: the sum of x[a:b] is c[b] - c[a] (modular,
    so exact whenever that sum fits `dtype`)."""
    c: np.ndarray = np.empty(len(x) + 1, dtype)
    c[0] = 0
    if len(x):
        np.cumsum(x, dtype=dtype, out=c[1:])
    return c


def _sums(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sums of the runs x[a[i]:b[i]] from `_running(x)`."""
    out = c[b]
    out -= c[a]
    return out


def _pane_order(rows: np.ndarray, pane: np.ndarray) -> np.ndarray:
    """`rows` (ascending) reordered stably by pane[rows]: the rows of a tier are kept in
    pane order where it is cheap, so pruning them drops a prefix (see state._panes_from)."""
    p = pane[rows]
    if len(p) < 2 or bool((p[1:] >= p[:-1]).all()):
        return rows
    lo = int(p.min())
    if int(p.max()) - lo >= 1 << 16:
        return rows  # any order is right; this one is merely dearer to prune
    return rows[np.argsort((p - lo).astype(np.uint16), kind="stable")]


def _ends(starts: np.ndarray, n: int) -> np.ndarray:
    """Where each run starting at `starts` ends (exclusive), of n rows."""
    return np.append(starts[1:], n) if len(starts) else starts


def _counts(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many flags are set in each run x[a[i]:b[i]] (none or all is the usual case)."""
    if not x.any():
        return np.zeros(len(a), np.uint32)
    if x.all():
        return (b - a).astype(np.uint32)
    return _sums(_running(x, np.uint64), a, b).astype(np.uint32)


def counter_pane_rows(
    sid: np.ndarray,
    pane: np.ndarray,
    d: Deltas,
    first: np.ndarray,
    per_tier: int | None,
    from_pane: int | None = None,
    series_starts: np.ndarray | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame | None, tuple[np.ndarray, np.ndarray] | None]:
    """Counter pane rows of samples sorted by (series, time) (`pane`: each sample's pane
    index, `first`: each series' first sample), and - when there is a tier above the panes,
    `per_tier` panes each - that tier's rows over the same samples, and - given each series'
    first sample (`series_starts`) - each series' (hi, lo) half sums of the deltas (its
    corrected total's increase).

    Every sum is a difference of one running sum per column (taken once, shared by the
    pane rows, the tier's rows and the series' sums): integers, so the sums are exact and
    the same as group by group. The tier's rows (tumbling sums of `per_tier` panes) need only
    the sums of each (series, tier pane): taken here, over the sorted samples, they spare
    the tier roll a sort and gathers over every new pane. `from_pane`: pane rows of earlier
    panes are left out but each series' newest (the tier's rows and the series' sums still
    cover every sample), and the pane rows come in pane order (stable: by series within a
    pane), so that pruning them drops a prefix; without it, in (series, pane) order.
    """
    n = len(sid)
    change = first.copy()
    change[1:] |= pane[1:] != pane[:-1]
    starts = np.flatnonzero(change)
    # one sample per (series, pane) - sampling every pane or slower, the usual case - needs
    # no group sums for the pane rows
    one = len(starts) == n
    hi_s = d.delta >> _SHIFT32
    lo_s = d.delta & _LOW32
    c_hi, c_lo, c_dt = _running(hi_s, np.uint64), _running(lo_s, np.uint64), _running(d.dt, np.int64)
    if from_pane is not None:
        # a series' newest row stays too: a series that stopped before from_pane still has
        # its own newest windows (see windows.roll_columns' `newest`)
        last = np.empty(n, bool)
        last[:-1] = first[1:]
        last[-1:] = True
    if one:
        rows = None if from_pane is None else _pane_order(np.flatnonzero((pane >= from_pane) | last), pane)
        if rows is not None and len(rows) == n and bool((rows[1:] > rows[:-1]).all()):
            rows = None

        def take(x: np.ndarray) -> np.ndarray:
            return x if rows is None else x[rows]

        cols = {
            "sid": take(sid),
            "pane": take(pane),
            "hi": take(hi_s),
            "lo": take(lo_s),
            "dt": take(d.dt),
            "n": take(d.valid).astype(np.uint32),
            "resets": take(d.reset).astype(np.uint32),
            "wraps": take(d.wrap).astype(np.uint32),
        }
    else:
        a = starts
        # a group ends where the next one (kept or not) starts
        b = _ends(starts, n)
        if from_pane is not None:
            kept = _pane_order(np.flatnonzero((pane[starts] >= from_pane) | last[b - 1]), pane[starts])
            a, b = a[kept], b[kept]  # a group is kept or left out whole
        cols = {
            "sid": sid[a],
            "pane": pane[a],
            "hi": _sums(c_hi, a, b),
            "lo": _sums(c_lo, a, b),
            "dt": _sums(c_dt, a, b),
            "n": _counts(d.valid, a, b),
            "resets": _counts(d.reset, a, b),
            "wraps": _counts(d.wrap, a, b),
        }
    rows_frame = frame(cols, COUNTER_PANE_SCHEMA)
    totals = None
    if series_starts is not None:
        se = _ends(series_starts, n)
        totals = (_sums(c_hi, series_starts, se), _sums(c_lo, series_starts, se))
    if per_tier is None:
        return rows_frame, None, totals
    tp = pane // per_tier
    tchange = first.copy()
    tchange[1:] |= tp[1:] != tp[:-1]
    ta = np.flatnonzero(tchange)
    tb = _ends(ta, n)
    tier = frame(
        {
            "sid": sid[ta],
            "pane": pane[ta],
            "hi": _sums(c_hi, ta, tb),
            "lo": _sums(c_lo, ta, tb),
            "dt": _sums(c_dt, ta, tb),
            "n": _counts(d.valid, ta, tb),
            "resets": _counts(d.reset, ta, tb),
            "wraps": _counts(d.wrap, ta, tb),
        },
        COUNTER_PANE_SCHEMA,
    )
    return rows_frame, tier, totals


def gauge_pane_rows(sid: np.ndarray, pane: np.ndarray, v: np.ndarray, first: np.ndarray) -> pl.DataFrame:
    """Gauge pane rows (sum, count, min, max) of samples sorted by (series, time)."""
    starts = group_starts(first, pane)
    one = len(starts) == len(sid)  # one sample per (series, pane): no group sums
    counts = np.ones(len(sid), np.uint32) if one else np.diff(np.append(starts, len(sid))).astype(np.uint32)
    return frame(
        {
            "sid": sid if one else sid[starts],
            "pane": pane if one else pane[starts],
            "sum": v if one else np.add.reduceat(v, starts),
            "cnt": counts,
            "min": v if one else np.minimum.reduceat(v, starts),
            "max": v if one else np.maximum.reduceat(v, starts),
        },
        GAUGE_PANE_SCHEMA,
    )
