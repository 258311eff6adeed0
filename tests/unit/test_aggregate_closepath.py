"""The close path's fast paths give exactly what the general computations they stand in for
give: the same frames (columns, dtypes, values, row order), the same bits."""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.aggregate.config import AggregateSettings
from collector.aggregate.frames import (
    COUNTER_AGG_SCHEMA,
    COUNTER_WIN_SCHEMA,
    GAUGE_WIN_SCHEMA,
    counter_windows,
    exact_increase,
    frame,
)
from collector.aggregate.state import _replace_series
from tests.aggregate_support import make_fleet
from tests.unit.test_aggregate_pollpath import _feed, _state_bits

U64 = st.integers(0, 2**64 - 1)

_T = TypeVar("_T", bound=tuple[Any, ...])


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


def _grouped(keys: list[tuple[int, int]], cols: dict[str, list[int]]) -> list[tuple[int, ...]]:
    """Rows (sid, first pane, sum of each column) of consecutive runs of equal keys."""
    out: list[tuple[int, ...]] = []
    for i, k in enumerate(keys):
        if i and keys[i - 1] == k:
            row = out[-1]
            out[-1] = row[:2] + tuple(a + cols[c][i] for a, c in zip(row[2:], cols, strict=True))
        else:
            out.append((k[0], cols["pane"][i], *(cols[c][i] for c in cols)))
    return [r[:2] + r[3:] for r in out]  # the pane column's own sum dropped


def _by_series(samples: list[_T]) -> tuple[list[_T], np.ndarray, np.ndarray]:
    """Samples (series, pane step, ...) sorted stably by series, with their series ids and
    pane indexes (each series' steps summed from 0)."""
    samples = sorted(samples, key=lambda s: s[0])  # stable: by series
    panes, last = [], {}
    for s in samples:
        last[s[0]] = last.get(s[0], 0) + s[1]
        panes.append(last[s[0]])
    return samples, np.array([s[0] for s in samples], np.uint32), np.array(panes, np.int64)


@settings(max_examples=300, deadline=None)
@given(
    samples=st.lists(
        st.tuples(
            st.integers(0, 5),  # series
            st.integers(0, 3),  # pane step from the previous sample of the series
            st.one_of(st.just(10**15), U64),  # delta
            st.integers(0, 2**40),  # dt
            st.booleans(),
            st.booleans(),
            st.booleans(),
        ),
        max_size=60,
    ),
    per_tier=st.sampled_from([None, 1, 3, 6]),
    from_pane=st.sampled_from([None, 0, 2, 5, 9]),
    all_set=st.booleans(),
)
def test_counter_pane_rows_are_the_group_sums(
    samples: list[tuple[int, int, int, int, bool, bool, bool]],
    per_tier: int | None,
    from_pane: int | None,
    all_set: bool,
) -> None:
    """Pane rows, tier rows and series sums from one running sum per column equal plain
    per-group sums of the 32-bit halves, with or without one sample per pane."""
    from collector.aggregate.counters import Deltas
    from collector.aggregate.frames import COUNTER_PANE_SCHEMA
    from collector.aggregate.grouping import series_runs
    from collector.aggregate.panes import counter_pane_rows

    samples, sid, pane = _by_series(samples)
    panes = pane.tolist()
    delta = np.array([s[2] for s in samples], np.uint64)
    flags = [np.array([bool(s[j]) or all_set for s in samples], bool) for j in (4, 5, 6)]
    d = Deltas(delta, np.array([s[3] for s in samples], np.int64), *flags, np.zeros(len(sid), bool))
    first, sstarts = series_runs(sid)
    rows, tier, totals = counter_pane_rows(sid, pane, d, first, per_tier, from_pane, series_starts=sstarts)

    cols = {
        "pane": panes,
        "hi": [int(x) >> 32 for x in delta],
        "lo": [int(x) & 0xFFFF_FFFF for x in delta],
        "dt": [s[3] for s in samples],
        "n": [int(x) for x in flags[0]],
        "resets": [int(x) for x in flags[1]],
        "wraps": [int(x) for x in flags[2]],
    }
    sids = [int(x) for x in sid]
    grouped = _grouped(list(zip(sids, panes, strict=True)), cols)
    newest = {r[0]: r for r in grouped}  # each series' newest row: kept whatever from_pane
    want = [r for r in grouped if from_pane is None or r[1] >= from_pane or newest[r[0]] is r]
    if from_pane is not None:  # then in pane order (stable: by series within a pane)
        want.sort(key=lambda r: r[1])
    assert rows.schema == pl.Schema(COUNTER_PANE_SCHEMA)
    assert rows.rows() == want
    if per_tier is None:
        assert tier is None
    else:
        assert tier is not None
        assert tier.schema == pl.Schema(COUNTER_PANE_SCHEMA)
        assert tier.rows() == _grouped([(s, p // per_tier) for s, p in zip(sids, panes, strict=True)], cols)
    assert totals is not None
    per_series = _grouped([(s, 0) for s in sids], cols)
    assert totals[0].tolist() == [r[2] for r in per_series]
    assert totals[1].tolist() == [r[3] for r in per_series]


@settings(max_examples=200, deadline=None)
@given(
    samples=st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 2), st.floats(-1e300, 1e300, width=64)), max_size=40
    )
)
def test_gauge_pane_rows_are_the_group_reductions(samples: list[tuple[int, int, float]]) -> None:
    from collector.aggregate.frames import GAUGE_PANE_SCHEMA
    from collector.aggregate.grouping import group_starts, series_runs
    from collector.aggregate.panes import gauge_pane_rows

    samples, sid, pane = _by_series(samples)
    v = np.array([s[2] for s in samples], np.float64)
    first, _ = series_runs(sid)
    got = gauge_pane_rows(sid, pane, v, first)
    starts = group_starts(first, pane)
    want = pl.DataFrame(
        {
            "sid": sid[starts],
            "pane": pane[starts],
            "sum": np.add.reduceat(v, starts) if len(v) else v,
            "cnt": np.diff(np.append(starts, len(sid))).astype(np.uint32),
            "min": np.minimum.reduceat(v, starts) if len(v) else v,
            "max": np.maximum.reduceat(v, starts) if len(v) else v,
        },
        schema=GAUGE_PANE_SCHEMA,
    )
    assert got.schema == want.schema
    assert got.equals(want)


@settings(max_examples=300, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 6), st.integers(-3, 3)), max_size=200),
    wide=st.sampled_from([0, 1 << 16, (1 << 16) - 3, (1 << 32) - 7]),
    ordered=st.booleans(),
    subset=st.booleans(),
)
def test_series_sort_is_the_general_series_time_sort(
    pairs: list[tuple[int, int]], wide: int, ordered: bool, subset: bool
) -> None:
    """The series-only radix sort, with its check and fallback, orders exactly like
    lexsort((t, sid)) (stable, repeated timestamps included), for ids past 2^16 too, on
    a subset of rows as well, whether or not times ascend within each series."""
    from collector.aggregate.grouping import sorted_by_series_time

    sid = np.array([wide + p[0] for p in pairs], np.uint32)
    t = np.array([p[1] for p in pairs], np.int64) * 10**9
    if ordered:  # times ascending within each series in buffer order: the usual case
        t = np.sort(t)
    tag = np.arange(len(sid), dtype=np.int64)  # which row went where
    idx = np.arange(0, len(sid), 2) if subset else None
    got = sorted_by_series_time((sid, t, tag), idx)
    rows = np.arange(len(sid)) if idx is None else idx
    want = rows[np.lexsort((t[rows], sid[rows]))]
    assert np.array_equal(got[2], want)
    assert np.array_equal(got[0], sid[want])
    assert np.array_equal(got[1], t[want])


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 12)), max_size=8), max_size=4),
    keep_from=st.integers(-1, 14),
)
def test_pruned_and_appended_panes_are_filter_and_concat(
    chunks: list[list[tuple[int, int]]], keep_from: int
) -> None:
    from collector.aggregate.frames import GAUGE_PANE_SCHEMA, empty
    from collector.aggregate.state import _appended, _panes_from

    def rows(pairs: list[tuple[int, int]]) -> pl.DataFrame:
        n = len(pairs)
        return pl.DataFrame(
            {
                "sid": [p[0] for p in pairs],
                "pane": [p[1] for p in pairs],
                "sum": [p[0] / 3 for p in pairs],
                "cnt": [1] * n,
                "min": [-p[1] * 0.1 for p in pairs],
                "max": [p[1] * 0.7 for p in pairs],
            },
            schema=GAUGE_PANE_SCHEMA,
        )

    got, want = empty(GAUGE_PANE_SCHEMA), empty(GAUGE_PANE_SCHEMA)
    for c in chunks:
        got = _appended(got, rows(c))
        want = pl.concat([want, rows(c)]) if len(want) else rows(c)
        assert got.equals(want)
    pruned = _panes_from(got, keep_from)
    assert pruned.schema == want.schema
    assert pruned.equals(want.filter(pl.col("pane") >= keep_from))
    in_order = want.sort("pane", maintain_order=True)  # rows in pane order: pruned by a slice
    assert _panes_from(in_order, keep_from).equals(in_order.filter(pl.col("pane") >= keep_from))


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 30),  # series
            st.integers(0, 20),  # pane
            st.one_of(st.integers(0, 2**32 - 1), U64),  # hi: sums past 2^53 and 2^64 too
            st.integers(0, 2**32 - 1),
            st.integers(0, 10**15),
            st.integers(0, 2**32 - 1),  # a count: near 2^32 its sums wrap in roll_columns
        ),
        max_size=60,
        unique_by=lambda r: (r[0], r[1]),  # a pane closes once
    ),
    n=st.sampled_from([1, 2, 5, 6]),
    end=st.integers(0, 24),
    tumbling=st.booleans(),
    pane_major=st.booleans(),
    span=st.sampled_from([0, 0, 1, 4]),
)
def test_dense_counter_windows_are_the_sorted_roll(
    rows: list[tuple[int, int, int, int, int, int]],
    n: int,
    end: int,
    tumbling: bool,
    pane_major: bool,
    span: int,
) -> None:
    """The sort-free counter roll (modular sums per (series, end) with np.add.at) gives what
    the sorted roll gives - rows, order, dtypes, bits - also where a sum passes 2^53 or a
    32-bit count's sum wraps."""
    from unittest import mock

    from collector.aggregate import windows
    from collector.aggregate.frames import COUNTER_PANE_SCHEMA

    panes = pl.DataFrame(
        {
            "sid": [r[0] for r in rows],
            "pane": [r[1] for r in rows],
            "hi": [r[2] for r in rows],
            "lo": [r[3] for r in rows],
            "dt": [r[4] for r in rows],
            "n": [r[5] for r in rows],
            "resets": [r[5] % 3 for r in rows],
            "wraps": [0] * len(rows),
        },
        schema=COUNTER_PANE_SCHEMA,
    )
    if pane_major:  # as a close without the window log keeps them: runs of rows, one per window
        panes = panes.sort("pane", "sid")
    # tier rows, or the ends a close rolls (one: the newest only; several: for the window log)
    lo, hi = (end - 12, end) if tumbling else (end - span, end)
    got = windows.roll_columns(panes, n, lo, hi, 10, True, tumbling=tumbling)
    with mock.patch.object(windows, "_dense_counter_windows", return_value=None):
        want = windows.roll_columns(panes, n, lo, hi, 10, True, tumbling=tumbling)
    if want is None:
        assert got is None
        return
    assert got is not None
    assert list(got) == list(want)
    for c in want:
        assert got[c].dtype == want[c].dtype, c
        assert np.array_equal(got[c], want[c]), c


def _pane_frames(
    rows: list[tuple[int, int, int, float]], dt_per_pane: int, wraps: bool
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Counter and gauge pane frames of (sid, pane, increase, gauge value) rows, one sample
    per pane: dt = pane * dt_per_pane, a wrap on every odd series when `wraps`."""
    from collector.aggregate.frames import COUNTER_PANE_SCHEMA, GAUGE_PANE_SCHEMA

    k = len(rows)
    cp = pl.DataFrame(
        {
            "sid": [r[0] for r in rows],
            "pane": [r[1] for r in rows],
            "hi": [r[2] >> 32 for r in rows],
            "lo": [r[2] & 0xFFFF_FFFF for r in rows],
            "dt": [r[1] * dt_per_pane for r in rows],
            "n": [1] * k,
            "resets": [0] * k,
            "wraps": [r[0] % 2 if wraps else 0 for r in rows],
        },
        schema=COUNTER_PANE_SCHEMA,
    )
    gp = pl.DataFrame(
        {
            "sid": [r[0] for r in rows],
            "pane": [r[1] for r in rows],
            "sum": [r[3] for r in rows],
            "cnt": [1] * k,
            "min": [r[3] for r in rows],
            "max": [r[3] for r in rows],
        },
        schema=GAUGE_PANE_SCHEMA,
    )
    return cp, gp


def _pane_rows(max_pane: int) -> st.SearchStrategy[list[tuple[int, int, int, float]]]:
    """(sid, pane, increase, gauge value) rows for _pane_frames, one per (sid, pane)."""
    return st.lists(
        st.tuples(st.integers(0, 12), st.integers(0, max_pane), st.integers(0, 2**40), st.floats(-1e6, 1e6)),
        max_size=50,
        unique_by=lambda r: (r[0], r[1]),
    )


@settings(max_examples=300, deadline=None)
@given(
    rows=_pane_rows(max_pane=20),
    n=st.sampled_from([1, 2, 5, 6]),
    lo=st.integers(0, 24),
    span=st.integers(0, 8),
)
def test_newest_windows_are_the_newest_of_every_window(
    rows: list[tuple[int, int, int, float]], n: int, lo: int, span: int
) -> None:
    """`newest` gives, per series, exactly the row the window log's newest-per-series filter
    keeps out of every window ending in [lo, hi] - counters and gauges, bits included -
    also for a series whose data stops before hi."""
    from collector.aggregate import windows

    hi = lo + span
    cp, gp = _pane_frames(rows, dt_per_pane=7, wraps=True)
    for panes, counter, schema in ((cp, True, COUNTER_AGG_SCHEMA), (gp, False, GAUGE_WIN_SCHEMA)):
        every = windows.roll(panes, n, lo, hi, 10, counter)
        want = every.filter(pl.col("end") == pl.col("end").max().over("sid"))
        cols = windows.roll_columns(panes, n, lo, hi, 10, counter, newest=True)
        got = pl.DataFrame(schema=schema) if cols is None else frame(cols, schema)
        assert got.schema == want.schema
        assert got.equals(want), (counter, got, want)


@settings(max_examples=20, deadline=None)
@given(
    stop_at=st.integers(20, 119),
    cuts=st.lists(st.integers(0, 120), max_size=5),
    windows_s=st.sampled_from([(10, 60, 300), (10, 60, 300, 900), (10, 30)]),
)
def test_a_site_that_stops_mid_close_gets_the_same_windows_with_or_without_the_log(
    stop_at: int, cuts: list[int], windows_s: tuple[int, ...]
) -> None:
    """A site whose records stop inside a close (silent, it no longer holds the watermark):
    its series' newest windows end before the close's newest end. Without the window log
    they are the same windows, and the same state, as the close that computes every window
    gives, whatever the poll grouping."""
    # a silent site stops holding the watermark after 30 s: the close goes on past its data
    cfg = AggregateSettings(windows_s=windows_s, allowed_lateness_s=10, site_idle_s=30)
    records = [v for _, v in make_fleet().records][:120]
    assert sum(b"jp-tokyo-01" in v for v in records) < len(records)  # two sites
    kept = [v for i, v in enumerate(records) if i < stop_at or b"jp-tokyo-01" not in v]
    cuts = [c % (len(kept) + 1) for c in cuts]
    plain = _feed(kept, cuts, cfg)
    logged = _feed(kept, cuts, cfg, log=True)
    assert _state_bits(plain) == _state_bits(logged)
    for a, b in zip(
        (*plain.counter_panes, *plain.gauge_panes), (*logged.counter_panes, *logged.gauge_panes), strict=True
    ):
        assert a.sort("sid", "pane").equals(b.sort("sid", "pane"))


@settings(max_examples=200, deadline=None)
@given(
    rows=_pane_rows(max_pane=40),
    n=st.sampled_from([1, 5, 6]),
    since=st.integers(0, 48),
)
def test_tier_rows_since_keep_each_series_newest(
    rows: list[tuple[int, int, int, float]], n: int, since: int
) -> None:
    """`since`: the tier rows of ends from it on, and each series' newest: those of every
    end, filtered so (counters and gauges)."""
    from collector.aggregate import windows

    cp, gp = _pane_frames(rows, dt_per_pane=1, wraps=False)
    for panes, counter, schema in ((cp, True, COUNTER_AGG_SCHEMA), (gp, False, GAUGE_WIN_SCHEMA)):
        every = windows.roll(panes, n, 0, 48, 10, counter, tumbling=True)
        want = every.filter(
            (pl.col("end") >= since * 10) | (pl.col("end") == pl.col("end").max().over("sid"))
        )
        cols = windows.roll_columns(panes, n, 0, 48, 10, counter, tumbling=True, since=since)
        got = pl.DataFrame(schema=schema) if cols is None else frame(cols, schema)
        assert got.schema == want.schema
        assert got.equals(want)


@settings(max_examples=200, deadline=None)
@given(
    samples=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 4)), max_size=40),
    seen=st.lists(st.integers(0, 5), unique=True),
    calls=st.integers(1, 3),
)
def test_sample_ledger_notes_are_those_of_the_general_count(
    samples: list[tuple[int, int]], seen: list[int], calls: int
) -> None:
    """note_processed's shortcut (every sample a new timestamp) counts samples, steps and
    first and last times as the per-sample count does: against a plain reimplementation."""
    from collector.aggregate.grouping import series_runs
    from collector.aggregate.registry import NO_SAMPLE, SeriesRegistry

    reg = SeriesRegistry(1000)
    n_ser = 6
    reg.grow(n_ser)
    last = {s: (10 * s if s in seen else None) for s in range(n_ser)}
    for s in range(n_ser):
        reg.last_sample[s] = NO_SAMPLE if last[s] is None else last[s]
    want_count = {s: int(reg.sample_count[s]) for s in range(n_ser)}
    want_first = {s: int(reg.first_sample[s]) for s in range(n_ser)}
    want_step = {s: int(reg.step[s]) for s in range(n_ser)}
    base = 100
    for c in range(calls):
        batch = sorted((s, base + c * 100 + d) for s, d in samples)
        if not batch:
            continue
        sid = np.array([b[0] for b in batch], np.uint32)
        t = np.array([b[1] for b in batch], np.int64)
        _, starts = series_runs(sid)
        reg.note_processed(sid, t, starts)
        for s, tt in batch:
            prev = last[s]
            if prev is None:
                want_count[s] += 1
                want_first[s] = tt
            elif tt > prev:
                want_count[s] += 1
                want_step[s] = tt - prev if want_step[s] == 0 else min(want_step[s], tt - prev)
            last[s] = tt if prev is None else max(prev, tt)
    for s in range(n_ser):
        assert int(reg.sample_count[s]) == want_count[s], s
        assert int(reg.step[s]) == want_step[s], s
        assert int(reg.first_sample[s]) == want_first[s], s
        assert int(reg.last_sample[s]) == (NO_SAMPLE if last[s] is None else last[s]), s
