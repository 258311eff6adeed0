"""Sliding windows from panes: the roll every window length is built with.

Window length j is built from the partial aggregates of tier src(j) = max(0, j - 1): tier 0
holds panes of the shortest window, tier k >= 1 holds the closed windows of length
windows_s[k]. So (10 s, 1 min, 5 min) = 10 s panes; 1 min from six of them sliding by
10 s; 5 min from five 1-min aggregates sliding by 1 min. Per-sample work happens once, and
a series keeps 6 + 5 small rows instead of 30. The per-partition state
(collector/aggregate/state.py) owns the tiers and calls these pure functions on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from collector.aggregate.frames import COUNTER_AGG_SCHEMA, GAUGE_WIN_SCHEMA, empty, frame
from collector.aggregate.grouping import group_sum


@dataclass(frozen=True, slots=True)
class Tiers:
    """Which panes each window length is rolled from (see the module docstring)."""

    count: int  # tiers of panes kept
    source: tuple[int, ...]  # per window length: the tier it is rolled from
    pane_ns: tuple[int, ...]  # per tier: its pane length (ns)
    panes_per_window: tuple[int, ...]  # per window length: source-tier panes in one window
    keep: tuple[int, ...]  # per tier: panes kept for the windows rolled from it

    @classmethod
    def of(cls, windows_s: tuple[int, ...], ns: int) -> Tiers:
        w = windows_s
        count = max(1, len(w) - 1)
        source = tuple(max(0, j - 1) for j in range(len(w)))
        per_window = tuple(w[j] // w[source[j]] for j in range(len(w)))
        keep = tuple(
            max([per_window[j] for j in range(len(w)) if source[j] == k], default=1) for k in range(count)
        )
        return cls(count, source, tuple(x * ns for x in w[:count]), per_window, keep)


def roll(
    panes: pl.DataFrame,
    n: int,
    first_end: int,
    last_end: int,
    size: int,
    counter: bool,
    tumbling: bool = False,
) -> pl.DataFrame:
    """`roll_columns` as a frame (COUNTER_AGG_SCHEMA or GAUGE_WIN_SCHEMA)."""
    schema = COUNTER_AGG_SCHEMA if counter else GAUGE_WIN_SCHEMA
    cols = roll_columns(panes, n, first_end, last_end, size, counter, tumbling)
    return empty(schema) if cols is None else frame(cols, schema)


def roll_columns(
    panes: pl.DataFrame,
    n: int,
    first_end: int,
    last_end: int,
    size: int,
    counter: bool,
    tumbling: bool = False,
    newest: bool = False,
    since: int | None = None,
) -> dict[str, np.ndarray] | None:
    """Windows of n consecutive tier panes ending at pane indices e in [first_end, last_end]
    (window e covers panes e-n .. e-1 and ends at e * size); `tumbling`: only ends that are
    multiples of n; `newest`: only each series' newest window with data among those ends
    (ending at min(last_end, its newest pane + n): a series that stopped sending before
    the newest end still gets its own last window); `since` (tumbling): no ends before it
    but each series' newest. One row per (series, end) with data, ordered by (end, series)
    (by (series, end) when tumbling: tier rows, whose order nothing depends on).

    NumPy on rows sorted by (series, end, pane): every window is a sequential sum over its
    own panes in pane order, so its float bits do not depend on which other ends are
    computed (the window log computes every end, /metrics alone only the newest).
    NumPy columns in the frame layout (COUNTER_AGG_SCHEMA or GAUGE_WIN_SCHEMA) with their
    dtypes; None when no window has data.
    """
    if tumbling:
        first_end = -(-first_end // n) * n
        last_end = (last_end // n) * n
    if not len(panes) or first_end > last_end:
        return None
    pane = panes["pane"].to_numpy()
    rows = np.flatnonzero((pane >= first_end - n) & (pane < last_end))
    if not len(rows):
        return None
    p = pane[rows]
    if newest:
        # each series' newest pane, + n: its newest end
        end_of = np.minimum(_series_max(panes, rows, p) + n, last_end)  # >= first_end: p >= first_end - n
        mine = p >= end_of - n  # the panes of the series' newest window
        rows, p, first = rows[mine], p[mine], end_of[mine]
        cnt = np.ones(len(p), np.int64)
    elif tumbling:
        first = (p // n + 1) * n
        if since is not None and int(first.min()) < since:
            mine = (first >= since) | (first == _series_max(panes, rows, first))  # or the series' newest end
            rows, p, first = rows[mine], p[mine], first[mine]
        cnt = np.ones(len(p), np.int64)
    else:
        first = np.maximum(p + 1, first_end)
        cnt = np.maximum(np.minimum(p + n, last_end) - first + 1, 0)
    if counter and len(rows) == int(cnt.sum()):  # every row in one window: no repeats
        dense = _dense_counter_windows(panes, rows, first, size, n if tumbling else 1)
        if dense is not None:
            return dense if tumbling else _end_major(dense)
    sid_all = panes["sid"].to_numpy()
    # rows in (series, pane) order: one int64 key, unique per row (a pane closes once)
    key = (sid_all[rows].astype(np.int64) << 32) | (p - p.min())
    # unique keys, so any sort gives the same order; the rows come as a few runs already
    # sorted by (series, pane) - the panes of each close - which a stable sort merges
    by = np.argsort(key, kind="stable")
    rows, first, cnt = rows[by], first[by], cnt[by]
    total = int(cnt.sum())
    if len(rows) == total:  # one end per row (tumbling, or the newest window only)
        rep, e = rows, first
    else:
        rep = np.repeat(rows, cnt)
        start = np.cumsum(cnt) - cnt
        e = np.repeat(first, cnt) + (np.arange(total) - np.repeat(start, cnt))
        # stable: within one (series, end) the panes stay in pane order
        order = np.argsort((sid_all[rep].astype(np.int64) << 32) | (e - e.min()), kind="stable")
        rep, e = rep[order], e[order]
    sid = sid_all[rep]
    change = np.ones(total, bool)
    change[1:] = (sid[1:] != sid[:-1]) | (e[1:] != e[:-1])
    g = np.flatnonzero(change)
    single = len(g) == total  # one pane per window: nothing to sum (x is its own sum)
    cols: dict[str, np.ndarray] = {"sid": sid[g], "end": e[g] * size}
    ops = (
        {c: np.add for c in ("hi", "lo", "dt", "n", "resets", "wraps")}
        if counter
        else {"sum": np.add, "cnt": np.add, "min": np.minimum, "max": np.maximum}
    )
    for c, op in ops.items():
        x = panes[c].to_numpy()[rep]
        # sums of counts stay in their column's type (UInt32: a Polars cast costs more)
        cols[c] = (
            x
            if single
            else group_sum(x, g).astype(x.dtype, copy=False)
            if op is np.add and x.dtype.kind in "iu"
            else op.reduceat(x, g)
        )
    if first_end == last_end or tumbling:
        # one end: (series, end) order is (end, series) order; tier rows (tumbling) are
        # kept in (series, end) order, which the next roll's stable sort merges cheaply
        return cols
    return _end_major(cols)


def _series_max(panes: pl.DataFrame, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    """For each of `rows` (pane rows), the largest `x` (int64, one per row) among the rows of
    its series."""
    sid = panes["sid"].to_numpy()[rows].astype(np.int64)
    top = np.full(int(sid.max()) + 1, np.iinfo(np.int64).min, np.int64)
    np.maximum.at(top, sid, x)
    return top[sid]


def _end_major(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Windows in (series, end) order reordered by (end, series)."""
    end = cols["end"]
    if len(end) < 2 or bool((end[1:] == end[0]).all()):  # one end: the same order
        return cols
    out_order = np.lexsort((cols["sid"], end))
    return {k: v[out_order] for k, v in cols.items()}


def _dense_counter_windows(
    panes: pl.DataFrame, rows: np.ndarray, end: np.ndarray, size: int, step: int = 1
) -> dict[str, np.ndarray] | None:
    """Counter windows when each selected pane row (`rows`) belongs to one window (its end
    index in `end`): roll_columns' result - the same rows, order, dtypes and bits - without
    a sort. Each column is summed per (series, end) into a dense (series, end) grid with
    `np.add.at`, in 64-bit modular integer arithmetic like roll_columns' running sums (and
    cast back to the column's type as they are), so the sums are the same whatever order
    the rows come in. `step`: the ends are multiples of it (tumbling: n). None when the
    grid would be much larger than the rows."""
    if rows[-1] - rows[0] + 1 == len(rows):  # a run of rows: read them without a gather
        panes = panes.slice(int(rows[0]), len(rows))

        def take(c: str) -> np.ndarray:
            return panes[c].to_numpy()
    else:

        def take(c: str) -> np.ndarray:
            return panes[c].to_numpy()[rows]

    sid = take("sid")
    if sid.dtype.kind not in "ui":
        return None
    e_lo = int(end.min())
    e_idx = (end - e_lo) // step if step > 1 else end - e_lo
    n_end = int(e_idx.max()) + 1
    n_sid = int(sid.max()) + 1
    grid = n_sid * n_end
    if grid > max(4 * len(rows), 1 << 16):
        return None
    # (series, end) order: the order roll_columns gives (one end: series order)
    key = sid.astype(np.int64) * n_end + e_idx
    if bool((key[1:] > key[:-1]).all()):  # one row per window, in order: nothing to sum
        return {"sid": sid, "end": end * size} | {
            c: take(c) for c in ("hi", "lo", "dt", "n", "resets", "wraps")
        }
    present = np.flatnonzero(np.bincount(key, minlength=grid))
    out: dict[str, np.ndarray] = {
        "sid": (present // n_end).astype(sid.dtype),
        "end": ((present % n_end) * step + e_lo) * size,
    }
    for c in ("hi", "lo", "dt", "n", "resets", "wraps"):
        x = take(c)
        wide = np.uint64 if x.dtype.kind in "ub" else np.int64
        acc = np.zeros(grid, wide)
        np.add.at(acc, key, x.astype(wide, copy=False))  # one dtype: add.at's fast loop
        out[c] = acc[present].astype(x.dtype, copy=False)
    return out


def tier_columns(windows: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """`tier_rows` of rolled windows' NumPy columns (roll_columns; their dtypes are the
    tier's pane layout's): the same rows as NumPy columns."""
    out = {"sid": windows["sid"], "pane": windows["end"] // size - 1}
    out.update((c, x) for c, x in windows.items() if c not in ("sid", "end"))
    return out


def tier_rows(windows: pl.DataFrame, size: int, schema: Mapping[str, Any]) -> pl.DataFrame:
    """Closed windows as panes of the next tier (pane length `size`, `schema` the tier's
    pane layout: COUNTER_PANE_SCHEMA or GAUGE_PANE_SCHEMA)."""
    rest = [c for c in schema if c not in ("sid", "pane")]
    rows = windows.select("sid", (pl.col("end") // size - 1).alias("pane"), *rest)
    return rows.cast(schema)  # type: ignore[arg-type]
