"""Counter arithmetic: exact deltas on uint64, wraps only where the width explains them,
resets never negative nor a spike; and the Polars integer traps the code guards against."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from collector.aggregate.counters import Carry, counter_deltas, split_sum_arrays
from tests.aggregate_support import TruthCounter

TWO64 = 1 << 64
NEAR = st.sampled_from(
    [
        0,
        1,
        (1 << 31) - 1,
        1 << 31,
        (1 << 32) - 1,
        1 << 32,
        (1 << 53) - 1,
        1 << 53,
        (1 << 53) + 1,
        (1 << 63) - 1,
        1 << 63,
        TWO64 - 2,
        TWO64 - 1,
    ]
)


@st.composite
def counter_series(draw: st.DrawFn, bits: int) -> list[tuple[int, int, int]]:
    """(t, value, epoch) samples of one series: increments, wraps, resets, boot changes."""
    mod = 1 << bits
    n = draw(st.integers(1, 40))
    v = draw(st.one_of(NEAR, st.integers(0, TWO64 - 1))) % mod
    epoch = 0
    t = 1_700_000_000 * 10**9
    out = []
    for _ in range(n):
        out.append((t, v, epoch))
        t += draw(st.integers(1, 30 * 10**9))
        step = draw(st.sampled_from(["inc", "inc", "inc", "big", "reset", "boot", "near_top", "same"]))
        if step == "inc":
            v = (v + draw(st.integers(0, 10**6))) % mod
        elif step == "big":  # 402 Tb/s for up to 30 s: wraps a 64-bit counter near the top
            v = (v + draw(st.integers(0, 5 * 10**13 * 30))) % mod
        elif step == "reset":
            v = draw(st.integers(0, 1000))
        elif step == "boot":
            epoch += 1
            v = draw(st.one_of(NEAR, st.integers(0, mod - 1))) % mod
        elif step == "near_top":
            v = mod - 1 - draw(st.integers(0, 1000))
    return out


def _run(samples: list[tuple[int, int, int]], bits: int, cuts: list[int]) -> list[tuple[int, int, int]]:
    """Feed the samples in chunks (each chunk is one close step); collect valid deltas."""
    carry = Carry.empty(1)
    got: list[tuple[int, int, int]] = []
    bounds = [0, *sorted({c % (len(samples) + 1) for c in cuts}), len(samples)]
    for a, b in itertools.pairwise(bounds):
        chunk = samples[a:b]
        if not chunk:
            continue
        sid = np.zeros(len(chunk), np.uint32)
        t = np.array([c[0] for c in chunk], np.int64)
        v = np.array([c[1] for c in chunk], np.uint64)
        e = np.array([c[2] for c in chunk], np.int64)
        d = counter_deltas(sid, t, v, e, np.full(len(chunk), bits, np.uint8), carry)
        assert (d.dt[d.valid] >= 0).all()
        got += [(int(t[i]), int(d.delta[i]), int(d.dt[i])) for i in np.flatnonzero(d.valid)]
        assert not d.delta[~d.valid].any(), "an invalid interval must contribute nothing"
    return got


@settings(max_examples=300, deadline=None)
@given(bits=st.sampled_from([32, 64]), data=st.data())
def test_deltas_equal_python_integer_truth_in_any_chunking(bits: int, data: st.DataObject) -> None:
    samples = data.draw(counter_series(bits))
    cuts = data.draw(st.lists(st.integers(0, 100), max_size=4))
    truth = TruthCounter(bits=bits)
    for t, v, e in samples:
        truth.add(t, v, e)
    assert _run(samples, bits, cuts) == truth.deltas


def test_64bit_wrap_near_2_64_is_exact_not_a_spike() -> None:
    carry = Carry.empty(1)
    v = np.array([TWO64 - 10**14, 4 * 10**14], np.uint64)  # 5e14 bytes across the wrap
    d = counter_deltas(
        np.zeros(2, np.uint32),
        np.array([0, 10**10]),
        v,
        np.zeros(2, np.int64),
        np.full(2, 64, np.uint8),
        carry,
    )
    assert d.valid.tolist() == [False, True]
    assert int(d.delta[1]) == 5 * 10**14
    assert d.wrap[1]


def test_32bit_wrap_is_recognised_only_for_a_32bit_counter() -> None:
    v = np.array([(1 << 32) - 100, 50], np.uint64)
    t = np.array([0, 10**9])
    for bits, valid, delta in ((32, True, 150), (64, False, 0)):
        d = counter_deltas(
            np.zeros(2, np.uint32), t, v, np.zeros(2, np.int64), np.full(2, bits, np.uint8), Carry.empty(1)
        )
        assert bool(d.valid[1]) is valid
        assert int(d.delta[1]) == delta
        assert bool(d.reset[1]) is (not valid)


def test_counter_reset_is_not_negative_rate() -> None:
    v = np.array([10**16, 10**16 + 5, 3, 10], np.uint64)
    d = counter_deltas(
        np.zeros(4, np.uint32),
        np.arange(4, dtype=np.int64) * 10**9,
        v,
        np.zeros(4, np.int64),
        np.full(4, 64, np.uint8),
        Carry.empty(1),
    )
    assert d.delta.tolist() == [0, 5, 0, 7]
    assert d.reset.tolist() == [False, False, True, False]


def test_new_epoch_restarts_even_when_value_grows() -> None:
    v = np.array([100, 200], np.uint64)
    d = counter_deltas(
        np.zeros(2, np.uint32),
        np.array([0, 10**9]),
        v,
        np.array([1, 2]),
        np.full(2, 64, np.uint8),
        Carry.empty(1),
    )
    assert d.reset.tolist() == [False, True]
    assert d.delta.tolist() == [0, 0]


@given(st.lists(st.lists(st.integers(0, TWO64 - 1), min_size=1, max_size=20), min_size=1, max_size=5))
def test_split_sum_is_exact_beyond_2_64(groups: list[list[int]]) -> None:
    arr = np.array([v for g in groups for v in g], np.uint64)
    starts = np.cumsum([0] + [len(g) for g in groups[:-1]])
    hi, lo = split_sum_arrays(arr, starts)
    assert [(int(h) << 32) + int(x) for h, x in zip(hi.tolist(), lo.tolist(), strict=True)] == [
        sum(g) for g in groups
    ]


def test_polars_integer_traps_still_exist() -> None:
    """Why the aggregator never uses these: if Polars changes, revisit the guards."""
    s = pl.Series([0, (1 << 63) + 5], dtype=pl.UInt64)
    d = s.diff()
    assert d.dtype == pl.Int64
    assert d[1] is None  # diff of values >= 2^63 is null, not the delta
    assert (pl.Series([3], dtype=pl.UInt64) - pl.Series([5], dtype=pl.UInt64))[0] == TWO64 - 2
    assert pl.Series([1 << 63, 1 << 63], dtype=pl.UInt64).sum() == 0  # silent overflow
    assert pl.Series([1 << 63, 1 << 63], dtype=pl.UInt64).cast(pl.Int128).sum() == TWO64
    # float64 is not exact above 2^53: a 402 Tb/s octet counter passes it within 3 minutes
    assert float((1 << 53) + 1) == float(1 << 53)


def _two(v0: int, v1: int, dt_ns: int, bits: int = 64, max_rate: float | None = 1e15):
    return counter_deltas(
        np.zeros(2, np.uint32),
        np.array([0, dt_ns], np.int64),
        np.array([v0, v1], np.uint64),
        np.zeros(2, np.int64),
        np.full(2, bits, np.uint8),
        Carry.empty(1),
        max_rate,
    )


def test_64bit_clear_from_above_2_63_is_a_reset_under_the_rate_bound_not_a_spike() -> None:
    # Without a marker, the wrapped distance from 2^63 + 2^62 to 100 is below 2^63: the
    # width alone calls it a wrap worth ~4.6e18 bytes in 10 s.
    prev = (1 << 63) + (1 << 62)
    spike = _two(prev, 100, 10**10, max_rate=None)
    assert spike.wrap[1]
    assert int(spike.delta[1]) == TWO64 - prev + 100
    d = _two(prev, 100, 10**10)
    assert d.reset[1]
    assert not d.valid[1]
    assert int(d.delta[1]) == 0


def test_record_link_wrap_stays_exact_under_the_rate_bound() -> None:
    # 402 Tb/s = 5.025e13 B/s: a 10 s interval across 2^64 moves 5.025e14 bytes.
    step = 402 * 10**12 // 8 * 10
    d = _two(TWO64 - step // 2, step - step // 2, 10**10)
    assert d.wrap[1]
    assert int(d.delta[1]) == step


@settings(max_examples=300, deadline=None)
@given(
    prev=st.integers(0, TWO64 - 1),
    inc=st.integers(0, TWO64 - 1),
    dt_s=st.integers(1, 86_400),
    rate=st.sampled_from([1e9, 1e12, 1e15]),
)
def test_rate_bound_keeps_plausible_wraps_and_turns_the_rest_into_resets(
    prev: int, inc: int, dt_s: int, rate: float
) -> None:
    cur = (prev + inc) % TWO64
    d = _two(prev, cur, dt_s * 10**9, max_rate=rate)
    if rate * dt_s > TWO64:  # the interval could hide a whole wrap: unknowable
        assert d.ambiguous[1]
        assert not d.valid[1]
        assert not d.reset[1]
        assert int(d.delta[1]) == 0
    elif cur >= prev:  # an increase is never touched by the bound
        assert d.valid[1]
        assert int(d.delta[1]) == inc
    elif inc < (1 << 63) and inc <= rate * dt_s:  # a wrap the width and the rate explain
        assert d.wrap[1]
        assert int(d.delta[1]) == inc
    else:
        assert d.reset[1]
        assert int(d.delta[1]) == 0


@settings(max_examples=300, deadline=None)
@given(
    bits=st.sampled_from([32, 64]),
    rate=st.sampled_from([1.5e8, 1.25e9, 5.025e13, 1e15]),
    factor=st.floats(0.01, 100.0),
    prev=st.integers(0, TWO64 - 1),
    inc=st.integers(0, TWO64 - 1),
)
def test_an_interval_that_could_hide_a_wrap_is_excluded_on_one_side_of_the_bound_only(
    bits: int, rate: float, factor: float, prev: int, inc: int
) -> None:
    mod = 1 << bits
    # the interval length at `factor` times the bound: length x rate = factor x range
    dt_ns = max(1, int(factor * mod / rate * 1e9))
    assume(dt_ns < 1 << 62)  # event times are int64 nanoseconds
    prev, inc = prev % mod, inc % mod
    d = _two(prev, (prev + inc) % mod, dt_ns, bits=bits, max_rate=rate)
    if rate * (dt_ns / 1e9) > mod:
        assert d.ambiguous[1]
        assert not d.valid[1]
        assert not d.reset[1]
        assert int(d.delta[1]) == 0
        assert int(d.dt[1]) == 0
    else:
        assert not d.ambiguous[1]
        assert d.valid[1] or d.reset[1]
        if d.valid[1]:
            assert int(d.delta[1]) == inc


def test_the_issue_examples_are_flagged_not_published() -> None:
    # 32-bit counter of a 10G link (1.25e9 B/s) sampled with a 70 s gap: could be 20 wraps
    d = _two(10, 5, 70 * 10**9, bits=32, max_rate=1.25e9)
    assert d.ambiguous[1]
    # the same counter every 3 s (3.75e9 < 2^32) is an exact wrap
    d = _two(2**32 - 10, 5, 3 * 10**9, bits=32, max_rate=1.25e9)
    assert d.wrap[1]
    assert int(d.delta[1]) == 15
    # a 402 Tb/s link silent for 30 days: 1.3e20 bytes could have passed a 64-bit counter
    d = _two(10**18, 10**18 + 5, 30 * 86_400 * 10**9, max_rate=5.025e13)
    assert d.ambiguous[1]
    # ... and for 4 days (1.74e19 < 2^64) it is still exact
    d = _two(10**18, 10**18 + 5, 4 * 86_400 * 10**9, max_rate=5.025e13)
    assert d.valid[1]
    assert int(d.delta[1]) == 5


@st.composite
def delta_inputs(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    """Sorted samples of a few series plus a carry. Mostly growing 64-bit counters with gaps of
    up to 30 s (the fast path's case, new counter lives included); otherwise mixed: decreases,
    32-bit series, gaps of 40 days."""
    grow = draw(st.sampled_from([True, True, True, False]))
    n_series = draw(st.integers(1, 4))
    sid, t, v, e, bits = [], [], [], [], []
    for s in range(n_series):
        width = 64 if grow else draw(st.sampled_from([64, 32]))
        x = draw(st.integers(0, (1 << width) - 1 - (10**17 if grow else 0)))
        tt = 1_700_000_000 * 10**9
        for _ in range(draw(st.integers(1, 12))):
            tt += draw(st.integers(1, 30 * 10**9) if grow else st.sampled_from([10**9, 40 * 86_400 * 10**9]))
            x = (x + draw(st.integers(0, 10**15) if grow else st.integers(-(10**6), 10**15))) % (1 << width)
            sid.append(s)
            t.append(tt)
            v.append(x)
            bits.append(width)
            e.append(draw(st.sampled_from([0, 0, 0, 0, 1])))
    has = np.array([draw(st.booleans()) for _ in range(n_series)])
    top = min(v) if grow else (1 << 64) - 1  # growing: the carried value is below every sample
    cv = np.array([draw(st.integers(0, top)) for _ in range(n_series)], np.uint64)
    ct = np.full(n_series, 1_700_000_000 * 10**9 - draw(st.sampled_from([1, 10**10, 50 * 86_400 * 10**9])))
    return (
        np.array(sid, np.uint32),
        np.array(t, np.int64),
        np.array(v, np.uint64),
        np.array(e, np.int64),
        np.array(bits, np.uint8),
        has,
        cv,
        ct,
    )


@settings(max_examples=400, deadline=None)
@given(delta_inputs(), st.sampled_from([None, 1e15, 5.025e13, 1.25e9, "per_sample"]))
def test_fast_path_classifies_every_interval_as_the_general_path(
    inputs: tuple[np.ndarray, ...], rate: float | str | None
) -> None:
    """The few-pass case (64-bit counters that only grew, no interval near the ambiguity bound)
    gives exactly what the full classification gives, carry included; anything else falls back."""
    from unittest import mock

    from collector.aggregate import counters

    sid, t, v, e, bits, has, cv, ct = inputs
    max_rate = np.linspace(1e9, 1e15, len(sid)) if rate == "per_sample" else rate

    def run() -> tuple[object, Carry]:
        carry = Carry(has.copy(), cv.copy(), ct.copy(), np.zeros(len(has), np.int64))
        return counter_deltas(sid, t, v, e, bits, carry, max_rate), carry  # type: ignore[arg-type]

    fast, c1 = run()
    with mock.patch.object(counters, "_grown_64bit", return_value=None):
        full, c2 = run()
    for f in ("delta", "dt", "valid", "reset", "wrap", "ambiguous"):
        assert np.array_equal(getattr(fast, f), getattr(full, f)), f
        assert getattr(fast, f).dtype == getattr(full, f).dtype, f
    for f in ("has", "value", "time", "epoch"):
        assert np.array_equal(getattr(c1, f), getattr(c2, f))


def test_fast_path_is_taken_for_growing_64_bit_counters() -> None:
    from collector.aggregate.counters import _grown_64bit

    t = np.arange(1, 5, dtype=np.int64) * 10**10
    v = np.arange(4, dtype=np.uint64) * np.uint64(10**14)
    prev_v, prev_t = np.concatenate([[np.uint64(0)], v[:-1]]), np.concatenate([[0], t[:-1]])
    z = np.zeros(4, np.int64)
    got = _grown_64bit(t, v, z, prev_v, prev_t, z, np.ones(4, bool), True, np.full(4, 64, np.uint8), 1e15)
    assert got is not None
    assert got.valid.all()
    assert int(got.delta.sum()) == 3 * 10**14
    # one decrease, or one 32-bit series: the general path
    assert (
        _grown_64bit(
            t, v[::-1].copy(), z, prev_v, prev_t, z, np.ones(4, bool), True, np.full(4, 64, np.uint8), 1e15
        )
        is None
    )
    assert (
        _grown_64bit(
            t, v, z, prev_v, prev_t, z, np.ones(4, bool), True, np.array([64, 32, 64, 64], np.uint8), 1e15
        )
        is None
    )
