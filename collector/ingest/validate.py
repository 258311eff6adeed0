"""Batch validation: every rule a batch must pass before it may touch Kafka.

Sits in the ingest service between parsing and producing. Pure functions of the batch,
the limits and the clock, so every rule is unit-testable. A failure raises
`RuleViolation` carrying the gRPC code name, a short rule name (its `reason`, a metric
label) and a human message naming the offending field, e.g. ``series[3].labels[0].name: invalid characters``.

Column checks run on NumPy views of the packed columns (no Python object per sample);
the series table is checked per entry, and a table identical to the one of the previous
batch of the same stream is not checked again (agents resend the same table every batch).
"""

from __future__ import annotations

import datetime
import math
import re
import zoneinfo
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from collector import wire
from collector.catalog import COUNTRIES
from collector.errors import RuleViolation
from collector.proto.telemetry.v1 import telemetry_pb2 as pb

METRIC_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*\Z")
LABEL_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*\Z")
UNIT_RE = re.compile(r"[A-Za-z0-9_/%.-]*\Z")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_ID_LENGTH = 64
MAX_UNIT_LENGTH = 32
MAX_U32 = np.uint64(2**32 - 1)
NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_bytes: int = 4 * 1024 * 1024
    max_series: int = 20_000
    max_samples: int = 200_000
    max_labels: int = 16
    max_name_length: int = 128
    max_label_value_length: int = 256
    max_future_skew_s: float = 300.0
    max_past_age_s: float = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class Checked:
    """What validation learned about an accepted batch."""

    samples: int
    series: int


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A validated series table and the per-series arrays the column checks need."""

    is_counter: npt.NDArray[np.bool_]
    is_gauge: npt.NDArray[np.bool_]
    narrow: npt.NDArray[np.bool_]  # 32-bit counters
    any_narrow: bool
    is_delta: npt.NDArray[np.bool_] | None = None

    @classmethod
    def of(cls, batch: pb.Batch) -> TableInfo:
        n = len(batch.series)
        kinds = np.fromiter((s.kind for s in batch.series), dtype=np.int8, count=n)
        narrow = np.fromiter((s.counter_bits == 32 for s in batch.series), dtype=bool, count=n)
        return cls(kinds == pb.COUNTER, kinds == pb.GAUGE, narrow, bool(narrow.any()), kinds == pb.DELTA)


# Plain ufunc reductions: the ndarray methods add a Python wrapper per call, which is most
# of the cost on the small columns of a typical batch.
_max = np.maximum.reduce
_min = np.minimum.reduce
_nonzero = np.count_nonzero


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


def _iso(ns: int) -> str:
    """A valid int64 ns time as ISO 8601 UTC (always representable: years 1677..2262)."""
    t = datetime.datetime.fromtimestamp(ns // NS, tz=datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fail(message: str, rule: str) -> RuleViolation:
    return RuleViolation(rule, message, code="INVALID_ARGUMENT")


def _check_id(value: str, field: str, rule: str) -> None:
    if not value:
        raise _fail(f"{field}: required", rule)
    if len(value) > MAX_ID_LENGTH:
        raise _fail(f"{field}: longer than {MAX_ID_LENGTH} characters", rule)
    if not ID_RE.match(value):
        raise _fail(f"{field}: invalid characters in {value[:MAX_ID_LENGTH]!r}", rule)


def check_header(batch: pb.Batch) -> None:
    """Identity and site fields."""
    if batch.seq == 0:
        raise _fail("seq: must be >= 1", "seq")
    if not batch.HasField("site"):
        raise _fail("site: required", "site")
    site = batch.site
    _check_identity(batch.agent_id, batch.boot_id, site.site_id, site.country, site.region, site.timezone)


@lru_cache(maxsize=4096)
def _check_identity(
    agent_id: str, boot_id: str, site_id: str, country: str, region: str, timezone: str
) -> None:
    # Cached: an agent sends the same identity in every batch. Failures raise, so only
    # valid identities are remembered.
    _check_id(agent_id, "agent_id", "agent_id")
    _check_id(boot_id, "boot_id", "boot_id")
    _check_id(site_id, "site.site_id", "site")
    if country not in COUNTRIES:
        raise _fail(f"site.country: {country[:8]!r} is not an ISO 3166-1 alpha-2 code", "country")
    if len(region) > MAX_ID_LENGTH or CONTROL_RE.search(region):
        raise _fail("site.region: longer than 64 characters or has control characters", "site")
    if timezone not in _timezones():
        raise _fail(f"site.timezone: {timezone[:64]!r} is not an IANA time zone", "site")


def check_series_table(batch: pb.Batch, limits: Limits) -> None:
    """Every entry of the series table, and no two entries for the same series."""
    n = len(batch.series)
    if n > limits.max_series:
        raise _fail(f"series: {n} entries, limit {limits.max_series}", "too_many_series")
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    for i, s in enumerate(batch.series):
        where = f"series[{i}]"
        if not s.metric:
            raise _fail(f"{where}.metric: required", "name")
        if len(s.metric) > limits.max_name_length:
            raise _fail(f"{where}.metric: longer than {limits.max_name_length}", "name")
        if not METRIC_RE.match(s.metric):
            raise _fail(f"{where}.metric: invalid characters in {s.metric!r}", "name")
        if len(s.unit) > MAX_UNIT_LENGTH or not UNIT_RE.match(s.unit):
            raise _fail(f"{where}.unit: invalid unit {s.unit[:MAX_UNIT_LENGTH]!r}", "unit")
        if len(s.labels) > limits.max_labels:
            raise _fail(
                f"{where}.labels: {len(s.labels)} labels, limit {limits.max_labels}", "too_many_labels"
            )
        names: set[str] = set()
        for j, lb in enumerate(s.labels):
            lw = f"{where}.labels[{j}]"
            if not lb.name or len(lb.name) > limits.max_name_length or not LABEL_NAME_RE.match(lb.name):
                raise _fail(f"{lw}.name: invalid characters or length in {lb.name[:128]!r}", "label")
            if lb.name.startswith("__"):
                raise _fail(f"{lw}.name: names starting with __ are reserved", "label")
            if lb.name in names:
                raise _fail(f"{lw}.name: duplicate label {lb.name!r}", "label")
            names.add(lb.name)
            if len(lb.value) > limits.max_label_value_length:
                raise _fail(f"{lw}.value: longer than {limits.max_label_value_length}", "label_value")
            if CONTROL_RE.search(lb.value):
                raise _fail(f"{lw}.value: control characters", "label_value")
        if s.kind == pb.COUNTER:
            if s.counter_bits not in (32, 64):
                raise _fail(f"{where}.counter_bits: {s.counter_bits}, must be 32 or 64", "counter_bits")
        elif s.kind in (pb.GAUGE, pb.DELTA):
            if s.counter_bits or s.start_time_unix_nano:
                raise _fail(
                    f"{where}: counter_bits/start_time set on a {'gauge' if s.kind == pb.GAUGE else 'delta'}",
                    "counter_bits",
                )
        else:
            raise _fail(f"{where}.kind: must be COUNTER, GAUGE or DELTA", "kind")
        if not math.isfinite(s.scale) or s.scale < 0:
            raise _fail(f"{where}.scale: must be finite and >= 0", "scale")
        key = (s.metric, tuple(sorted((lb.name, lb.value) for lb in s.labels)))
        if (first := seen.setdefault(key, i)) != i:
            raise _fail(f"{where}: same metric and labels as series[{first}]", "duplicate_series")


def check_columns(batch: pb.Batch, limits: Limits, now_ns: int, table: TableInfo) -> int:
    """Equal lengths, indexes in range and of the right kind, times, values. Returns samples."""
    counters = wire.counter_columns(batch)
    gauges = wire.gauge_columns(batch)
    for name, cols in (("counters", counters), ("gauges", gauges)):
        n = len(cols.series_index)
        if not (n == len(cols.time_unix_nano) == len(cols.value)):
            raise _fail(
                f"{name}: columns of unequal length (series_index {n}, "
                f"time_unix_nano {len(cols.time_unix_nano)}, value {len(cols.value)})",
                "columns",
            )
    periods = _period_columns(batch)
    samples = len(counters) + len(gauges) + sum(len(c) for _, c in periods)
    if samples > limits.max_samples:
        raise _fail(f"samples: {samples}, limit {limits.max_samples}", "too_many_samples")
    if samples == 0:
        return 0
    earliest = now_ns - int(limits.max_past_age_s * NS)
    latest = now_ns + int(limits.max_future_skew_s * NS)
    for name, cols, wanted in (("counters", counters, table.is_counter), ("gauges", gauges, table.is_gauge)):
        n = len(cols)
        if not n:
            continue
        idx = cols.series_index
        try:
            right_kind = wanted[idx]
        except IndexError:
            at = int(np.argmax(idx >= len(wanted)))
            raise _fail(
                f"{name}.series_index[{at}]: {int(idx[at])} out of range ({len(wanted)} series)",
                "series_index",
            ) from None
        if _nonzero(right_kind) != n:
            at = int(np.argmin(right_kind))
            raise _fail(
                f"{name}.series_index[{at}]: series[{int(idx[at])}] is not a "
                f"{'counter' if name == 'counters' else 'gauge'}",
                "kind",
            )
        ts = cols.time_unix_nano
        lo, hi = int(_min(ts)), int(_max(ts))
        if lo < earliest:
            at = int(np.argmin(ts))
            if lo < 0:
                # ns since the epoch fit int64 only until 2262: a later date (or a time in
                # another unit) computed in int64 wraps negative. Say so instead of "old".
                raise _fail(
                    f"{name}.time_unix_nano[{at}]: {lo} is before 1970; times are ns "
                    "since the Unix epoch as int64 (up to year 2262), so this is "
                    "likely an overflowed far-future time or a wrong unit",
                    "too_old",
                )
            raise _fail(
                f"{name}.time_unix_nano[{at}]: {_iso(lo)} is older than max_past_age "
                f"({limits.max_past_age_s:g}s: {(now_ns - lo) / NS:.0f}s before the "
                "collector clock)",
                "too_old",
            )
        if hi > latest:
            at = int(np.argmax(ts))
            raise _fail(
                f"{name}.time_unix_nano[{at}]: {_iso(hi)} is {(hi - now_ns) / NS:.0f}s "
                "ahead of the collector clock (max_future_skew "
                f"{limits.max_future_skew_s:g}s)",
                "clock_skew",
            )
        if name == "gauges":
            finite = np.isfinite(cols.value)
            if _nonzero(finite) != n:
                raise _fail(f"gauges.value[{int(np.argmin(finite))}]: not a finite number", "value")
        elif table.any_narrow:
            over = table.narrow[idx] & (cols.value > MAX_U32)
            if _nonzero(over):
                at = int(np.argmax(over))
                raise _fail(f"counters.value[{at}]: exceeds the declared 32-bit width", "counter_bits")
    _check_period_columns(periods, table, earliest, latest, now_ns)
    return samples


def _period_columns(batch: pb.Batch) -> list[tuple[str, wire.PeriodColumns]]:
    out = []
    for name, cols in (
        ("deltas", wire.delta_columns(batch)),
        ("period_gauges", wire.period_gauge_columns(batch)),
    ):
        if not cols.lengths_equal():
            raise _fail(
                f"{name}: columns of unequal length (series_index {len(cols)}, "
                f"start_time_unix_nano {len(cols.start_unix_nano)}, time_unix_nano "
                f"{len(cols.time_unix_nano)}, value {len(cols.value)})",
                "columns",
            )
        if len(cols):
            out.append((name, cols))
    return out


def _check_period_columns(
    periods: list[tuple[str, wire.PeriodColumns]], table: TableInfo, earliest: int, latest: int, now_ns: int
) -> None:
    """Deltas refer to DELTA series, period gauges to GAUGE series; start < end, both in the
    accepted time range; period gauge values finite."""
    for name, cols in periods:
        wanted = table.is_gauge if name == "period_gauges" else table.is_delta
        assert wanted is not None
        idx = cols.series_index
        if int(_max(idx)) >= len(wanted):
            at = int(np.argmax(idx >= len(wanted)))
            raise _fail(
                f"{name}.series_index[{at}]: {int(idx[at])} out of range ({len(wanted)} series)",
                "series_index",
            )
        right_kind = wanted[idx]
        if _nonzero(right_kind) != len(idx):
            at = int(np.argmin(right_kind))
            raise _fail(
                f"{name}.series_index[{at}]: series[{int(idx[at])}] is not a "
                f"{'gauge' if name == 'period_gauges' else 'delta'}",
                "kind",
            )
        start, end = cols.start_unix_nano, cols.time_unix_nano
        ordered = start < end
        if _nonzero(ordered) != len(idx):
            at = int(np.argmin(ordered))
            raise _fail(f"{name}[{at}]: period start is not before its end", "period")
        if int(_min(start)) < earliest:
            at = int(np.argmin(start))
            raise _fail(
                f"{name}.start_time_unix_nano[{at}]: older than max_past_age "
                f"({(now_ns - int(start[at])) / NS:.0f}s before now)",
                "too_old",
            )
        if int(_max(end)) > latest:
            at = int(np.argmax(end))
            raise _fail(
                f"{name}.time_unix_nano[{at}]: {(int(end[at]) - now_ns) / NS:.0f}s "
                "ahead of the collector clock",
                "clock_skew",
            )
        if name == "period_gauges":
            finite = np.isfinite(cols.value)
            if _nonzero(finite) != len(idx):
                raise _fail(f"period_gauges.value[{int(np.argmin(finite))}]: not a finite number", "value")


def validate(
    batch: pb.Batch, limits: Limits, now_ns: int, table: TableInfo | None = None
) -> tuple[Checked, TableInfo]:
    """Raise RuleViolation for the first broken rule; return counts and the table info.

    Pass the `TableInfo` of a previous batch whose series table is equal to this one's to
    skip re-checking the table (agents send the same table in every batch).
    """
    check_header(batch)
    if table is None:
        check_series_table(batch, limits)
        table = TableInfo.of(batch)
    samples = check_columns(batch, limits, now_ns, table)
    return Checked(samples=samples, series=len(batch.series)), table
