"""Per-partition aggregation state: dedup, series registry, event-time panes and windows.

The middle of the aggregator. One `PartitionState` owns everything derived from one Kafka
partition (a partition holds whole sites, so nothing here is shared between partitions):

  record -> decode -> dedup (agent_id, seq) -> series ids -> late filter -> open buffer
  watermark passes a pane end -> sort by (series, time) -> exact counter deltas -> panes
  -> sliding windows (every window length built from the same panes) -> latest windows

Everything a published number depends on is a deterministic function of the partition's
record sequence, and the whole state round-trips through `snapshot()` / `restore()`.
The service checkpoints it to the state topic together with the next offset, so a restart
or a rebalance resumes from exactly the state the previous owner had.

Samples are buffered until the watermark (max event time - allowed lateness) passes their
pane, then processed once in event-time order: out-of-order batches inside the lateness
are counted exactly, and a closed window is final.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import io
import json
import math
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from collector import wire
from collector.aggregate.config import AggregateSettings
from collector.aggregate.counters import Carry, counter_deltas, split_sum_arrays
from collector.aggregate.decode import (
    Decoder,
    Headers,
    Rec,
    check,
    decode,
    poll_columns,
    table_is_series_only,
)
from collector.aggregate.legacy_catalog import V3_METRICS
from collector.aggregate.periods import PeriodStore
from collector.catalog import METRICS, Kind
from collector.errors import ProtocolError
from collector.proto.telemetry.v1 import telemetry_pb2 as pb

NS = 1_000_000_000
LABEL_NAMES: tuple[str, ...] = tuple(sorted({n for m in METRICS for n in m.labels}))
METRIC_INDEX: dict[str, int] = {m.name: i for i, m in enumerate(METRICS)}
# the window log's `labels` text: every label name but `le`, which only bins carry
_LOG_LABELS = tuple(n for n in LABEL_NAMES if n != "le")


def log_labels(labels: dict[str, str]) -> str:
    """The window log's `labels` text of a series with these entity labels."""
    text = ",".join(f"{n}={labels.get(n, '')}" for n in _LOG_LABELS)
    return text + (f",le={labels['le']}" if labels.get("le") else "")


_SPEC_LABEL_POS = [tuple(LABEL_NAMES.index(n) for n in m.labels) for m in METRICS]
_IS_COUNTER = np.array([m.kind is Kind.COUNTER for m in METRICS])
# A link's speed (bytes/s) bounds every counter of the link (octets; packets, errors and
# discards too: a packet has at least one byte): the plausible rate of the gap rule.
_SPEED_M = METRIC_INDEX["link_speed_bytes"]
_LINK_COUNTER = np.array([m.kind is Kind.COUNTER and m.name.startswith("link_") for m in METRICS])
_LINK_COUNTER_METRICS = tuple(np.flatnonzero(_LINK_COUNTER).tolist())
EXCLUDE_REASONS = ("ambiguous_gap",)

_TWO32 = pl.lit(1 << 32, dtype=pl.Int128)
# Grouping by one Int64 key (series id * 2^40 + pane index) is about twice as fast as by two
# columns; pane indices of any tier stay far below 2^40 for the next thousands of years.
_KEY_MUL = 1 << 40
# Per-series code in a series table.
OK_COUNTER, OK_GAUGE, UNKNOWN, MISMATCH, CAPPED, OK_DELTA = 0, 1, 2, 3, 4, 5


def _is_bound(le: str) -> bool:
    """A histogram bucket's `le`: a number or +Inf (collector/exposition/histogram.py)."""
    if le == "+Inf":
        return True
    try:
        return math.isfinite(float(le))
    except ValueError:
        return False


_N_CODES = 6
DROP_REASONS = (
    "late",
    "duplicate",
    "dedup_expired",
    "rejected",
    "unknown_metric",
    "cardinality",
    "too_old",
    "overlap",
)
_NO_SAMPLE = np.iinfo(np.int64).min  # s_last of a series that has no processed sample yet
_NO_STEP = np.iinfo(np.int64).max
_UNRESOLVED = -2  # s_speed_of of a series not looked up yet
# Checkpoint format: 2 added the per-series sample ledger (series frame: first, step, count);
# 3 keeps counter pane increases as 32-bit half sums (hi, lo) instead of one Int128;
# 4 adds the metric table (names and label names, so restore is independent of catalogue
# order), the agents' unissued seq ranges and a checkpointed idle close.
CHECKPOINT_VERSION = 4

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

# on_window(partition, window_s, counter_windows, gauge_windows): every closed window, one row
# per (series, end); frames labelled with `site`, `metric` (catalogue name) and `labels`
# ("k=v,k=v") besides `sid` and `end`.
WindowSink = Callable[[int, int, pl.DataFrame, pl.DataFrame], None]


def stable_hash(*parts: object) -> int:
    """64-bit hash that is the same in every process (Python's hash() is salted)."""
    d = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(d, "little", signed=True)


@functools.lru_cache(maxsize=65536)
def _epoch_hash(start_time_unix_nano: int, scale: float, counter_bits: int) -> int:
    """A counter life's hash (most series of a fleet share one: cached)."""
    return stable_hash(start_time_unix_nano, scale, counter_bits)


def _refusal(value: bytes) -> ProtocolError:
    """The full parse's reason for a record the per-poll checks refused."""
    try:
        decode(value)
    except ProtocolError as exc:
        return exc
    return ProtocolError("columns")  # not reached: the full parse applies the same checks


def _exact(cw: pl.DataFrame) -> pl.DataFrame:
    """Counter windows with the increase as one exact Int128 (hi * 2^32 + lo)."""
    return cw.select(
        "sid",
        "end",
        inc=pl.col("hi").cast(pl.Int128) * _TWO32 + pl.col("lo").cast(pl.Int128),
        dt="dt",
        n="n",
        resets="resets",
        wraps="wraps",
    )


def _halves(panes: pl.DataFrame) -> pl.DataFrame:
    """Counter panes of a v1/v2 checkpoint (one Int128 increase) in the current layout."""
    if "inc" not in panes.columns:
        return panes
    inc = pl.col("inc")
    return panes.select(
        "sid",
        "pane",
        hi=(inc // _TWO32).cast(pl.UInt64),
        lo=(inc % _TWO32).cast(pl.UInt64),
        dt="dt",
        n="n",
        resets="resets",
        wraps="wraps",
    ).cast(COUNTER_PANE_SCHEMA)  # type: ignore[arg-type]


def _by_series_time(sid: np.ndarray, t: np.ndarray) -> np.ndarray:
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


def _series_runs(sid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Of samples sorted by series: the mask of each series' first sample, and its positions
    (computed once per close and shared by every step that works per series)."""
    first = np.ones(len(sid), bool)
    first[1:] = sid[1:] != sid[:-1]
    return first, np.flatnonzero(first)


def _group_sum(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """`np.add.reduceat(x, starts)` of an integer column (groups start at `starts`, the first
    at 0), as differences of one running sum: modular arithmetic, so exact whenever each
    group's sum fits the result type (uint64 for unsigned input, as reduceat gives), and
    about twice as fast as reduceat on groups of a few rows."""
    c = np.cumsum(x, dtype=np.uint64 if x.dtype.kind in "ub" else np.int64)
    out = c[np.append(starts[1:], len(x)) - 1]
    out[1:] -= c[starts[1:] - 1]
    return out


def _empty(schema: Mapping[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


@dataclass(slots=True)
class Table:
    """A batch's series table resolved against this partition's registry."""

    code: npt.NDArray[np.int8]
    sid: npt.NDArray[np.uint32]
    epoch: npt.NDArray[np.int64]
    bits: npt.NDArray[np.uint8]


# Unissued seq ranges remembered per agent (one per agent restart that left part of a
# reserved block unused); older ones are forgotten, their seqs then count as expected.
MAX_GAPS = 64


@dataclass(slots=True)
class Agent:
    site: int
    lo: int  # lowest seq seen
    hi: int  # highest seq seen
    mask: int  # bit i set: seq hi - i was seen (i < dedup_window)
    received: int  # distinct seqs accepted
    # seq ranges [first, last] the agent declared as never issued (sorted, disjoint), and
    # how many seqs inside them arrived anyway (the declaration was too wide)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    gap_hits: int = 0

    def declare_unissued(self, first: int, last: int, window: int) -> None:
        if any(lo <= first and last <= hi for lo, hi in self.gaps):
            return  # already known: every batch of a boot repeats it
        # seqs of the range that already arrived count as issued (the dedup mask knows them)
        for seq in range(max(first, self.hi - window + 1), min(last, self.hi) + 1):
            if self.mask >> (self.hi - seq) & 1 and not self.in_gap(seq):
                self.gap_hits += 1
        keep: list[tuple[int, int]] = []
        for lo, hi in self.gaps:
            if hi < first - 1 or lo > last + 1:
                keep.append((lo, hi))
            else:  # overlapping or adjacent: merge
                first, last = min(first, lo), max(last, hi)
        keep.append((first, last))
        keep.sort()
        self.gaps = keep[-MAX_GAPS:]

    def in_gap(self, seq: int) -> bool:
        return any(lo <= seq <= hi for lo, hi in self.gaps)

    def expected(self) -> int:
        """Seqs issued in [lo, hi]: the range minus what the agent declared unissued (a
        declared seq that arrived anyway counts as issued)."""
        skipped = sum(max(0, min(hi, self.hi) - max(lo, self.lo) + 1) for lo, hi in self.gaps)
        return self.hi - self.lo + 1 - skipped + self.gap_hits


@dataclass(slots=True)
class Site:
    site_id: str
    country: str
    region: str
    series: int = 0
    batches: int = 0
    dup_batches: int = 0
    samples: int = 0
    max_event: int | None = None
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    # counter intervals whose delta is unknowable, by reason (their samples still count)
    excluded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EXCLUDE_REASONS, 0))


class NewestEventIndex:
    """The smallest per-site newest event time among sites at or above a rising floor.

    The partition watermark needs it after every record; a scan over all sites would cost
    O(sites) per record. Sites' values only rise and the floor only rises, so a min-heap with
    lazy deletion answers in amortised O(log sites): an entry is stale when its site has
    moved on (a newer entry exists) or fell below the floor (a site that moves again gets a
    new entry).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int]] = []  # (value, site)
        self._value: dict[int, int] = {}

    def update(self, site: int, value: int) -> None:
        if self._value.get(site, value - 1) < value:
            self._value[site] = value
            heapq.heappush(self._heap, (value, site))

    def min_at_least(self, floor: int) -> int | None:
        heap = self._heap
        while heap and (heap[0][0] < floor or self._value[heap[0][1]] != heap[0][0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None


@dataclass(frozen=True, slots=True)
class SiteLedger:
    site_id: str
    country: str
    region: str
    series: int
    batches: int
    dup_batches: int
    samples: int
    dropped: dict[str, int]
    expected: int  # batches expected from the seq range of the site's agents
    received: int  # distinct batches received in that range
    last_event_ns: int | None = None  # newest event time seen from the site
    # Sample ledger over the series that have a sampling step (>= 2 distinct samples), up to
    # the ledger end (see PartitionState.ledger_end_ns): grid points first + k * step, and
    # distinct samples accepted.
    samples_expected: int = 0
    samples_counted: int = 0
    # counter intervals excluded by reason (ambiguous_gap: could hide a wrap)
    excluded: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PartitionView:
    partition: int
    windows_s: tuple[int, ...]
    meta: pl.DataFrame
    latest_c: dict[int, pl.DataFrame]
    latest_g: dict[int, pl.DataFrame]
    sites: tuple[SiteLedger, ...]
    # Newest period of every period series (collector/aggregate/periods.py), shaped like
    # latest_c / latest_g plus `window` and `window_s` columns.
    period_c: pl.DataFrame | None = None
    period_g: pl.DataFrame | None = None
    # Corrected cumulative counter totals (sid, hi, lo, created ns): see publish_totals.
    totals: pl.DataFrame | None = None


@dataclass(frozen=True, slots=True)
class CloseStats:
    boundaries: int
    samples: int
    expired_series: int


class PartitionState:
    def __init__(self, partition: int, settings: AggregateSettings) -> None:
        self.partition = partition
        self.settings = settings
        self.pane_ns = settings.pane_s * NS
        self.windows_s = settings.windows_s
        # Window j is built from the partial aggregates of tier src(j) = max(0, j - 1): tier 0
        # holds panes of the shortest window, tier k >= 1 holds the closed windows of length
        # windows_s[k]. So (10 s, 1 min, 5 min) = 10 s panes; 1 min from six of them sliding
        # by 10 s; 5 min from five 1-min aggregates sliding by 1 min. Per-sample work happens
        # once, and a series keeps 6 + 5 small rows instead of 30.
        w = settings.windows_s
        self.n_tiers = max(1, len(w) - 1)
        self.src = [max(0, j - 1) for j in range(len(w))]
        self.tier_ns = [x * NS for x in w[: self.n_tiers]]
        self.n_src = [w[j] // w[self.src[j]] for j in range(len(w))]
        self.keep_panes = [
            max([self.n_src[j] for j in range(len(w)) if self.src[j] == k], default=1)
            for k in range(self.n_tiers)
        ]
        self.lateness_ns = int(settings.allowed_lateness_s * NS)
        self.ttl_ns = int(settings.stale_ttl_s * NS)
        self.on_window: WindowSink | None = None
        # Counts and statistics over periods (PM files): their own path, no watermark.
        self.periods = PeriodStore(int(settings.period_horizon_s * NS), self.ttl_ns)

        self.next_offset: int | None = None
        self.max_event_ns: int | None = None  # newest event time of the partition
        self.wm_ns: int | None = None  # watermark: monotonic, see _update_watermark
        self.closed_ns: int | None = None
        # an idle close decided and checkpointed but maybe not yet done (see advance())
        self.idle_close_ns: int | None = None
        self.site_idle_ns = int(settings.site_idle_s * NS)
        self.version = 0  # bumped whenever published windows change (checkpoint and render key)
        self.totals_gen = 0  # bumped when newly committed totals are published (render key)
        self.records = 0
        self.samples = 0
        self.renewed = 0  # series that came back after more than stale_ttl_s of silence

        self.sites: list[Site] = []
        self.site_index: dict[str, int] = {}
        self._newest = NewestEventIndex()  # sites' max_event, for the watermark
        self.agents: dict[str, Agent] = {}
        self._dedup_full = (1 << settings.dedup_window) - 1  # an agent's dedup bitmap, all seen
        self.boot_hash: dict[str, int] = {}

        self.series_key: dict[tuple[int, int, tuple[str, ...]], int] = {}
        self.keys: list[tuple[int, int, tuple[str, ...]] | None] = []
        self.free: list[int] = []
        self.s_site = np.zeros(0, np.int32)
        self.s_metric = np.zeros(0, np.int16)
        self.s_last = np.zeros(0, np.int64)
        self.s_live = np.zeros(0, bool)
        self.s_scale = np.zeros(0, np.float64)
        # Sample ledger per series (filled when panes are built): first sample time, sampling
        # step = smallest positive gap between two consecutive samples (0 = not known yet),
        # distinct samples processed.
        self.s_first = np.zeros(0, np.int64)
        self.s_step = np.zeros(0, np.int64)
        self.s_count = np.zeros(0, np.int64)
        # last link speed seen per link_speed_bytes series (bytes/s, scaled; 0 = none yet)
        self.s_speed = np.zeros(0, np.float64)
        # per series: the link_speed_bytes series of its link (-1: none), _UNRESOLVED until
        # looked up (see _plausible_rate); not in the checkpoint, rebuilt as needed
        self.s_speed_of = np.zeros(0, np.int64)
        # corrected cumulative total per counter series: every counted delta since its first
        # sample (s_first), as 32-bit half sums (total = hi * 2^32 + lo, exact below 2^96)
        self.s_tot_hi = np.zeros(0, np.uint64)
        self.s_tot_lo = np.zeros(0, np.uint64)
        # the totals /metrics shows: those of the last committed checkpoint (see publish_totals)
        self.totals_published: pl.DataFrame = _empty(TOTALS_SCHEMA)
        self._totals_pending: pl.DataFrame | None = None
        self.carry = Carry.empty(0)
        self._meta: pl.DataFrame | None = None
        self._tables: dict[tuple[int, str, bytes], Table] = {}
        self._decoder = Decoder()

        self._cbuf: list[tuple[np.ndarray, ...]] = []
        # during a close: the counter rows the first tier is rolled from (see _counter_panes)
        self._tier_src: pl.DataFrame | None = None
        self._gbuf: list[tuple[np.ndarray, ...]] = []
        self.cpanes = [_empty(COUNTER_PANE_SCHEMA) for _ in range(self.n_tiers)]
        self.gpanes = [_empty(GAUGE_PANE_SCHEMA) for _ in range(self.n_tiers)]
        self.latest_c = {w: _empty(COUNTER_WIN_SCHEMA) for w in self.windows_s}
        self.latest_g = {w: _empty(GAUGE_WIN_SCHEMA) for w in self.windows_s}

    # ------------------------------------------------------------------ registry
    def _site(self, site_id: str, country: str, region: str) -> int:
        i = self.site_index.get(site_id)
        if i is None:
            i = len(self.sites)
            self.sites.append(Site(site_id, country, region))
            self.site_index[site_id] = i
            self._meta = None
        else:
            s = self.sites[i]
            if country and (s.country, s.region) != (country, region):
                s.country, s.region = country, region
                self._meta = None
        return i

    def _grow(self, n: int) -> None:
        cap = len(self.s_site)
        if n <= cap:
            return
        new = max(n, cap * 2, 64)
        extra = new - cap
        self.s_site = np.concatenate([self.s_site, np.zeros(extra, np.int32)])
        self.s_metric = np.concatenate([self.s_metric, np.zeros(extra, np.int16)])
        self.s_last = np.concatenate([self.s_last, np.zeros(extra, np.int64)])
        self.s_live = np.concatenate([self.s_live, np.zeros(extra, bool)])
        self.s_scale = np.concatenate([self.s_scale, np.ones(extra, np.float64)])
        self.s_first = np.concatenate([self.s_first, np.zeros(extra, np.int64)])
        self.s_step = np.concatenate([self.s_step, np.zeros(extra, np.int64)])
        self.s_count = np.concatenate([self.s_count, np.zeros(extra, np.int64)])
        self.s_speed = np.concatenate([self.s_speed, np.zeros(extra, np.float64)])
        self.s_speed_of = np.concatenate([self.s_speed_of, np.full(extra, _UNRESOLVED, np.int64)])
        self.s_tot_hi = np.concatenate([self.s_tot_hi, np.zeros(extra, np.uint64)])
        self.s_tot_lo = np.concatenate([self.s_tot_lo, np.zeros(extra, np.uint64)])
        self.carry.grow(new)

    def _alloc(self, key: tuple[int, int, tuple[str, ...]]) -> int:
        if self.free:
            sid = self.free.pop()
            self.keys[sid] = key
        else:
            sid = len(self.keys)
            self.keys.append(key)
            self._grow(sid + 1)
        self.series_key[key] = sid
        self.s_site[sid] = key[0]
        self.s_metric[sid] = key[1]
        self.s_last[sid] = _NO_SAMPLE
        self.s_live[sid] = True
        self.s_first[sid] = 0
        self.s_step[sid] = 0
        self.s_count[sid] = 0
        self.s_speed[sid] = 0.0
        self.s_speed_of[sid] = _UNRESOLVED
        if key[1] == _SPEED_M:  # a new speed series: its link's counters look again
            self._unresolve_link(key)
        self.s_tot_hi[sid] = 0
        self.s_tot_lo[sid] = 0
        self.carry.has[sid] = False
        self.sites[key[0]].series += 1
        self._meta = None
        return sid

    def _unresolve_link(self, speed_key: tuple[int, int, tuple[str, ...]]) -> None:
        """The link counters sharing a speed series' site and labels look it up again."""
        for m in _LINK_COUNTER_METRICS:
            sid = self.series_key.get((speed_key[0], m, speed_key[2]))
            if sid is not None:
                self.s_speed_of[sid] = _UNRESOLVED

    def _build_table(self, site: int, series: Sequence[pb.Series]) -> Table:
        n = len(series)
        code = np.empty(n, np.int8)
        sids = np.zeros(n, np.uint32)
        epoch = np.zeros(n, np.int64)
        bits = np.full(n, 64, np.uint8)
        cap = self.settings.max_series_per_site
        for i, s in enumerate(series):
            m = METRIC_INDEX.get(s.metric)
            if m is None:
                code[i] = UNKNOWN
                continue
            spec = METRICS[m]
            want = pb.COUNTER if spec.kind is Kind.COUNTER else pb.GAUGE
            # A catalogue counter may come as a cumulative COUNTER or as per-period DELTA counts.
            delta = s.kind == pb.DELTA and want == pb.COUNTER
            if (s.kind != want and not delta) or not math.isfinite(s.scale) or s.scale < 0:
                # wrong kind, or a scale no unit conversion has (the ingest refuses both;
                # records may come from elsewhere): the series' samples count as rejected
                code[i] = MISMATCH
                continue
            labels = {lb.name: lb.value for lb in s.labels}
            if spec.labels[-1] == "le" and not _is_bound(labels.get("le", "")):
                code[i] = MISMATCH  # a distribution bin without a numeric bound: rejected
                continue
            # interned: a label value shared by many series ("optical", a host name) is stored once
            key = (site, m, tuple(sys.intern(labels.get(n, "")) for n in spec.labels))
            sid = self.series_key.get(key)
            if sid is None:
                if self.sites[site].series >= cap:
                    code[i] = CAPPED
                    continue
                sid = self._alloc(key)
            sids[i] = sid
            self.s_scale[sid] = s.scale or 1.0
            code[i] = OK_DELTA if delta else OK_COUNTER if want == pb.COUNTER else OK_GAUGE
            if want == pb.COUNTER and not delta:
                bits[i] = 32 if s.counter_bits == 32 else 64
                epoch[i] = _epoch_hash(
                    int(s.start_time_unix_nano), float(s.scale or 1.0), int(s.counter_bits)
                )
        return Table(code, sids, epoch, bits)

    def _table(self, site: int, d: Rec) -> Table:
        key = d.table_key
        if key is not None:
            ck = (site, d.boot_id, key)
            t = self._tables.get(ck)
            if t is not None:
                return t
        t = self._build_table(site, d.series())
        if key is not None and table_is_series_only(key):
            if len(self._tables) > 4096:
                self._tables.clear()
            self._tables[(site, d.boot_id, key)] = t
        return t

    # ------------------------------------------------------------------ dedup
    def _dedup(self, agent_id: str, seq: int, site: int, unissued: tuple[int, int] | None = None) -> str:
        a = self.agents.get(agent_id)
        w = self.settings.dedup_window
        if a is None:
            a = self.agents[agent_id] = Agent(site, seq, seq, 1, 1)
            if unissued is not None:
                a.declare_unissued(*unissued, w)
            return "new"
        if unissued is not None:
            a.declare_unissued(*unissued, w)
        a.site = site
        if seq > a.hi:
            shift = seq - a.hi
            a.mask = ((a.mask << shift) | 1) & self._dedup_full if shift < w else 1
            a.hi = seq
        else:
            back = a.hi - seq
            if back >= w:
                return "dedup_expired"
            bit = 1 << back
            if a.mask & bit:
                return "duplicate"
            a.mask |= bit
        a.lo = min(a.lo, seq)
        a.received += 1
        if a.gaps and a.in_gap(seq):
            a.gap_hits += 1
        return "new"

    # ------------------------------------------------------------------ ingest
    def add(self, offset: int, value: bytes | None, headers: Headers | None = None) -> int:
        """Process one record. Returns samples accepted; raises ProtocolError for the DLQ.

        The offset advances even for a record that raises: the caller dead-letters it.
        """
        accepted, errors = self.add_many([(offset, value, headers)])
        if errors:
            raise errors[0][1]
        return accepted

    def add_many(
        self, records: Sequence[tuple[int, bytes | None, Headers | None]]
    ) -> tuple[int, list[tuple[int, ProtocolError]]]:
        """Process one poll's records of this partition, in offset order.

        Returns the samples accepted and (position, error) of each record that is not a valid
        batch (the caller dead-letters it; the offset still advances past it). The result is
        exactly that of adding the records one by one: per record only Python scalars are
        touched (header, dedup, site, table, watermark); decoding checks, table lookups, the
        late filter and the ledger counts run once over the whole poll's samples.
        """
        if not records:
            return 0, []
        errors: list[tuple[int, ProtocolError]] = []
        recs: list[Rec] = []
        where: list[int] = []
        read = self._decoder.read
        for i, (_, value, headers) in enumerate(records):
            try:
                recs.append(read(value, headers))
                where.append(i)
            except ProtocolError as exc:
                errors.append((i, exc))
        self.next_offset = records[-1][0] + 1
        self.records += len(records)
        if not recs:
            return 0, errors
        cc, gc = poll_columns(recs)
        bad = check(recs, cc, gc)
        if bad:
            for j in bad:
                errors.append((where[j], _refusal(recs[j].value)))
            errors.sort(key=lambda e: e[0])
            gone = set(bad)
            recs = [r for j, r in enumerate(recs) if j not in gone]
            if not recs:
                return 0, errors
            cc, gc = poll_columns(recs)
        return self._ingest(recs, cc, gc), errors

    def _ingest(self, recs: list[Rec], cc: wire.Columns, gc: wire.Columns) -> int:
        n = len(recs)
        # per record, Python scalars only (lists; arrays are built once below)
        site_l = [0] * n
        keep_l = [False] * n
        off_l = [0] * n
        boot_l = [0] * n
        offsets: dict[int, int] = {}
        tables: list[Table] = []
        rec_table: list[Table | None] = [None] * n
        size = 0
        site_index, sites, boot_hash = self.site_index, self.sites, self.boot_hash
        for j, r in enumerate(recs):
            site_i = site_index.get(r.site_id)
            if site_i is None or (
                r.country and (sites[site_i].country != r.country or sites[site_i].region != r.region)
            ):
                site_i = self._site(r.site_id, r.country, r.region)
            site_l[j] = site_i
            site = sites[site_i]
            verdict = self._dedup(r.agent_id, r.seq, site_i, r.unissued)
            if verdict != "new":
                site.dropped[verdict] += r.n_samples
                site.dup_batches += 1
                continue
            site.batches += 1
            keep_l[j] = True
            table = rec_table[j] = self._table(site_i, r)
            off = offsets.get(id(table))
            if off is None:
                off = offsets[id(table)] = size
                tables.append(table)
                size += len(table.code)
            off_l[j] = off
            boot = boot_hash.get(r.boot_id)
            if boot is None:
                if len(boot_hash) > 65536:
                    boot_hash.clear()
                boot = boot_hash[r.boot_id] = stable_hash("boot", r.boot_id)
            boot_l[j] = boot
        site_of = np.array(site_l, np.int64)
        keep = np.array(keep_l, bool)
        tab_off = np.array(off_l, np.int64)
        boots = np.array(boot_l, np.int64)
        if not tables:
            return 0
        t_code = np.concatenate([t.code for t in tables])
        t_sid = np.concatenate([t.sid for t in tables])
        t_epoch = np.concatenate([t.epoch for t in tables])
        t_bits = np.concatenate([t.bits for t in tables])
        n_sites = len(self.sites)
        tmax = np.full(n, _NO_SAMPLE, np.int64)
        parts = []
        for is_counter, cols, counts in ((True, cc, [r.nc for r in recs]), (False, gc, [r.ng for r in recs])):
            if not len(cols):
                continue
            cnt = np.array(counts, np.int64)
            rec = np.repeat(np.arange(n), cnt)
            gi = cols.series_index.astype(np.int64) + tab_off[rec]
            code = np.where(keep[rec], t_code[gi], -1)
            want = OK_COUNTER if is_counter else OK_GAUGE
            ok = code == want
            all_ok = bool(ok.all())
            if not all_ok:
                wrong = code >= 0
                wrong &= ~ok
                if wrong.any():
                    counts_ = np.bincount(
                        site_of[rec[wrong]] * _N_CODES + code[wrong], minlength=n_sites * _N_CODES
                    ).reshape(n_sites, _N_CODES)
                    for si in np.flatnonzero(counts_.any(axis=1)).tolist():
                        c = counts_[si]
                        d = self.sites[si].dropped
                        d["unknown_metric"] += int(c[UNKNOWN])
                        d["cardinality"] += int(c[CAPPED])
                        # a series of another kind (or a DELTA series) in these columns
                        d["rejected"] += int(c.sum() - c[UNKNOWN] - c[CAPPED])
            t = cols.time_unix_nano
            # newest accepted-kind sample per record (before the late filter), for the watermark;
            # a record's samples are contiguous, so one max over each record's run
            has = np.flatnonzero(cnt)
            runs = (np.cumsum(cnt) - cnt)[has]
            newest = np.maximum.reduceat(t if all_ok else np.where(ok, t, _NO_SAMPLE), runs)
            tmax[has] = np.maximum(tmax[has], newest)
            parts.append((is_counter, cols, rec, gi, ok, cnt))
        # Late means: behind the pane boundary the watermark had reached *before* the record
        # (or behind what is already closed). A function of the record sequence only, so it
        # does not depend on how records were grouped into polls or when panes were closed.
        cut_l = [_NO_SAMPLE] * n
        closed0 = self.closed_ns
        pane = self.pane_ns
        tm = tmax.tolist()
        accepted = np.zeros(n_sites, np.int64)
        no_deltas, no_pgauges = wire.EMPTY_DELTAS, wire.EMPTY_PERIOD_GAUGES
        for j in np.flatnonzero(keep).tolist():
            closed = closed0
            if self.wm_ns is not None:
                wm_cut = (self.wm_ns // pane) * pane
                closed = wm_cut if closed is None or wm_cut > closed else closed
            if closed is not None:
                cut_l[j] = closed
            r = recs[j]
            if (r.deltas is not no_deltas or r.period_gauges is not no_pgauges) and (
                len(r.deltas) or len(r.period_gauges)
            ):
                rt = rec_table[j]
                assert rt is not None
                accepted[site_l[j]] += self._add_periods(r, rt, sites[site_l[j]])
            hi = tm[j]
            if hi != _NO_SAMPLE:
                site_i = site_l[j]
                site = sites[site_i]
                moved = False  # the watermark depends only on these two
                if site.max_event is None or hi > site.max_event:
                    site.max_event = hi
                    self._newest.update(site_i, hi)
                    moved = True
                if self.max_event_ns is None or hi > self.max_event_ns:
                    self.max_event_ns = hi
                    moved = True
                if moved:
                    self._update_watermark()
        cut = np.array(cut_l, np.int64)
        late = np.zeros(n_sites, np.int64)
        for is_counter, cols, rec, gi, ok, cnt in parts:
            t = cols.time_unix_nano
            fresh = ok & (t >= cut[rec])
            if fresh.all():  # the usual case: every sample kept, no selection to copy
                accepted += np.bincount(site_of, weights=cnt, minlength=n_sites).astype(np.int64)
                g, tf, vf, rf = gi, t, cols.value, rec
            else:
                late += np.bincount(site_of[rec[ok & ~fresh]], minlength=n_sites)
                accepted += np.bincount(site_of[rec[fresh]], minlength=n_sites)
                g, tf, vf, rf = gi[fresh], t[fresh], cols.value[fresh], rec[fresh]
            if not len(g):
                continue
            if is_counter:
                self._cbuf.append((t_sid[g], tf, vf, t_epoch[g] ^ boots[rf], t_bits[g]))
            else:
                self._gbuf.append((t_sid[g], tf, vf))
        for si in np.flatnonzero(accepted | late).tolist():
            self.sites[si].samples += int(accepted[si])
            self.sites[si].dropped["late"] += int(late[si])
        total = int(accepted.sum())
        self.samples += total
        return total

    def _add_periods(self, d: Rec, table: Table, site: Site) -> int:
        """Period samples go to the period store (collector/aggregate/periods.py), never
        through the watermark: a period is complete when it arrives, however late."""
        accepted = 0
        self.periods.note_clock(self.max_event_ns)
        for gauge, cols, want in ((False, d.deltas, OK_DELTA), (True, d.period_gauges, OK_GAUGE)):
            if not len(cols):
                continue
            code = table.code[cols.series_index]
            ok = code == want
            site.dropped["unknown_metric"] += int(np.count_nonzero(code == UNKNOWN))
            site.dropped["cardinality"] += int(np.count_nonzero(code == CAPPED))
            site.dropped["rejected"] += int(np.count_nonzero(~ok & (code != UNKNOWN) & (code != CAPPED)))
            verdict, rows = self.periods.add(
                table.sid[cols.series_index[ok]],
                cols.start_unix_nano[ok],
                cols.time_unix_nano[ok],
                cols.value[ok],
                gauge=gauge,
            )
            site.dropped["duplicate"] += verdict.duplicate
            site.dropped["too_old"] += verdict.too_old
            site.dropped["overlap"] += verdict.overlap
            accepted += verdict.accepted
            if self.on_window is not None and len(rows):
                self._emit_periods(rows, gauge)
        self.periods.expire()
        self.version += 1
        return accepted

    def _emit_periods(self, rows: pl.DataFrame, gauge: bool) -> None:
        """Accepted periods to the window log, each at its own period (window = its length)."""
        assert self.on_window is not None
        rows = rows.with_columns(window_s=(pl.col("end") - pl.col("start")) // NS)
        for (length,), part in rows.partition_by("window_s", as_dict=True).items():
            if gauge:
                g = part.select("sid", "end", sum="value", cnt=pl.lit(1, pl.UInt32), min="value", max="value")
                self.on_window(self.partition, int(length), _empty(COUNTER_WIN_SCHEMA), self._labelled(g))
            else:
                c = part.select(
                    "sid",
                    "end",
                    inc=pl.col("value").cast(pl.Int128),
                    dt=pl.col("end") - pl.col("start"),
                    n=pl.lit(1, pl.UInt32),
                    resets=pl.lit(0, pl.UInt32),
                    wraps=pl.lit(0, pl.UInt32),
                )
                self.on_window(self.partition, int(length), self._labelled(c), _empty(GAUGE_WIN_SCHEMA))

    # ------------------------------------------------------------------ event time
    def _update_watermark(self) -> None:
        """Watermark = oldest newest-event-time among the partition's active sites - lateness.

        Sites batch and deliver at their own pace (a batch may span 100 s of samples), so the
        partition only moves as fast as its slowest site - unless that site is more than
        `site_idle_s` behind the newest one (silent or far behind): then it stops holding
        windows open. Event time only, so it is a function of the record sequence; kept
        monotonic so nothing closed ever reopens.
        """
        assert self.max_event_ns is not None
        oldest = self._newest.min_at_least(self.max_event_ns - self.site_idle_ns)
        assert oldest is not None  # the newest site is always at or above the floor
        wm = oldest - self.lateness_ns
        if self.wm_ns is None or wm > self.wm_ns:
            self.wm_ns = wm

    def watermark_ns(self) -> int | None:
        return self.wm_ns

    def advance(self, idle_ns: int = 0, *, emit_all: bool | None = None) -> CloseStats | None:
        """Close every pane the watermark has passed. `idle_ns`: wall time without records
        beyond the idle timeout, by which event time is advanced (silent partitions).

        An idle close depends on the wall clock, not on the record sequence: a replay after a
        restart would not repeat it. The service therefore checkpoints `idle_target()` as
        `idle_close_ns` first and then calls `close_idle()`, which a restore repeats."""
        if self.max_event_ns is None or self.wm_ns is None:
            return None
        # A silent partition's event time flows with the wall clock from its newest sample,
        # and neither the lateness nor a lagging site holds its windows open.
        wm = self.max_event_ns + idle_ns if idle_ns > 0 else self.wm_ns
        return self._advance_to(wm, emit_all)

    def idle_target(self, idle_ns: int) -> int | None:
        """The pane boundary an idle close would reach, when it closes more than the
        watermark does; None otherwise."""
        if idle_ns <= 0 or self.max_event_ns is None or self.wm_ns is None:
            return None
        target = ((self.max_event_ns + idle_ns) // self.pane_ns) * self.pane_ns
        if target <= (self.wm_ns // self.pane_ns) * self.pane_ns:
            return None
        if self.closed_ns is not None and target <= self.closed_ns:
            return None
        return target

    def close_idle(self, target_ns: int, *, emit_all: bool | None = None) -> CloseStats | None:
        """Close up to `target_ns` (an idle close recorded in a checkpoint beforehand)."""
        self.idle_close_ns = None
        if self.max_event_ns is None or self.wm_ns is None:
            return None
        return self._advance_to(target_ns, emit_all)

    def _advance_to(self, wm: int, emit_all: bool | None) -> CloseStats | None:
        target = (wm // self.pane_ns) * self.pane_ns
        if self.closed_ns is None:
            first = self._oldest_buffered()
            if first is None:
                return None
            self.closed_ns = (first // self.pane_ns) * self.pane_ns
        if target <= self.closed_ns:
            return None
        return self._close(target, self.on_window is not None if emit_all is None else emit_all)

    def _oldest_buffered(self) -> int | None:
        ts = [int(c[1].min()) for c in (*self._cbuf, *self._gbuf) if len(c[1])]
        return min(ts) if ts else None

    def _take_buffer(
        self, bufs: list[tuple[np.ndarray, ...]], upto: int
    ) -> tuple[list[tuple[np.ndarray, ...]], tuple[np.ndarray, ...] | None]:
        """Splits the buffer at `upto`: (what stays, the samples before it sorted by (series,
        time))."""
        if not bufs:
            return bufs, None
        cols = [np.concatenate(c) if len(bufs) > 1 else c[0] for c in zip(*bufs, strict=True)]
        t = cols[1]
        due = t < upto
        if due.all():
            order = _by_series_time(cols[0], t)
            return [], tuple(c[order] for c in cols)
        keep = tuple(c[~due] for c in cols)
        idx = np.flatnonzero(due)
        idx = idx[_by_series_time(cols[0][idx], t[idx])]
        return ([keep] if len(keep[0]) else []), tuple(c[idx] for c in cols)

    def _close(self, target: int, emit_all: bool) -> CloseStats:
        assert self.closed_ns is not None
        start = self.closed_ns
        self._tier_src = None
        self._cbuf, cdue = self._take_buffer(self._cbuf, target)
        self._gbuf, gdue = self._take_buffer(self._gbuf, target)
        n = 0
        speeds: tuple[np.ndarray, ...] | None = None
        if gdue is not None and len(gdue[0]):
            n += len(gdue[0])
            gsid, gt, gv = gdue
            speeds = self._gauge_panes(gsid, gt, gv)
        if cdue is not None and len(cdue[0]):
            n += len(cdue[0])
            sid, t, v, epoch, bits = cdue
            self._counter_panes(sid, t, v, epoch, bits, speeds)
        if speeds is not None:
            self._carry_speeds(speeds)
        n_ends = self._windows(start, target, emit_all)
        self._prune(target)  # the next window of each tier ends after target
        self.closed_ns = target
        self.periods.note_clock(self.max_event_ns)
        self.periods.expire()
        expired = self._expire(target - self.ttl_ns)
        self.version += 1
        return CloseStats(n_ends, n, expired)

    def _renew_returning(self, sid: np.ndarray, t: np.ndarray, starts: np.ndarray) -> None:
        """Samples sorted by (sid, t) are about to be processed. A series whose first one
        comes more than stale_ttl_s after its previous sample has been silent longer than the
        expiry: it starts a new life, as if it had expired (sample ledger from the new sample
        on, no counter carry, corrected total from 0 with a new created time, its old windows
        gone). Decided from the gap between two consecutive processed samples of the series,
        so it depends neither on the wall clock nor on poll grouping. `starts`: each series'
        first sample."""
        u = sid[starts]
        last = self.s_last[u]
        ren = u[(last != _NO_SAMPLE) & (t[starts] - last > self.ttl_ns)]
        if not len(ren):
            return
        self.s_last[ren] = _NO_SAMPLE
        self.s_first[ren] = 0
        self.s_step[ren] = 0
        self.s_count[ren] = 0
        self.s_speed[ren] = 0.0
        self.s_tot_hi[ren] = 0
        self.s_tot_lo[ren] = 0
        self.carry.has[ren] = False
        self._forget(ren)
        self.renewed += len(ren)

    def _forget(self, ids: np.ndarray) -> None:
        """Drop the windows, panes and totals of these series ids."""
        gone = pl.Series(ids.astype(np.uint32)).implode()
        for w in self.windows_s:
            self.latest_c[w] = self.latest_c[w].filter(~pl.col("sid").is_in(gone))
            self.latest_g[w] = self.latest_g[w].filter(~pl.col("sid").is_in(gone))
        self.cpanes = [f.filter(~pl.col("sid").is_in(gone)) for f in self.cpanes]
        self.gpanes = [f.filter(~pl.col("sid").is_in(gone)) for f in self.gpanes]
        self.totals_published = self.totals_published.filter(~pl.col("sid").is_in(gone))
        if self._totals_pending is not None:
            self._totals_pending = self._totals_pending.filter(~pl.col("sid").is_in(gone))

    def _group_starts(self, first: np.ndarray, pane: np.ndarray) -> np.ndarray:
        """Positions where a (series, pane) group starts (`first`: the series' first samples)."""
        change = first.copy()
        change[1:] |= pane[1:] != pane[:-1]
        return np.flatnonzero(change)

    def _plausible_rate(
        self, sid: np.ndarray, t: np.ndarray, speeds: tuple[np.ndarray, ...] | None, starts: np.ndarray
    ) -> np.ndarray | float:
        """Largest plausible increase per second of each counter sample (sorted by sid, t):
        its link's speed as of the sample's time where the link reports one, else
        `max_counter_rate`. A function of the processed samples only (an as-of join on event
        time, the speed carried from earlier closes), so poll grouping does not change it."""
        fallback = self.settings.max_counter_rate
        u = sid[starts]  # per series (`starts`: each series' first sample)
        link = _LINK_COUNTER[self.s_metric[u]]
        if not link.any():
            return fallback
        spd_of = self.s_speed_of
        lu = u[link]
        for x in lu[spd_of[lu] == _UNRESOLVED].tolist():  # looked up once per series
            key = self.keys[x]
            spd_of[x] = -1 if key is None else self.series_key.get((key[0], _SPEED_M, key[2]), -1)
        spd_u = np.where(link, spd_of[u], -1)
        if not (spd_u >= 0).any():
            return fallback
        spd_sample = np.repeat(spd_u, np.diff(np.append(starts, len(sid))))
        q = np.flatnonzero(spd_sample >= 0)
        if not len(q):
            return fallback
        qsid = spd_sample[q]
        speed = self.s_speed[qsid]  # carried: the last speed before this close
        if speeds is not None and len(speeds[0]):
            esid, et, ev = speeds
            all_sid = np.concatenate([esid.astype(np.int64), qsid])
            all_t = np.concatenate([et, t[q]])
            is_q = np.concatenate([np.zeros(len(esid), bool), np.ones(len(q), bool)])
            order = np.lexsort((is_q, all_t, all_sid))  # an event at t applies to a query at t
            pos = np.where(is_q[order], -1, np.arange(len(order)))
            last = np.maximum.accumulate(pos)
            qpos = np.flatnonzero(is_q[order])
            j = last[qpos]
            hit = (j >= 0) & (all_sid[order][np.maximum(j, 0)] == all_sid[order][qpos])
            qi = order[qpos] - len(esid)  # index into q
            speed = speed.copy()
            speed[qi[hit]] = ev[order[j[hit]]]
        rate = np.full(len(sid), fallback)
        known = speed > 0
        # the counter's raw units per second: bytes/s divided by the counter's scale
        rate[q[known]] = speed[known] / np.maximum(self.s_scale[sid[q[known]]], 1e-300)
        return rate

    def _counter_panes(
        self,
        sid: np.ndarray,
        t: np.ndarray,
        v: np.ndarray,
        epoch: np.ndarray,
        bits: np.ndarray,
        speeds: tuple[np.ndarray, ...] | None = None,
    ) -> None:
        """Counter panes of samples sorted by (series, time)."""
        first, sstarts = _series_runs(sid)
        self._renew_returning(sid, t, sstarts)
        d = counter_deltas(
            sid, t, v, epoch, bits, self.carry, self._plausible_rate(sid, t, speeds, sstarts), first=first
        )
        if d.ambiguous.any():
            per_site = np.bincount(self.s_site[sid[d.ambiguous]], minlength=len(self.sites))
            for si in np.flatnonzero(per_site).tolist():
                self.sites[si].excluded["ambiguous_gap"] += int(per_site[si])
        pane = t // self.pane_ns
        starts = self._group_starts(first, pane)
        self._add_totals(sid, d.delta, sstarts)
        # one sample per (series, pane) - sampling every pane or slower, the usual case -
        # needs no group sums
        one = len(starts) == len(sid)
        hi, lo = (
            (d.delta >> np.uint64(32), d.delta & np.uint64(0xFFFF_FFFF))
            if one
            else split_sum_arrays(d.delta, starts)
        )

        def per_pane(x: np.ndarray) -> np.ndarray:
            return x.astype(np.uint32) if one else _group_sum(x, starts).astype(np.uint32)

        frame = pl.DataFrame(
            {
                "sid": sid[starts].astype(np.uint32),
                "pane": pane[starts],
                "hi": hi,
                "lo": lo,
                "dt": d.dt if one else np.add.reduceat(d.dt, starts),
                "n": per_pane(d.valid),
                "resets": per_pane(d.reset),
                "wraps": per_pane(d.wrap),
            },
            schema=COUNTER_PANE_SCHEMA,
        )
        old = self.cpanes[0]
        self.cpanes[0] = pl.concat([old, frame]) if len(old) else frame
        if self.n_tiers > 1:
            # The first tier's rows (tumbling sums of n_src[1] panes) need only the sums of each
            # (series, tier pane): taken here, over the sorted samples, they spare the tier roll
            # a sort and gathers over every new pane. Integers, so the sums are the same.
            m = self.n_src[1]
            tg = self._group_starts(first, pane // m)
            size = np.diff(np.append(tg, len(sid)))

            def count(x: np.ndarray) -> np.ndarray:  # of flags; all or none set is the usual case
                if not x.any():
                    return np.zeros(len(tg), np.uint32)
                return (size if x.all() else _group_sum(x, tg)).astype(np.uint32)

            self._tier_src = pl.DataFrame(
                {
                    "sid": sid[tg].astype(np.uint32),
                    "pane": pane[tg],
                    "hi": _group_sum(hi if one else d.delta >> np.uint64(32), tg),
                    "lo": _group_sum(lo if one else d.delta & np.uint64(0xFFFF_FFFF), tg),
                    "dt": _group_sum(d.dt, tg),
                    "n": count(d.valid),
                    "resets": count(d.reset),
                    "wraps": count(d.wrap),
                },
                schema=COUNTER_PANE_SCHEMA,
            )
            if len(old):
                self._tier_src = pl.concat([old, self._tier_src])
        self._touch(sid, t, sstarts)

    def _add_totals(self, sid: np.ndarray, delta: np.ndarray, starts: np.ndarray) -> None:
        """Counted deltas (samples sorted by sid; `starts`: each series' first) into each
        series' corrected total."""
        u = sid[starts]
        hi, lo = split_sum_arrays(delta, starts)
        lo = self.s_tot_lo[u] + lo
        self.s_tot_hi[u] += hi + (lo >> np.uint64(32))
        self.s_tot_lo[u] = lo & np.uint64(0xFFFF_FFFF)

    def totals_frame(self) -> pl.DataFrame:
        """sid, hi, lo, created (ns) of every live counter series that has a sample."""
        n = len(self.keys)
        sel = np.flatnonzero(self.s_live[:n] & _IS_COUNTER[self.s_metric[:n]] & (self.s_count[:n] > 0))
        at = self.closed_ns if self.closed_ns is not None else 0
        return pl.DataFrame(
            {
                "sid": sel.astype(np.uint32),
                "hi": self.s_tot_hi[sel],
                "lo": self.s_tot_lo[sel],
                "created": self.s_first[sel],
                "at": np.full(len(sel), at, np.int64),
            },
            schema=TOTALS_SCHEMA,
        )

    def publish_totals(self) -> None:
        """The checkpoint taken last is committed: its totals become the published ones.

        Publishing only committed totals means a restarted or rebalanced owner, which starts
        from that checkpoint, never shows a smaller total than was shown before (no false
        counter reset in Prometheus); the price is up to one checkpoint interval of lag.
        """
        if self._totals_pending is not None:
            self.totals_published = self._totals_pending
            self._totals_pending = None
            self.totals_gen += 1

    def _gauge_panes(self, sid: np.ndarray, t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, ...] | None:
        """Gauge panes of samples sorted by (series, time); returns the link speed samples
        among them (sid, t, bytes/s), sorted likewise, for the counters' gap rule (see
        _carry_speeds)."""
        first, sstarts = _series_runs(sid)
        self._renew_returning(sid, t, sstarts)
        speeds = None
        is_speed = self.s_metric[sid] == _SPEED_M
        if is_speed.any():
            speeds = (sid[is_speed], t[is_speed], v[is_speed] * self.s_scale[sid[is_speed]])
        pane = t // self.pane_ns
        starts = self._group_starts(first, pane)
        counts = np.diff(np.append(starts, len(sid)))
        one = len(starts) == len(sid)  # one sample per (series, pane): no group sums
        frame = pl.DataFrame(
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
        self.gpanes[0] = pl.concat([self.gpanes[0], frame]) if len(self.gpanes[0]) else frame
        self._touch(sid, t, sstarts)
        return speeds

    def _carry_speeds(self, speeds: tuple[np.ndarray, ...]) -> None:
        """Each link's last speed of this close, for counters of later closes."""
        ssid, _, sv = speeds
        last = np.ones(len(ssid), bool)
        last[:-1] = ssid[:-1] != ssid[1:]
        self.s_speed[ssid[last]] = sv[last]

    def _touch(self, sid: np.ndarray, t: np.ndarray, starts: np.ndarray) -> None:
        """Samples sorted by (sid, t) have been processed: sample ledger and last sample time.

        Vectorised over the groups of one series. Every sample processed now is newer than
        every one processed before (older ones were late), so the gap to a series' previous
        sample is t - s_last, and a repeated timestamp can only occur inside this call.
        """
        n = len(sid)
        gsid = sid[starts]  # `starts`: each series' first sample
        before = self.s_last[gsid]
        new = before == _NO_SAMPLE
        prev = np.empty(n, np.int64)
        prev[1:] = t[:-1]
        prev[starts] = np.where(new, t[starts], before)
        gap = t - prev
        step = np.minimum.reduceat(np.where(gap > 0, gap, _NO_STEP), starts)
        distinct = gap > 0
        distinct[starts[new]] = True  # a series' very first sample
        self.s_count[gsid] += np.add.reduceat(distinct.astype(np.int64), starts)
        old = self.s_step[gsid]
        step = np.minimum(step, np.where(old > 0, old, _NO_STEP))
        self.s_step[gsid] = np.where(step == _NO_STEP, 0, step)
        self.s_first[gsid[new]] = t[starts[new]]
        ends = np.append(starts[1:], n) - 1
        self.s_last[gsid] = np.maximum(before, t[ends])

    def _windows(self, start: int, target: int, emit_all: bool) -> int:
        """Close the windows ending in (start, target]; returns how many ends were computed.

        Each window length slides by its source tier's pane. Tier panes (tumbling windows
        of the tier below) are always computed the same way, before anything is pruned;
        then every closed window end (`emit_all`, for the window log) or just the newest.
        The published numbers are the same bits either way (see _roll).
        """
        for j in range(1, self.n_tiers):
            k, n, size = self.src[j], self.n_src[j], self.tier_ns[self.src[j]]
            lo, hi = start // size + 1, target // size
            if hi >= lo:
                # tier 1 from this close's partial sums when it has them (see _counter_panes)
                csrc = self._tier_src if j == 1 and self._tier_src is not None else self.cpanes[k]
                self._add_tier(
                    j,
                    self._roll(csrc, n, lo, hi, size, True, tumbling=True),
                    self._roll(self.gpanes[k], n, lo, hi, size, False, tumbling=True),
                )
        if not emit_all:
            # drop what the newest windows do not need, so they are computed from a few rows
            self._prune(target, extra=1)
        count = 0
        for j, w in enumerate(self.windows_s):
            k = self.src[j]
            size = self.tier_ns[k]
            n = self.n_src[j]
            lo, hi = start // size + 1, target // size  # end indices in tier-k panes
            if hi < lo:
                continue
            if not emit_all:
                lo = hi
            cw = _exact(self._roll(self.cpanes[k], n, lo, hi, size, True))
            gw = self._roll(self.gpanes[k], n, lo, hi, size, False)
            count += hi - lo + 1
            for frame, latest in ((cw, self.latest_c), (gw, self.latest_g)):
                if len(frame):
                    newest = (
                        frame if lo == hi else frame.filter(pl.col("end") == pl.col("end").max().over("sid"))
                    )
                    old = latest[w]
                    latest[w] = pl.concat([old.filter(~pl.col("sid").is_in(newest["sid"].implode())), newest])
            if self.on_window is not None and (len(cw) or len(gw)):
                self.on_window(self.partition, w, self._labelled(cw), self._labelled(gw))
        return count

    def _prune(self, target: int, extra: int = 0) -> None:
        """Drop panes no window ending after `target` needs (`extra`: also keep that many
        more, for windows ending at `target` itself)."""
        for k in range(self.n_tiers):
            keep_from = (target // self.tier_ns[k]) + 1 - self.keep_panes[k] - extra
            if len(self.cpanes[k]) and self.cpanes[k]["pane"].min() < keep_from:  # type: ignore[operator]
                self.cpanes[k] = self.cpanes[k].filter(pl.col("pane") >= keep_from)
            if len(self.gpanes[k]) and self.gpanes[k]["pane"].min() < keep_from:  # type: ignore[operator]
                self.gpanes[k] = self.gpanes[k].filter(pl.col("pane") >= keep_from)

    def _add_tier(self, k: int, cw: pl.DataFrame, gw: pl.DataFrame) -> None:
        size = self.tier_ns[k]
        if len(cw):
            rows = cw.select(
                "sid",
                pane=pl.col("end") // size - 1,
                hi=pl.col("hi"),
                lo=pl.col("lo"),
                dt=pl.col("dt"),
                n=pl.col("n"),
                resets=pl.col("resets"),
                wraps=pl.col("wraps"),
            )
            rows = rows.cast(COUNTER_PANE_SCHEMA)  # type: ignore[arg-type]
            self.cpanes[k] = pl.concat([self.cpanes[k], rows]) if len(self.cpanes[k]) else rows
        if len(gw):
            rows = gw.select(
                "sid",
                pane=pl.col("end") // size - 1,
                sum=pl.col("sum"),
                cnt=pl.col("cnt"),
                min=pl.col("min"),
                max=pl.col("max"),
            )
            rows = rows.cast(GAUGE_PANE_SCHEMA)  # type: ignore[arg-type]
            self.gpanes[k] = pl.concat([self.gpanes[k], rows]) if len(self.gpanes[k]) else rows

    def _roll(
        self,
        panes: pl.DataFrame,
        n: int,
        e_lo: int,
        e_hi: int,
        size: int,
        counter: bool,
        tumbling: bool = False,
    ) -> pl.DataFrame:
        """Windows of n consecutive tier panes ending at pane indices e in [e_lo, e_hi] (window
        e covers panes e-n .. e-1 and ends at e * size); `tumbling`: only ends that are
        multiples of n. One row per (series, end) with data, ordered by (end, series) (by
        (series, end) when tumbling: tier rows, whose order nothing depends on).

        NumPy on rows sorted by (series, end, pane): every window is a sequential sum over its
        own panes in pane order, so its float bits do not depend on which other ends are
        computed (the window log computes every end, /metrics alone only the newest).
        """
        schema = COUNTER_AGG_SCHEMA if counter else GAUGE_WIN_SCHEMA
        if tumbling:
            e_lo = -(-e_lo // n) * n
            e_hi = (e_hi // n) * n
        if not len(panes) or e_lo > e_hi:
            return _empty(schema)
        pane = panes["pane"].to_numpy()
        rows = np.flatnonzero((pane >= e_lo - n) & (pane < e_hi))
        if not len(rows):
            return _empty(schema)
        p = pane[rows]
        if tumbling:
            first = (p // n + 1) * n
            cnt = np.ones(len(p), np.int64)
        else:
            first = np.maximum(p + 1, e_lo)
            cnt = np.maximum(np.minimum(p + n, e_hi) - first + 1, 0)
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
                else _group_sum(x, g).astype(x.dtype, copy=False)
                if op is np.add and x.dtype.kind in "iu"
                else op.reduceat(x, g)
            )
        if e_lo == e_hi or tumbling:
            # one end: (series, end) order is (end, series) order; tier rows (tumbling) are
            # kept in (series, end) order, which the next roll's stable sort merges cheaply
            return pl.DataFrame(cols, schema=schema)
        out_order = np.lexsort((cols["sid"], cols["end"]))
        return pl.DataFrame({k: v[out_order] for k, v in cols.items()}, schema=schema)

    def _labelled(self, frame: pl.DataFrame) -> pl.DataFrame:
        meta = self.series_meta()
        keyed = meta.select(
            "sid",
            "site",
            pl.col("metric_i")
            .cast(pl.Int64)
            .replace_strict(list(range(len(METRICS))), [m.name for m in METRICS], return_dtype=pl.String)
            .alias("metric"),
            (
                pl.concat_str([pl.lit(n + "=") + pl.col(n) for n in _LOG_LABELS], separator=",")
                # a distribution bin's bound, only on bins: other series' labels read as before
                + pl.when(pl.col("le") != "").then(pl.lit(",le=") + pl.col("le")).otherwise(pl.lit(""))
            ).alias("labels"),
        )
        return frame.join(keyed, on="sid", how="left")

    def _expire(self, before: int) -> int:
        live = np.flatnonzero(self.s_live[: len(self.keys)])
        if not len(live):
            return 0
        stale = live[self.s_last[live] < before]
        if not len(stale):
            return 0
        # A series with samples still in the open buffer is not stale.
        pending = [c[0] for c in self._cbuf] + [g[0] for g in self._gbuf] + [self.periods.sids()]
        if pending:
            stale = np.setdiff1d(stale, np.concatenate(pending))
        if not len(stale):
            return 0
        for s in stale.tolist():
            key = self.keys[s]
            assert key is not None
            if key[1] == _SPEED_M:  # its id may be reused: its link's counters look again
                self._unresolve_link(key)
            del self.series_key[key]
            self.keys[s] = None
            self.free.append(s)
            self.sites[key[0]].series -= 1
        self.s_live[stale] = False
        self.s_speed_of[stale] = _UNRESOLVED
        self.s_step[stale] = 0
        self.s_count[stale] = 0
        self.carry.has[stale] = False
        self._forget(stale)
        self._tables.clear()  # cached tables may map to freed ids
        self._meta = None
        return len(stale)

    def _forget_restored(self, sids: list[int]) -> None:
        """Drop restored series whose metric left the catalogue (restore only)."""
        idx = np.array(sids, np.int64)
        self._forget(idx)  # windows, panes, totals
        self.carry.has[idx] = False
        self.s_count[idx] = 0
        self.s_step[idx] = 0
        self.s_tot_hi[idx] = 0
        self.s_tot_lo[idx] = 0
        for site in {int(self.s_site[i]) for i in sids}:
            self.sites[site].series -= int(np.count_nonzero(self.s_site[idx] == site))
        drop = np.array(sids, np.uint32)
        self._cbuf = [tuple(c[~np.isin(b[0], drop)] for c in b) for b in self._cbuf]
        self._gbuf = [tuple(c[~np.isin(b[0], drop)] for c in b) for b in self._gbuf]
        self.periods.forget(drop)
        self._meta = None

    # ------------------------------------------------------------------ views
    def view(self) -> PartitionView:
        """A consistent, immutable picture of what is published (safe to render in a thread)."""
        expected = [0] * len(self.sites)
        received = [0] * len(self.sites)
        for a in self.agents.values():
            expected[a.site] += a.expected()
            received[a.site] += a.received
        s_expected, s_counted = self._sample_ledger()
        sites = tuple(
            SiteLedger(
                s.site_id,
                s.country,
                s.region,
                s.series,
                s.batches,
                s.dup_batches,
                s.samples,
                dict(s.dropped),
                expected[i],
                received[i],
                s.max_event,
                int(s_expected[i]),
                int(s_counted[i]),
                dict(s.excluded),
            )
            for i, s in enumerate(self.sites)
        )
        pc, pg = self.periods.latest()
        return PartitionView(
            self.partition,
            self.windows_s,
            self.series_meta(),
            dict(self.latest_c),
            dict(self.latest_g),
            sites,
            pc,
            pg,
            self.totals_published,
        )

    def ledger_end_ns(self) -> int | None:
        """Last event time (inclusive) the sample ledger expects samples up to.

        The pane boundary the partition has closed - everything before it is processed,
        nothing after it is - capped at the partition's newest event time, so a silent
        partition whose idle timeout closed its panes by the wall clock does not keep
        expecting samples. Without the idle timeout the closed boundary is the watermark
        rounded down to a pane after the last advance(), a function of the record sequence.
        """
        if self.closed_ns is None or self.max_event_ns is None:
            return None
        return min(self.closed_ns - 1, self.max_event_ns)

    def _sample_ledger(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Per site: samples expected and distinct samples processed, over live series with
        a known step. A series expects (end - first) // step + 1 samples: it keeps expecting
        while it (or its site) is silent, until it expires after stale_ttl_s."""
        expected = np.zeros(len(self.sites), np.int64)
        counted = np.zeros(len(self.sites), np.int64)
        end = self.ledger_end_ns()
        n = len(self.keys)
        if end is None or not n:
            return expected, counted
        sel = np.flatnonzero(self.s_live[:n] & (self.s_step[:n] > 0))
        per = np.maximum((end - self.s_first[sel]) // self.s_step[sel] + 1, 0)
        site = self.s_site[sel]
        np.add.at(expected, site, per)
        np.add.at(counted, site, self.s_count[sel])
        return expected, counted

    def series_meta(self) -> pl.DataFrame:
        """sid -> site index, metric index and entity label values (live series only)."""
        if self._meta is None:
            sids = [i for i, k in enumerate(self.keys) if k is not None]
            cols: dict[str, list[str]] = {n: [] for n in LABEL_NAMES}
            for i in sids:
                key = self.keys[i]
                assert key is not None
                pos = _SPEC_LABEL_POS[key[1]]
                vals = [""] * len(LABEL_NAMES)
                for p, val in zip(pos, key[2], strict=True):
                    vals[p] = val
                for n, val in zip(LABEL_NAMES, vals, strict=True):
                    cols[n].append(val)
            sid_arr = np.array(sids, np.uint32)
            site = self.s_site[sid_arr] if len(sid_arr) else np.zeros(0, np.int32)
            self._meta = pl.DataFrame(
                {
                    "sid": sid_arr,
                    "site_i": site.astype(np.int32),
                    "metric_i": self.s_metric[sid_arr].astype(np.int16),
                    "scale": self.s_scale[sid_arr] if len(sid_arr) else np.zeros(0, np.float64),
                    "site": [self.sites[i].site_id for i in site.tolist()],
                    "country": [self.sites[i].country for i in site.tolist()],
                    "region": [self.sites[i].region for i in site.tolist()],
                    **cols,
                },
                schema={
                    "sid": pl.UInt32,
                    "site_i": pl.Int32,
                    "metric_i": pl.Int16,
                    "scale": pl.Float64,
                    "site": pl.String,
                    "country": pl.String,
                    "region": pl.String,
                    **dict.fromkeys(LABEL_NAMES, pl.String),
                },
            )
        return self._meta

    def live_series(self) -> int:
        return len(self.series_key)

    def buffered_samples(self) -> int:
        return sum(len(c[0]) for c in self._cbuf) + sum(len(g[0]) for g in self._gbuf)

    def buffered_bytes(self) -> int:
        """Bytes of samples held until the watermark passes their pane."""
        return sum(sum(a.nbytes for a in c) for c in (*self._cbuf, *self._gbuf))

    def state_bytes(self) -> int:
        """Approximate resident bytes of this state (arrays, frames, registry)."""
        n = sum(
            a.nbytes
            for a in (
                self.s_site,
                self.s_metric,
                self.s_last,
                self.s_live,
                self.s_scale,
                self.s_first,
                self.s_step,
                self.s_count,
                self.carry.has,
                self.carry.value,
                self.carry.time,
                self.carry.epoch,
            )
        )
        n += sum(int(f.estimated_size()) for f in (*self.cpanes, *self.gpanes))
        n += sum(int(f.estimated_size()) for f in (*self.latest_c.values(), *self.latest_g.values()))
        n += self.buffered_bytes() + self.periods.state_bytes()
        # registry: the dict, the key list, key tuples and each distinct label string once
        n += sys.getsizeof(self.series_key) + sys.getsizeof(self.keys)
        strings: dict[int, int] = {}
        for k in self.series_key:
            n += sys.getsizeof(k) + sys.getsizeof(k[2])
            for s in k[2]:
                strings[id(s)] = sys.getsizeof(s)
        return n + sum(strings.values())

    # ------------------------------------------------------------------ checkpoint
    def snapshot(self) -> bytes:
        """Everything needed to continue exactly where this state is, as bytes.

        Format: JSON header line, then length-prefixed Arrow IPC frames. No pickle: the state
        topic is readable by anything that can write to Kafka.
        """
        frames: dict[str, pl.DataFrame] = {}
        n = len(self.keys)
        self._totals_pending = self.totals_frame()
        frames["series"] = pl.DataFrame(
            {
                "site": self.s_site[:n],
                "metric": self.s_metric[:n],
                "last": self.s_last[:n],
                "live": self.s_live[:n],
                "scale": self.s_scale[:n],
                "c_has": self.carry.has[:n],
                "c_value": self.carry.value[:n],
                "c_time": self.carry.time[:n],
                "c_epoch": self.carry.epoch[:n],
                "first": self.s_first[:n],
                "step": self.s_step[:n],
                "count": self.s_count[:n],
                "speed": self.s_speed[:n],
                "tot_hi": self.s_tot_hi[:n],
                "tot_lo": self.s_tot_lo[:n],
                "labels": [list(k[2]) if k is not None else None for k in self.keys],
            },
            schema_overrides={"labels": pl.List(pl.String)},
        )
        for k in range(self.n_tiers):
            frames[f"cpanes_{k}"] = self.cpanes[k]
            frames[f"gpanes_{k}"] = self.gpanes[k]
        for w in self.windows_s:
            frames[f"latest_c_{w}"] = self.latest_c[w]
            frames[f"latest_g_{w}"] = self.latest_g[w]
        cb = self._take_all(self._cbuf, 5)
        frames["cbuf"] = pl.DataFrame({"sid": cb[0], "t": cb[1], "v": cb[2], "epoch": cb[3], "bits": cb[4]})
        gb = self._take_all(self._gbuf, 3)
        frames["gbuf"] = pl.DataFrame({"sid": gb[0], "t": gb[1], "v": gb[2]})
        frames.update(self.periods.frames())
        frames["agents"] = pl.DataFrame(
            {
                "agent": list(self.agents),
                "site": [a.site for a in self.agents.values()],
                "lo": [a.lo for a in self.agents.values()],
                "hi": [a.hi for a in self.agents.values()],
                "mask": [
                    a.mask.to_bytes((a.mask.bit_length() + 7) // 8 or 1, "little")
                    for a in self.agents.values()
                ],
                "received": [a.received for a in self.agents.values()],
                "gaps": [[x for g in a.gaps for x in g] for a in self.agents.values()],
                "gap_hits": [a.gap_hits for a in self.agents.values()],
            },
            schema={
                "agent": pl.String,
                "site": pl.Int64,
                "lo": pl.UInt64,
                "hi": pl.UInt64,
                "mask": pl.Binary,
                "received": pl.UInt64,
                "gaps": pl.List(pl.UInt64),
                "gap_hits": pl.UInt64,
            },
        )
        header = {
            "v": CHECKPOINT_VERSION,
            "partition": self.partition,
            "next_offset": self.next_offset,
            "max_event_ns": self.max_event_ns,
            "closed_ns": self.closed_ns,
            "wm_ns": self.wm_ns,
            "idle_close_ns": self.idle_close_ns,
            "pane_ns": self.pane_ns,
            "windows_s": list(self.windows_s),
            "records": self.records,
            "samples": self.samples,
            "sites": [
                [
                    s.site_id,
                    s.country,
                    s.region,
                    s.series,
                    s.batches,
                    s.dup_batches,
                    s.samples,
                    s.max_event,
                    s.dropped,
                    s.excluded,
                ]
                for s in self.sites
            ],
            "free": self.free,
            "frames": list(frames),
            "period_clock": self.periods.clock_ns,
            # the series frame's `metric` column and label tuples refer to this table, not to
            # the catalogue's order, so a catalogue change cannot relabel restored series
            "metrics": [[m.name, list(m.labels)] for m in METRICS],
        }
        out = io.BytesIO()
        h = json.dumps(header).encode()
        out.write(struct.pack("<I", len(h)))
        out.write(h)
        for f in frames.values():
            buf = io.BytesIO()
            f.write_ipc(buf, compression="lz4")
            data = buf.getvalue()
            out.write(struct.pack("<Q", len(data)))
            out.write(data)
        return out.getvalue()

    def _take_all(self, bufs: list[tuple[np.ndarray, ...]], k: int) -> list[np.ndarray]:
        if not bufs:
            dt = (
                [np.uint32, np.int64, np.uint64, np.int64, np.uint8]
                if k == 5
                else [np.uint32, np.int64, np.float64]
            )
            return [np.zeros(0, d) for d in dt]
        return [np.concatenate(c) for c in zip(*bufs, strict=True)]

    @classmethod
    def restore(cls, data: bytes, settings: AggregateSettings) -> PartitionState:
        view = memoryview(data)
        (hl,) = struct.unpack_from("<I", view, 0)
        header = json.loads(bytes(view[4 : 4 + hl]))
        if header.get("v") not in (1, 2, 3, CHECKPOINT_VERSION):
            raise ProtocolError(
                f"checkpoint format v{header.get('v')} is not readable by this "
                f"aggregator (reads v1..v{CHECKPOINT_VERSION})"
            )
        pos = 4 + hl
        frames: dict[str, pl.DataFrame] = {}
        for name in header["frames"]:
            (fl,) = struct.unpack_from("<Q", view, pos)
            pos += 8
            frames[name] = pl.read_ipc(io.BytesIO(bytes(view[pos : pos + fl])))
            pos += fl
        st = cls(header["partition"], settings)
        if header["pane_ns"] != st.pane_ns or tuple(header["windows_s"]) != st.windows_s:
            raise ProtocolError("checkpoint was taken with other window settings")
        st.next_offset = header["next_offset"]
        st.max_event_ns = header["max_event_ns"]
        st.wm_ns = header["wm_ns"]
        st.closed_ns = header["closed_ns"]
        st.idle_close_ns = header.get("idle_close_ns")
        st.records = header["records"]
        st.samples = header["samples"]
        for row in header["sites"]:
            sid_, country, region, series, batches, dups, samples, max_event, dropped, *rest = row
            st.site_index[sid_] = len(st.sites)
            if max_event is not None:
                st._newest.update(len(st.sites), max_event)
            st.sites.append(
                Site(
                    sid_,
                    country,
                    region,
                    series,
                    batches,
                    dups,
                    samples,
                    max_event,
                    {**dict.fromkeys(DROP_REASONS, 0), **dropped},
                    {**dict.fromkeys(EXCLUDE_REASONS, 0), **(rest[0] if rest else {})},
                )
            )
        s = frames["series"]
        n = len(s)
        st._grow(n)
        st.s_site[:n] = s["site"].to_numpy()
        # v1..v3 stored positions in the catalogue of their time, without a table: read them
        # against that catalogue, frozen in legacy_catalog.py
        table = header.get("metrics") or [[name, list(labels)] for name, labels in V3_METRICS]
        remap, relabel, gone_metric = _metric_remap(table)
        raw = s["metric"].to_numpy().astype(np.int64)
        old_metric = np.clip(raw, 0, len(remap) - 1)
        st.s_metric[:n] = np.where(remap[old_metric] >= 0, remap[old_metric], 0)
        # an index beyond the table (a damaged checkpoint) reads as a metric that is gone
        dead = gone_metric[old_metric] | (raw != old_metric)
        st.s_last[:n] = s["last"].to_numpy()
        st.s_live[:n] = s["live"].to_numpy()
        st.s_scale[:n] = s["scale"].to_numpy()
        st.carry.has[:n] = s["c_has"].to_numpy()
        st.carry.value[:n] = s["c_value"].to_numpy()
        st.carry.time[:n] = s["c_time"].to_numpy()
        st.carry.epoch[:n] = s["c_epoch"].to_numpy()
        if "step" in s.columns:
            st.s_first[:n] = s["first"].to_numpy()
            st.s_step[:n] = s["step"].to_numpy()
            st.s_count[:n] = s["count"].to_numpy()
        else:
            # A v1 checkpoint has no sample ledger: it starts at each series' last sample.
            seen = st.s_live[:n] & (st.s_last[:n] != _NO_SAMPLE)
            st.s_first[:n] = np.where(seen, st.s_last[:n], 0)
            st.s_count[:n] = seen
        if "speed" in s.columns:  # v3
            st.s_speed[:n] = s["speed"].to_numpy()
            st.s_tot_hi[:n] = s["tot_hi"].to_numpy()
            st.s_tot_lo[:n] = s["tot_lo"].to_numpy()
        free = list(header["free"])
        for i, labels in enumerate(s["labels"].to_list()):
            if labels is None:
                st.keys.append(None)
            elif dead[i]:
                # the metric left the catalogue: its series are forgotten (never relabelled)
                st.keys.append(None)
                st.s_live[i] = False
                free.append(i)
            else:
                perm = relabel.get(int(old_metric[i]))
                vals = (
                    tuple(labels)
                    if perm is None
                    else tuple(sys.intern(labels[j]) if j >= 0 else "" for j in perm)
                )
                key = (int(st.s_site[i]), int(st.s_metric[i]), vals)
                st.keys.append(key)
                st.series_key[key] = i
        st.free = free
        st.totals_published = st.totals_frame()  # what the previous owner published last
        st.cpanes = [_halves(frames[f"cpanes_{k}"]) for k in range(st.n_tiers)]
        st.gpanes = [frames[f"gpanes_{k}"] for k in range(st.n_tiers)]
        for w in st.windows_s:
            st.latest_c[w] = frames[f"latest_c_{w}"]
            st.latest_g[w] = frames[f"latest_g_{w}"]
        cb = frames["cbuf"]
        if len(cb):
            st._cbuf = [tuple(cb[c].to_numpy() for c in ("sid", "t", "v", "epoch", "bits"))]
        gb = frames["gbuf"]
        if len(gb):
            st._gbuf = [tuple(gb[c].to_numpy() for c in ("sid", "t", "v"))]
        st.periods.restore(frames, header.get("period_clock"))  # absent before periods existed
        for row in frames["agents"].iter_rows(named=True):
            flat = row.get("gaps") or []
            st.agents[row["agent"]] = Agent(
                row["site"],
                row["lo"],
                row["hi"],
                int.from_bytes(row["mask"], "little"),
                row["received"],
                [(flat[k], flat[k + 1]) for k in range(0, len(flat) - 1, 2)],
                row.get("gap_hits") or 0,
            )
        gone = [i for i in range(n) if dead[i]]
        if gone:
            st._forget_restored(gone)
        return st


def _metric_remap(
    table: list[list[Any]],
) -> tuple[npt.NDArray[np.int64], dict[int, list[int]], npt.NDArray[np.bool_]]:
    """A checkpoint's metric table against today's catalogue: old index -> new index (-1
    when gone), old index -> positions of today's label names in the old label tuple (only
    where they differ; -1 for a label the old entry did not have), and a mask of gone ones."""
    remap = np.full(max(1, len(table)), -1, np.int64)
    relabel: dict[int, list[int]] = {}
    for i, (name, old_labels) in enumerate(table):
        j = METRIC_INDEX.get(name)
        if j is None:
            continue
        remap[i] = j
        new_labels = list(METRICS[j].labels)
        if new_labels != list(old_labels):
            relabel[i] = [old_labels.index(n) if n in old_labels else -1 for n in new_labels]
    return remap, relabel, remap < 0
