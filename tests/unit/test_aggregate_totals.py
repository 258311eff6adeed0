"""Corrected cumulative counters (*_total): exact against the Python-integer truth across
wraps, resets and gaps, published only once committed, never smaller after a restart."""

from __future__ import annotations

from collector.aggregate.config import AggregateSettings
from collector.aggregate.outputs import build_frames
from collector.aggregate.state import PartitionState
from tests.aggregate_support import NS, TruthCounter, label_key, make_fleet

CFG = AggregateSettings(windows_s=(10, 60, 300), allowed_lateness_s=10)


def _totals(st: PartitionState) -> dict[tuple[str, str, str], int]:
    from collector.catalog import METRICS

    t = st.view().totals
    assert t is not None
    rows = t.join(st.series_meta(), on="sid")
    return {(r["site"], METRICS[r["metric_i"]].name, label_key(r)): (r["hi"] << 32) + r["lo"]
            for r in rows.iter_rows(named=True)}


def _truth(fleet, upto_ns: int) -> dict[tuple[str, str, str], int]:  # type: ignore[no-untyped-def]
    out = {}
    for key, samples in fleet.counted.items():
        if key not in fleet.bits:
            continue
        tc = TruthCounter(bits=fleet.bits[key], rate=fleet.rates[key])
        for t, v, e in samples:
            if t < upto_ns:
                tc.add(t, int(v), e)
        out[key] = sum(d for _, d, _ in tc.deltas)
    return out


def test_totals_are_exact_and_published_only_when_committed() -> None:
    fleet = make_fleet()
    st = PartitionState(0, CFG)
    for i, (_, v) in enumerate(fleet.records):
        st.add(i, v)
        st.advance()
    st.advance(idle_ns=120 * NS)  # the stream ended: its last panes close
    assert st.closed_ns is not None
    view = st.view()
    assert view.totals is not None
    assert len(view.totals) == 0  # nothing committed yet: nothing published
    st.snapshot()
    st.publish_totals()
    got = _totals(st)
    want = _truth(fleet, st.closed_ns)
    assert got == want
    assert max(want.values()) > 1 << 53  # beyond float64's exact integers: kept exact
    # on /metrics: counter type, created timestamps, timestamps of the closed boundary
    frames = build_frames([st.view()], total_timestamps=True)
    assert len(frames["edge_link_bytes_total"]) == 4  # 2 sites x in/out
    assert (frames["edge_link_bytes_total"]["timestamp_ms"] == st.closed_ns // 1_000_000).all()
    assert len(frames["edge_link_bytes_created"]) == 4


def test_a_restart_never_publishes_a_smaller_total() -> None:
    fleet = make_fleet()
    half = len(fleet.records) // 2
    st = PartitionState(0, CFG)
    for i, (_, v) in enumerate(fleet.records[:half]):
        st.add(i, v)
        st.advance()
    committed = st.snapshot()  # checkpoint A, committed
    st.publish_totals()
    shown = _totals(st)
    for i, (_, v) in enumerate(fleet.records[half:], start=half):
        st.add(i, v)
        st.advance()
    st.snapshot()  # checkpoint B written, the process dies before committing it
    assert _totals(st) == shown  # B's totals were never shown
    new_owner = PartitionState.restore(committed, CFG)
    assert _totals(new_owner) == shown  # starts from exactly what was shown: no false reset
    for i, (_, v) in enumerate(fleet.records[half:], start=half):
        new_owner.add(i, v)
        new_owner.advance()
    new_owner.snapshot()
    new_owner.publish_totals()
    st.publish_totals()
    after = _totals(new_owner)
    assert after == _totals(st)
    assert all(after[k] >= shown[k] for k in shown)
