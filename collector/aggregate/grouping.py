"""Array helpers for samples sorted by (series, time): the sort itself and per-group sums.

Used when the aggregation state closes panes (collector/aggregate/state.py) and rolls
windows (windows.py). Pure NumPy; integer sums are modular, so exact whenever each
group's sum fits its type.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def order_by_series_time(sid: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The stable order by (series, time): `np.lexsort((t, sid))`, as one stable sort of one
    int64 key (sid * span + t - t0) when that fits - the buffer comes as runs already in order
    (one record's samples), which a stable sort merges at about half the cost."""
    if not len(sid):
        return np.zeros(0, np.intp)
    t0, t1 = int(t.min()), int(t.max())
    span = t1 - t0 + 1
    if (int(sid.max()) + 1) * span >= 1 << 63:
        return np.lexsort((t, sid))
    return np.argsort(sid.astype(np.int64) * span + (t - t0), kind="stable")


def sorted_by_series_time(
    cols: Sequence[np.ndarray], idx: np.ndarray | None = None
) -> tuple[np.ndarray, ...]:
    """`cols` (cols[0] series ids, cols[1] times; `idx`: only these rows, in this order)
    reordered by `order_by_series_time`: `tuple(c[idx][order] for c in cols)`.

    Samples usually reach a close in time order within each series (records arrive in
    order, each holding a few ticks): then the stable order by series alone is that order.
    Series ids are small unsigned integers, so that is one stable sort of 16-bit keys (two
    for ids from 2^16), which NumPy does as a radix sort, several times cheaper than the
    general key's merge sort. Whether times ascend within every series is checked on the
    result; where they do not, the result is sorted again by the general key (stable, so
    from the series order it gives exactly the general order)."""
    sid = cols[0] if idx is None else cols[0][idx]
    top = int(sid.max()) if len(sid) else 0
    if len(sid) < 2 or sid.dtype.kind != "u" or top >= 1 << 32:
        t = cols[1] if idx is None else cols[1][idx]
        order = order_by_series_time(sid, t)
    else:
        if top < 1 << 16:
            order = np.argsort(sid.astype(np.uint16), kind="stable")
        else:
            order = np.argsort((sid & 0xFFFF).astype(np.uint16), kind="stable")
            order = order[np.argsort((sid[order] >> 16).astype(np.uint16), kind="stable")]
    if idx is not None:
        order = idx[order]
    out = tuple(c[order] for c in cols)
    s, t = out[0], out[1]
    if len(s) > 1 and not bool(((t[1:] >= t[:-1]) | (s[1:] != s[:-1])).all()):
        again = order_by_series_time(s, t)
        out = tuple(c[again] for c in out)
    return out


def series_runs(sid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Of samples sorted by series: the mask of each series' first sample, and its positions
    (computed once per close and shared by every step that works per series)."""
    first = np.ones(len(sid), bool)
    first[1:] = sid[1:] != sid[:-1]
    return first, np.flatnonzero(first)


def group_starts(first: np.ndarray, pane: np.ndarray) -> np.ndarray:
    """Positions where a (series, pane) group starts (`first`: the series' first samples)."""
    change = first.copy()
    change[1:] |= pane[1:] != pane[:-1]
    return np.flatnonzero(change)


def group_sum(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """`np.add.reduceat(x, starts)` of an integer column (groups start at `starts`, the first
    at 0), as differences of one running sum: modular arithmetic, so exact whenever each
    group's sum fits the result type (uint64 for unsigned input, as reduceat gives), and
    about twice as fast as reduceat on groups of a few rows."""
    c = np.cumsum(x, dtype=np.uint64 if x.dtype.kind in "ub" else np.int64)
    out = c[np.append(starts[1:], len(x)) - 1]
    out[1:] -= c[starts[1:] - 1]
    return out
