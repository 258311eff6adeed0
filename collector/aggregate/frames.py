"""Column layouts of the aggregation state's Polars frames (panes, windows, totals).

Shared by the per-partition state (collector/aggregate/state.py), the window roll
(windows.py), the checkpoint codec (checkpoint.py) and what the aggregator publishes
(outputs.py). Time columns are event time in nanoseconds since the Unix epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

NS = 1_000_000_000  # nanoseconds per second

TWO32 = pl.lit(1 << 32, dtype=pl.Int128)

# A counter increase is kept as the sums of its 32-bit halves (increase = hi * 2^32 + lo):
# UInt64 group sums are several times cheaper than Int128 ones in Polars and cannot overflow
# (each half is < 2^32, and no window has 2^32 intervals); Int128 appears only in the
# published windows.
COUNTER_PANE_SCHEMA = {
    "sid": pl.UInt32,
    "pane": pl.Int64,
    "hi": pl.UInt64,
    "lo": pl.UInt64,
    "dt": pl.Int64,
    "n": pl.UInt32,
    "resets": pl.UInt32,
    "wraps": pl.UInt32,
}
GAUGE_PANE_SCHEMA = {
    "sid": pl.UInt32,
    "pane": pl.Int64,
    "sum": pl.Float64,
    "cnt": pl.UInt32,
    "min": pl.Float64,
    "max": pl.Float64,
}
# `at`: event time (ns) the totals are complete up to (the closed pane boundary)
TOTALS_SCHEMA = {"sid": pl.UInt32, "hi": pl.UInt64, "lo": pl.UInt64, "created": pl.Int64, "at": pl.Int64}
COUNTER_AGG_SCHEMA = {
    "sid": pl.UInt32,
    "end": pl.Int64,
    "hi": pl.UInt64,
    "lo": pl.UInt64,
    "dt": pl.Int64,
    "n": pl.UInt32,
    "resets": pl.UInt32,
    "wraps": pl.UInt32,
}
COUNTER_WIN_SCHEMA = {
    "sid": pl.UInt32,
    "end": pl.Int64,
    "inc": pl.Int128,
    "dt": pl.Int64,
    "n": pl.UInt32,
    "resets": pl.UInt32,
    "wraps": pl.UInt32,
}
GAUGE_WIN_SCHEMA = {
    "sid": pl.UInt32,
    "end": pl.Int64,
    "sum": pl.Float64,
    "cnt": pl.UInt32,
    "min": pl.Float64,
    "max": pl.Float64,
}


_EMPTY: dict[tuple[tuple[str, Any], ...], pl.DataFrame] = {}


def empty(schema: Mapping[str, Any]) -> pl.DataFrame:
    """A frame with no rows in this layout (one per layout, shared: frames are immutable)."""
    key = tuple(schema.items())
    try:
        out = _EMPTY.get(key)
    except TypeError:  # a dtype that does not hash
        return pl.DataFrame(schema=schema)
    if out is None:
        out = _EMPTY[key] = pl.DataFrame(schema=schema)
    return out


def frame(cols: Mapping[str, np.ndarray], schema: Mapping[str, Any]) -> pl.DataFrame:
    """`pl.DataFrame(cols, schema=schema)` of NumPy columns - the same columns, dtypes and
    values - built one Series per column: several times cheaper than the dict constructor
    with a schema on the small frames a close builds many of. A column whose NumPy dtype is
    not the layout's is cast (strictly, as the constructor does)."""
    out = []
    for name, dtype in schema.items():
        s = pl.Series(name, cols[name])
        out.append(s if s.dtype == dtype else s.cast(dtype))
    return pl.DataFrame(out)


_SHIFT32 = np.uint64(32)


def counter_windows(cols: Mapping[str, np.ndarray]) -> pl.DataFrame:
    """Rolled counter windows (NumPy columns in COUNTER_AGG_SCHEMA's layout) as
    COUNTER_WIN_SCHEMA's frame: `exact_increase` of them. When every increase fits in 64
    bits - hi < 2^32 and hi * 2^32 + lo without a carry, the usual case by far - it is
    formed in NumPy and cast once (UInt64 to Int128 is exact); otherwise through Int128."""
    hi, lo = cols["hi"], cols["lo"]
    if len(hi):
        w = (hi << _SHIFT32) + lo  # modular: used only when it is exact
        if int(hi.max()) >= 1 << 32 or not bool((w >= lo).all()):
            return exact_increase(frame(cols, COUNTER_AGG_SCHEMA))
    else:
        w = np.zeros(0, np.uint64)
    inc = pl.Series("inc", w.astype(np.uint64, copy=False)).cast(pl.Int128)
    out = []
    for name, dtype in COUNTER_WIN_SCHEMA.items():
        if name == "inc":
            out.append(inc)
            continue
        s = pl.Series(name, cols[name])
        out.append(s if s.dtype == dtype else s.cast(dtype))
    return pl.DataFrame(out)


def exact_increase(windows: pl.DataFrame) -> pl.DataFrame:
    """Counter windows with the increase as one exact Int128 (hi * 2^32 + lo)."""
    return windows.select(
        "sid",
        "end",
        inc=pl.col("hi").cast(pl.Int128) * TWO32 + pl.col("lo").cast(pl.Int128),
        dt="dt",
        n="n",
        resets="resets",
        wraps="wraps",
    )


def period_increase() -> dict[str, pl.Expr]:
    """A period row's (start, end, value) columns as a counter window's: one interval, its
    count as the increase, no resets or wraps."""
    return {
        "inc": pl.col("value").cast(pl.Int128),
        "dt": pl.col("end") - pl.col("start"),
        "n": pl.lit(1, pl.UInt32),
        "resets": pl.lit(0, pl.UInt32),
        "wraps": pl.lit(0, pl.UInt32),
    }
