"""The close path's fast paths give exactly what the general computations they stand in for
give: the same frames (columns, dtypes, values, row order), the same bits."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.aggregate.frames import (
    COUNTER_AGG_SCHEMA,
    COUNTER_WIN_SCHEMA,
    GAUGE_WIN_SCHEMA,
    counter_windows,
    exact_increase,
    frame,
)
from collector.aggregate.state import _replace_series

U64 = st.integers(0, 2**64 - 1)


def _counter_cols(rows: list[tuple[int, int, int, int, int]]) -> dict[str, np.ndarray]:
    n = len(rows)
    return {
        "sid": np.array([r[0] for r in rows], np.uint32),
        "end": np.arange(n, dtype=np.int64) * 10,
        "hi": np.array([r[1] for r in rows], np.uint64),
        "lo": np.array([r[2] for r in rows], np.uint64),
        "dt": np.array([r[3] for r in rows], np.int64),
        "n": np.array([r[4] for r in rows], np.uint32),
        "resets": np.zeros(n, np.uint32),
        "wraps": np.ones(n, np.uint32),
    }


_ROWS = st.lists(
    st.tuples(
        st.integers(0, 2**32 - 1),
        st.one_of(st.integers(0, 2**32 - 1), U64),  # hi: usually < 2^32, sometimes not
        st.one_of(st.integers(0, 2**32 - 1), U64),  # lo near 2^64: a carry out of 64 bits
        st.integers(-(2**63), 2**63 - 1),
        st.integers(0, 2**32 - 1),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(_ROWS)
def test_frame_is_the_dict_constructor_with_a_schema(rows: list[tuple[int, int, int, int, int]]) -> None:
    cols = _counter_cols(rows)
    assert frame(cols, COUNTER_AGG_SCHEMA).equals(pl.DataFrame(cols, schema=COUNTER_AGG_SCHEMA))
    assert frame(cols, COUNTER_AGG_SCHEMA).schema == pl.DataFrame(cols, schema=COUNTER_AGG_SCHEMA).schema
    # a column of another NumPy dtype is cast as the constructor casts it
    g = {
        "sid": cols["sid"].astype(np.int64),
        "end": cols["end"],
        "sum": cols["dt"].astype(np.float64),
        "cnt": cols["n"].astype(np.int64),
        "min": cols["lo"].astype(np.float64),
        "max": cols["hi"].astype(np.float64),
    }
    a, b = frame(g, GAUGE_WIN_SCHEMA), pl.DataFrame(g, schema=GAUGE_WIN_SCHEMA)
    assert a.schema == b.schema
    assert a.equals(b)


@settings(max_examples=300, deadline=None)
@given(_ROWS)
def test_counter_windows_are_the_exact_int128_increase(rows: list[tuple[int, int, int, int, int]]) -> None:
    """The 64-bit shortcut and the Int128 fallback both equal hi * 2^32 + lo in Int128."""
    cols = _counter_cols(rows)
    fast = counter_windows(cols)
    slow = exact_increase(pl.DataFrame(cols, schema=COUNTER_AGG_SCHEMA))
    assert fast.schema == slow.schema == pl.Schema(COUNTER_WIN_SCHEMA)
    assert fast.equals(slow)
    assert fast["inc"].to_list() == [r[1] * 2**32 + r[2] for r in rows]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 40), unique=True, max_size=20),
    st.lists(st.integers(0, 40), unique=True, min_size=1, max_size=20),
)
def test_replacing_the_newest_series_is_filter_then_concat(old_sids: list[int], new_sids: list[int]) -> None:
    def win(sids: list[int], end: int) -> pl.DataFrame:
        cols = _counter_cols([(s, s, s, s, s) for s in sids])
        cols["end"] = np.full(len(sids), end, np.int64)
        return counter_windows(cols)

    old, newest = win(old_sids, 10), win(new_sids, 20)
    want = pl.concat([old.filter(~pl.col("sid").is_in(newest["sid"].implode())), newest])
    got = _replace_series(old, newest)
    assert got.schema == want.schema
    assert got.equals(want)
    # the usual case: every old series has a newer window
    assert _replace_series(win(new_sids, 10), newest).equals(newest)


@settings(max_examples=100, deadline=None)
@given(_ROWS, st.sampled_from([10, 60]))
def test_tier_columns_are_tier_rows(rows: list[tuple[int, int, int, int, int]], size: int) -> None:
    from collector.aggregate.frames import COUNTER_PANE_SCHEMA
    from collector.aggregate.windows import tier_columns, tier_rows

    cols = _counter_cols(rows)
    cols["end"] = (np.arange(len(rows), dtype=np.int64) + 1) * size
    want = tier_rows(pl.DataFrame(cols, schema=COUNTER_AGG_SCHEMA), size, COUNTER_PANE_SCHEMA)
    got = frame(tier_columns(cols, size), COUNTER_PANE_SCHEMA)
    assert got.schema == want.schema
    assert got.equals(want)
