"""Event-time windows of one partition against independently computed ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.aggregate.config import AggregateSettings
from collector.aggregate.state import PartitionState
from collector.aggregate.window_log import window_records
from collector.errors import ProtocolError
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.aggregate_support import (
    NS,
    T0,
    SeriesDef,
    make_batch,
    make_fleet,
    published,
    truth_windows,
    window_truth,
)

CFG = AggregateSettings(windows_s=(10, 60, 300), allowed_lateness_s=10)


def _run(records, cfg=CFG, polls=1, snapshot_every: int | None = None):  # type: ignore[no-untyped-def]
    st = PartitionState(0, cfg)
    rows: list[dict] = []

    def sink(p, w, cw, gw):  # type: ignore[no-untyped-def]
        rows.extend(window_records(p, w, cw, gw))

    st.on_window = sink
    for i, (_, value) in enumerate(records):
        st.add(i, value)
        if i % polls == polls - 1:
            st.advance()
        if snapshot_every and i % snapshot_every == snapshot_every - 1:
            st = PartitionState.restore(st.snapshot(), cfg)
            st.on_window = sink
    st.advance()
    return st, rows


def test_every_closed_window_equals_truth_with_dups_gaps_late_swaps_resets_and_wraps() -> None:
    fleet = make_fleet()
    st, rows = _run(fleet.records)
    assert st.closed_ns is not None
    got = published(rows)
    want = truth_windows(fleet, CFG.windows_s, CFG.pane_s, st.closed_ns)
    assert set(got) == set(want)
    assert got == want
    # the fleet really exercised what it claims to
    counters = [r for r in rows if r["kind"] == "counter"]
    assert any(r["wraps"] for r in counters if r["metric"] == "link_in_octets")  # 64-bit wrap
    assert any(r["wraps"] for r in counters if r["metric"] == "link_out_octets")  # 32-bit wraps
    assert any(r["resets"] for r in counters)
    ledger = {s.site_id: s for s in st.sites}
    for s in ledger.values():
        # the gap and the late batch leave 6 s intervals on the 10 GbE 32-bit counter: 7.5e9 bytes
        # could have passed a 2^32 counter, so they are excluded (the truth applies the same rule)
        assert s.excluded["ambiguous_gap"] > 0
        assert s.dropped["duplicate"] > 0
        assert s.dropped["late"] > 0
        assert s.dup_batches > 0
    view = st.view()
    for s in view.sites:
        assert s.expected - s.received == 1  # the gap; the late batch arrived (and was counted as late)


def test_windows_do_not_depend_on_poll_grouping_or_checkpoints() -> None:
    fleet = make_fleet(n_batches=40)
    _, one = _run(fleet.records, polls=1)
    _, many = _run(fleet.records, polls=17)
    _, restored = _run(fleet.records, polls=3, snapshot_every=5)
    a, b, c = published(one), published(many), published(restored)
    # grouping changes only how far the last close got, never a value
    common = set(a) & set(b) & set(c)
    assert len(common) > 100
    assert {k: a[k] for k in common} == {k: b[k] for k in common} == {k: c[k] for k in common}


def test_402_tbps_link_over_30_days_is_exact() -> None:
    """5.025e13 B/s wraps a 64-bit counter every ~4.2 days: seven wraps in 30 days."""
    cfg = AggregateSettings(windows_s=(300, 3600), allowed_lateness_s=0, stale_ttl_s=86400)
    st = PartitionState(0, cfg)
    series = [SeriesDef("link_in_octets", {"link": "et-402t", "media": "optical"})]
    rate = 50_250_000_000_000
    step = 60  # one sample a minute, one batch every six hours
    v = 12345
    truth_total = 0
    emitted: dict[int, int] = {}

    def sink(p, w, cw, gw):  # type: ignore[no-untyped-def]
        if w == 3600:
            for r in window_records(p, w, cw, gw):
                emitted[r["end_ns"]] = int(r["increase"])

    st.on_window = sink
    wraps = 0
    deltas: list[tuple[int, int, int]] = []
    for batch in range(30 * 4):
        counters = []
        for m in range(360):
            t = T0 + (batch * 6 * 3600 + m * step) * NS
            jitter = (batch * 360 + m) * 104729 % 10**9
            d = rate * step + jitter
            if batch or m:
                truth_total += d
                deltas.append((t, d, step * NS))
                if v + d >= 1 << 64:
                    wraps += 1
                v = (v + d) % (1 << 64)
            counters.append((0, t, v))
        st.add(batch, make_batch(agent="a", seq=batch + 1, site="jp-402", series=series, counters=counters))
        st.advance(emit_all=True)
    assert wraps >= 7
    assert len(emitted) >= 30 * 24 * 12 - 12
    expected = window_truth(deltas, 3600 * NS, 300 * NS, sorted(emitted))
    assert emitted == {end: inc for end, (inc, _, _) in expected.items()}
    # the hourly windows ending on the hour tile the month: their sum is the whole increase
    hourly = sum(inc for end, inc in emitted.items() if end % (3600 * NS) == 0)
    assert hourly > 7 << 64  # 2^64 passed seven times, still exact
    last_hour = max(e for e in emitted if e % (3600 * NS) == 0)
    assert hourly == sum(d for t, d, _ in deltas if t < last_hour)


def test_duplicate_is_dropped_and_dedup_memory_is_bounded() -> None:
    cfg = AggregateSettings(dedup_window=64)
    st = PartitionState(0, cfg)
    series = [SeriesDef("link_in_octets", {"link": "x", "media": "copper"})]

    def batch(seq: int) -> bytes:
        return make_batch(
            agent="a", seq=seq, site="s", series=series, counters=[(0, T0 + seq * NS, seq * 100)]
        )

    for seq in range(1, 200):
        assert st.add(seq, batch(seq)) == 1
    assert st.add(300, batch(150)) == 0  # within memory: duplicate
    assert st.add(301, batch(100)) == 0  # beyond memory: dropped as too old to tell
    site = st.sites[0]
    assert site.dropped["duplicate"] == 1
    assert site.dropped["dedup_expired"] == 1
    agent = st.dedup.agents["a"]
    assert agent.mask.bit_length() <= 64


def test_cardinality_cap_drops_new_series_and_counts_them() -> None:
    cfg = AggregateSettings(max_series_per_site=3)
    st = PartitionState(0, cfg)
    series = [SeriesDef("link_in_octets", {"link": f"l{i}", "media": "copper"}) for i in range(5)]
    st.add(0, make_batch(agent="a", seq=1, site="s", series=series, counters=[(i, T0, 1) for i in range(5)]))
    assert st.live_series() == 3
    assert st.sites[0].dropped["cardinality"] == 2


def test_stale_series_expire_after_ttl_of_event_time() -> None:
    cfg = AggregateSettings(stale_ttl_s=60, allowed_lateness_s=0)
    st = PartitionState(0, cfg)
    a = [SeriesDef("link_in_octets", {"link": "a", "media": "copper"})]
    b = [SeriesDef("link_in_octets", {"link": "b", "media": "copper"})]
    for i in range(30):
        t = T0 + i * 10 * NS
        series, seq = (a, i + 1) if i < 3 else (b, i + 1)
        st.add(i, make_batch(agent="x", seq=seq, site="s", series=series, counters=[(0, t, i)]))
        st.advance()
    meta = st.series_meta()
    assert meta["link"].to_list() == ["b"]
    assert all(len(f.filter(f["sid"] != meta["sid"][0])) == 0 for f in st.latest_counters.values())


def test_idle_partition_closes_its_windows() -> None:
    st = PartitionState(0, AggregateSettings(allowed_lateness_s=30))
    series = [SeriesDef("link_in_octets", {"link": "a", "media": "copper"})]
    counters = [(0, T0 + i * NS, i * 10) for i in range(20)]
    st.add(0, make_batch(agent="x", seq=1, site="s", series=series, counters=counters))
    assert st.advance() is None  # lateness holds the only windows open
    assert st.advance(idle_ns=5 * NS) is not None
    assert len(st.latest_counters[10]) == 1


@pytest.mark.parametrize("value", [b"", b"\x00\x01garbage", b"\xff" * 64])
def test_poison_records_raise_protocol_error(value: bytes) -> None:
    st = PartitionState(0, AggregateSettings())
    with pytest.raises(ProtocolError):
        st.add(0, value)
    assert st.next_offset == 1


def test_truncated_batch_and_bad_index_are_protocol_errors() -> None:
    series = [SeriesDef("link_in_octets", {"link": "a", "media": "copper"})]
    good = make_batch(
        agent="x", seq=1, site="s", series=series, counters=[(0, T0 + i * NS, i) for i in range(50)]
    )
    st = PartitionState(0, AggregateSettings())
    with pytest.raises(ProtocolError):
        st.add(0, good[: len(good) - 7])
    bad = make_batch(agent="x", seq=2, site="s", series=series, counters=[(3, T0, 1)])
    with pytest.raises(ProtocolError, match="series_index"):
        st.add(1, bad)
    assert st.add(2, good) == 50


def test_wrong_schema_header_is_rejected() -> None:
    st = PartitionState(0, AggregateSettings())
    with pytest.raises(ProtocolError, match="schema"):
        st.add(0, b"x", {"schema": b"telemetry.v2.Batch"})


def test_kind_mismatch_and_unknown_metrics_are_counted_not_aggregated() -> None:
    series = [
        SeriesDef("link_in_octets", {"link": "a", "media": "copper"}, kind=pb.GAUGE),
        SeriesDef("vendor_magic", {}, kind=pb.GAUGE),
    ]
    st = PartitionState(0, AggregateSettings())
    st.add(0, make_batch(agent="x", seq=1, site="s", series=series, gauges=[(0, T0, 1.0), (1, T0, 2.0)]))
    assert st.sites[0].dropped["rejected"] == 1
    assert st.sites[0].dropped["unknown_metric"] == 1
    assert st.live_series() == 0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 600), st.integers(0, 1000)), min_size=1, max_size=60)
)
def test_gauge_windows_match_a_direct_computation(samples: list[tuple[int, int, int]]) -> None:
    """Window avg/min/max from panes equal a direct pass over the samples in the window."""
    cfg = AggregateSettings(windows_s=(10, 60), allowed_lateness_s=1000)
    st = PartitionState(0, cfg)
    rows: list[dict] = []
    st.on_window = lambda p, w, cw, gw: rows.extend(window_records(p, w, cw, gw))
    series = [SeriesDef("node_load1", {"host": f"h{i}"}, kind=pb.GAUGE) for i in range(4)]
    gauges = [(i, T0 + s * NS, float(v)) for i, s, v in samples]
    st.add(0, make_batch(agent="x", seq=1, site="s", series=series, gauges=gauges))
    st.add(1, make_batch(agent="x", seq=2, site="s", series=series, gauges=[(0, T0 + 5000 * NS, 0.0)]))
    st.advance()
    assert rows
    for r in rows:
        host = int(r["labels"].split("host=h")[1].split(",")[0])
        end = r["end_ns"]
        vals = [
            float(v) for i, s, v in samples if i == host and end - r["window_s"] * NS <= T0 + s * NS < end
        ]
        assert (r["sum"], r["count"], r["min"], r["max"]) == (sum(vals), len(vals), min(vals), max(vals))
    # every (host, pane) with samples was published in the 10 s window
    panes = {(i, (T0 + s * NS) // (10 * NS)) for i, s, _ in samples}
    seen = {
        (int(r["labels"].split("host=h")[1].split(",")[0]), r["end_ns"] // (10 * NS) - 1)
        for r in rows
        if r["window_s"] == 10
    }
    assert panes == seen
    assert np.isfinite([r["sum"] for r in rows]).all()


def test_latest_windows_without_a_sink_equal_the_emitted_ones() -> None:
    """Production computes only the newest window (and tier aggregates by tumbling);
    the result must be the same as computing every window."""
    fleet = make_fleet(n_batches=50)
    full, _ = _run(fleet.records, polls=7)
    lean = PartitionState(0, CFG)
    for i, (_, value) in enumerate(fleet.records):
        lean.add(i, value)
        if i % 7 == 6:
            lean.advance()
    lean.advance()
    assert lean.closed_ns == full.closed_ns
    for w in CFG.windows_s:
        a = lean.latest_counters[w].sort("sid")
        b = full.latest_counters[w].sort("sid")
        assert len(a) > 0
        assert a.equals(b), w
        assert lean.latest_gauges[w].sort("sid").equals(full.latest_gauges[w].sort("sid")), w


def test_negative_event_time_is_a_protocol_error() -> None:
    series = [SeriesDef("link_in_octets", {"link": "a", "media": "copper"})]
    st = PartitionState(0, AggregateSettings())
    with pytest.raises(ProtocolError, match="time_range"):
        st.add(0, make_batch(agent="x", seq=1, site="s", series=series, counters=[(0, -NS, 1)]))


@pytest.mark.parametrize("scale", [-1.0, float("nan"), float("inf")])
def test_series_with_an_impossible_scale_is_rejected(scale: float) -> None:
    series = [
        SeriesDef("RRU.PrbTotDl", {"cell": "c", "gnb": "g"}, kind=pb.GAUGE, scale=scale),
        SeriesDef("RRU.PrbTotUl", {"cell": "c", "gnb": "g"}, kind=pb.GAUGE, scale=0.01),
    ]
    st = PartitionState(0, AggregateSettings())
    assert (
        st.add(
            0, make_batch(agent="x", seq=1, site="s", series=series, gauges=[(0, T0, 50.0), (1, T0, 50.0)])
        )
        == 1
    )
    assert st.sites[0].dropped["rejected"] == 1
    assert st.live_series() == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 1000), st.integers(0, 300)), min_size=1, max_size=60)
)
def test_newest_event_index_equals_a_scan_over_sites(steps: list[tuple[int, int, int]]) -> None:
    # each step: a site's newest event time moves to `value` (if higher), the floor is the
    # running maximum minus `idle` - exactly how the partition watermark uses it
    from collector.aggregate.watermark import NewestEventIndex

    index = NewestEventIndex()
    newest: dict[int, int] = {}
    top = floor = -(10**9)
    for site, value, idle in steps:
        if value > newest.get(site, -1):
            newest[site] = value
            index.update(site, value)
        top = max(top, value)
        floor = max(floor, top - idle)  # the floor never goes down
        scan = [v for v in newest.values() if v >= floor]
        assert index.min_at_least(floor) == (min(scan) if scan else None)
