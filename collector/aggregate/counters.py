"""Exact counter arithmetic on unsigned 64-bit columns: deltas, wraps and resets.

Sits in the aggregator between "samples sorted by (series, event time)" and the pane
aggregates. Everything stays uint64/int64 in NumPy; no value goes through float64, which
loses exactness above 2^53 (a 402 Tb/s link's octet counter passes that within hours).

The integer traps this module guards against (checked with NumPy 2 and Polars 2.1):
- uint64 subtraction wraps modulo 2^64 silently. That is the right answer for a real
  wrap of a 64-bit counter and a giant spike for a reset, so a decrease is a wrap only when
  the declared width explains it: the wrapped distance (cur - prev) mod 2^bits must be less
  than half the counter's range and, when a plausible rate is given, no more than that
  rate times the interval (a 64-bit counter cleared from above 2^63 without a marker would
  otherwise read as a wrap worth up to 2^63). Anything else is a reset.
- Polars `diff()` on UInt64 gives Int64 and null at and above 2^63, so it is not used.
- Summing uint64 deltas overflows silently; pane sums are built from 32-bit halves
  (`split_sum_arrays`) so they are exact up to 2^96.

A reset (new boot_id, changed start time or scale, a decrease without a wrap explanation,
or a value beyond the declared width) starts the series over: the interval that crosses it
contributes nothing, so a reset is never a negative rate nor a spike.

An interval long enough to hide a wrap - its length times the series' plausible rate
exceeds the counter's range 2^bits - has an unknowable delta (any number of wraps fits in
it): it is *ambiguous*, contributes nothing, and is counted; the series goes on from the
new value (it is not a reset). Exact, or flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

U64 = np.uint64
_MASK32 = np.uint64(0xFFFF_FFFF)
_MASK64 = np.uint64(0xFFFF_FFFF_FFFF_FFFF)


@dataclass(slots=True)
class Carry:
    """Per-series state carried between closes: the last sample seen of each series."""

    has: npt.NDArray[np.bool_]
    value: npt.NDArray[np.uint64]
    time: npt.NDArray[np.int64]
    epoch: npt.NDArray[np.int64]

    @classmethod
    def empty(cls, n: int) -> Carry:
        return cls(np.zeros(n, bool), np.zeros(n, np.uint64), np.zeros(n, np.int64), np.zeros(n, np.int64))

    def grow(self, n: int) -> None:
        if n <= len(self.has):
            return
        extra = n - len(self.has)
        self.has = np.concatenate([self.has, np.zeros(extra, bool)])
        self.value = np.concatenate([self.value, np.zeros(extra, np.uint64)])
        self.time = np.concatenate([self.time, np.zeros(extra, np.int64)])
        self.epoch = np.concatenate([self.epoch, np.zeros(extra, np.int64)])


@dataclass(frozen=True, slots=True)
class Deltas:
    """One entry per input sample. `valid` marks samples that close a countable interval."""

    delta: npt.NDArray[np.uint64]
    dt: npt.NDArray[np.int64]
    valid: npt.NDArray[np.bool_]
    reset: npt.NDArray[np.bool_]
    wrap: npt.NDArray[np.bool_]
    ambiguous: npt.NDArray[np.bool_]


def counter_deltas(
    sid: npt.NDArray[np.integer],
    t: npt.NDArray[np.int64],
    v: npt.NDArray[np.uint64],
    epoch: npt.NDArray[np.int64],
    bits: npt.NDArray[np.uint8],
    carry: Carry,
    max_rate: float | npt.NDArray[np.float64] | None = None,
    *,
    first: npt.NDArray[np.bool_] | None = None,
) -> Deltas:
    """Deltas of samples sorted by (sid, t); updates `carry` with each series' last sample.

    `epoch` identifies a counter's life (boot_id, start time, scale): a change is a reset.
    `bits` is the declared width per sample (32 or 64). `max_rate`: the largest plausible
    increase per second (one number, or one per sample: a link's own speed); a wrap that
    implies more is a reset, and an interval in which more than the counter's range could
    have passed is ambiguous. `first`: the mask of each series' first sample, when the caller
    has it already.
    """
    n = len(sid)
    if n == 0:
        z = np.zeros(0, bool)
        return Deltas(np.zeros(0, U64), np.zeros(0, np.int64), z, z, z, z)
    if first is None:
        first = np.ones(n, bool)
        first[1:] = sid[1:] != sid[:-1]
    fsid = sid[first]
    prev_v = np.empty(n, U64)
    prev_v[1:] = v[:-1]
    prev_v[first] = carry.value[fsid]
    prev_t = np.empty(n, np.int64)
    prev_t[1:] = t[:-1]
    prev_t[first] = carry.time[fsid]
    prev_e = np.empty(n, np.int64)
    prev_e[1:] = epoch[:-1]
    prev_e[first] = carry.epoch[fsid]
    has_prev = np.ones(n, bool)
    f_has = carry.has[fsid]
    has_prev[first] = f_has
    out = _grown_64bit(t, v, epoch, prev_v, prev_t, prev_e, has_prev, bool(f_has.all()), bits, max_rate)
    if out is None:
        out = _general(t, v, epoch, prev_v, prev_t, prev_e, has_prev, bits, max_rate)

    last = np.ones(n, bool)
    last[:-1] = sid[:-1] != sid[1:]
    lsid = sid[last]
    carry.has[lsid] = True
    carry.value[lsid] = v[last]
    carry.time[lsid] = t[last]
    carry.epoch[lsid] = epoch[last]
    return out


def _grown_64bit(
    t: np.ndarray,
    v: np.ndarray,
    epoch: np.ndarray,
    prev_v: np.ndarray,
    prev_t: np.ndarray,
    prev_e: np.ndarray,
    has_prev: np.ndarray,
    all_prev: bool,
    bits: np.ndarray,
    max_rate: float | npt.NDArray[np.float64] | None,
) -> Deltas | None:
    """The usual case in a few passes, or None: only 64-bit counters, none decreased, and no
    interval long enough to be ambiguous. Then no wrap and no value beyond the width can
    occur, and what `_general` computes reduces to: an interval counts when both samples are
    of one counter life, and is a reset otherwise. Ambiguity is ruled out by one bound:
    for non-negative rates and gaps, rate * (gap / 1e9) never exceeds max rate * (max gap /
    1e9) (IEEE multiplication and division are monotonic), so when that is within 2^64 no
    interval's reach is beyond it."""
    if (bits == 32).any() or (v < prev_v).any():
        return None
    gap = t - prev_t
    if max_rate is not None:
        g = gap if all_prev else np.where(has_prev, gap, 0)
        rate = np.asarray(max_rate, np.float64)
        r_lo, r_hi = (float(rate), float(rate)) if rate.ndim == 0 else (float(rate.min()), float(rate.max()))
        if not (r_lo >= 0 and int(g.min()) >= 0 and r_hi * (int(g.max()) / 1e9) <= 2.0**64):
            return None
    n = len(t)
    same = epoch == prev_e
    no = np.zeros(n, bool)
    if all_prev and same.all():
        return Deltas(v - prev_v, gap, same, no, no, no)
    valid = has_prev & same
    return Deltas(
        np.where(valid, v - prev_v, U64(0)), np.where(valid, gap, 0), valid, has_prev & ~same, no, no
    )


def _general(
    t: np.ndarray,
    v: np.ndarray,
    epoch: np.ndarray,
    prev_v: np.ndarray,
    prev_t: np.ndarray,
    prev_e: np.ndarray,
    has_prev: np.ndarray,
    bits: np.ndarray,
    max_rate: float | npt.NDArray[np.float64] | None,
) -> Deltas:
    """Every interval classified: counted, wrap, reset or ambiguous (see the module doc)."""
    n = len(t)
    is32 = bits == 32
    mask = np.where(is32, _MASK32, _MASK64)
    half = np.where(is32, np.uint64(1 << 31), np.uint64(1 << 63))
    # Beyond the declared width: the source lies about its width; treat as a discontinuity.
    over = v > mask
    prev_over = prev_v > mask
    raw = (v - prev_v) & mask  # modular on purpose: exact for real wraps
    decrease = v < prev_v
    wrap = decrease & (raw < half)
    ambiguous = np.zeros(n, bool)
    if max_rate is not None:
        # float64 is only a threshold here; the delta itself stays an exact uint64
        reach = np.asarray(max_rate, np.float64) * ((t - prev_t) / 1e9)
        if wrap.any():
            wrap &= raw.astype(np.float64) <= reach
        same_life = has_prev & (epoch == prev_e) & ~over & ~prev_over
        ambiguous = same_life & (reach > np.where(is32, 2.0**32, 2.0**64))
        wrap &= ~ambiguous
    reset = has_prev & ~ambiguous & ((epoch != prev_e) | (decrease & ~wrap) | over | prev_over)
    valid = has_prev & ~reset & ~ambiguous
    delta = np.where(valid, raw, U64(0))
    dt = np.where(valid, t - prev_t, 0)
    return Deltas(delta, dt, valid, reset, wrap & valid, ambiguous)


def split_sum_arrays(
    values: npt.NDArray[np.uint64], starts: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """Per-group (hi, lo) 32-bit-half sums; total = hi * 2^32 + lo, exact below 2^96."""
    lo = np.add.reduceat(values & _MASK32, starts)
    hi = np.add.reduceat(values >> np.uint64(32), starts)
    return hi, lo
