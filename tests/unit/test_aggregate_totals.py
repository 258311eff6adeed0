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
    return {
        (r["site"], METRICS[r["metric_i"]].name, label_key(r)): (r["hi"] << 32) + r["lo"]
        for r in rows.iter_rows(named=True)
    }


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


def test_a_series_back_after_a_long_silence_starts_a_new_life() -> None:
    from tests.aggregate_support import T0, SeriesDef, make_batch

    series = [SeriesDef("link_in_octets", {"link": "a", "media": "optical"})]
    cfg = AggregateSettings(stale_ttl_s=600)
    st = PartitionState(0, cfg)
    seq = 0

    def tick(t: int, v: int) -> None:
        nonlocal seq
        seq += 1
        st.add(seq, make_batch(agent="x", seq=seq, site="s", series=series, counters=[(0, t, v)]))
        st.advance()

    for k in range(30):
        tick(T0 + k * 10 * NS, k * 1000)
    back = T0 + 30 * 86_400 * NS  # 30 days later, from the same agent, no record in between
    for k in range(30):
        tick(back + k * 10 * NS, 10**9 + k * 1000)
    (site,) = st.view().sites
    assert st.renewed == 1
    # the ledger counts from the return on (not 60 samples out of 260,000 expected)
    assert site.samples_expected > 0
    assert site.samples_counted / site.samples_expected > 0.9
    st.snapshot()
    st.publish_totals()
    (row,) = st.view().totals.rows(named=True)  # type: ignore[union-attr]
    assert row["created"] == back  # a new created time: Prometheus sees a new counter
    assert (row["hi"] << 32) + row["lo"] < 30 * 1000  # only the new life's deltas
