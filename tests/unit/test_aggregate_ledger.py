"""Sample-level completeness ledger: samples expected per site from each series' sampling step
against distinct samples received, checked against counts computed here in plain Python."""

from __future__ import annotations

import io
import json
import struct

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.aggregate.config import AggregateSettings
from collector.aggregate.ledger import SiteLedger
from collector.aggregate.outputs import build_frames
from collector.aggregate.state import PartitionState
from collector.errors import ProtocolError
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.aggregate_support import NS, T0, SeriesDef, make_batch

LATENESS_S = 10
PANE = 10 * NS
CFG = AggregateSettings(allowed_lateness_s=LATENESS_S, site_idle_s=30, stale_ttl_s=600)
SERIES = [
    SeriesDef("link_in_octets", {"link": "a", "media": "copper"}),
    SeriesDef("link_speed_bytes", {"link": "a", "media": "copper"}, kind=pb.GAUGE),
]


def _batches(
    site: str, times: list[list[int]], *, per_batch_s: int = 10, upto_s: int, from_s: int = 0, phase: int = 0
) -> list[bytes]:
    """One batch per `per_batch_s` seconds; series j carries the samples at `times[j]`
    (offsets in s from T0 + phase), contiguous seqs whatever the agent failed to read."""
    out = []
    for b, lo in enumerate(range(from_s, upto_s, per_batch_s)):
        counters, gauges = [], []
        for j, ts in enumerate(times):
            for s in (x for x in ts if lo <= x < lo + per_batch_s):
                t = T0 + phase + s * NS
                if SERIES[j].kind == pb.COUNTER:
                    counters.append((j, t, 1000 + 7 * s))
                else:
                    gauges.append((j, t, float(s)))
        out.append(
            make_batch(
                agent=f"agent-{site}",
                seq=from_s // per_batch_s + b + 1,
                site=site,
                series=SERIES,
                counters=counters,
                gauges=gauges,
            )
        )
    return out


def _feed(st_: PartitionState, batches: list[bytes]) -> None:
    for b in batches:
        st_.add(st_.records, b)
        st_.advance()


def _site(state: PartitionState, site: str) -> SiteLedger:
    return next(s for s in state.view().sites if s.site_id == site)


def _end(state: PartitionState) -> int:
    """The documented end point, from the state's own boundary and newest event."""
    assert state.closed_ns is not None
    assert state.max_event_ns is not None
    return min(state.closed_ns - 1, state.max_event_ns)


def _published(state: PartitionState, family: str) -> dict[str, float]:
    frame = build_frames([state.view()]).get(family, pl.DataFrame({"site": [], "value": []}))
    return dict(zip(frame["site"].to_list(), frame["value"].to_list(), strict=True))


def test_every_sample_arriving_is_complete_exactly() -> None:
    st_ = PartitionState(0, CFG)
    every = list(range(200))
    _feed(st_, _batches("s", [every, every], upto_s=200))
    s = _site(st_, "s")
    end_s = (_end(st_) - T0) // NS  # samples at 0..end_s (1 s step) should have arrived
    assert end_s >= 150
    assert s.samples_expected == s.samples_counted == 2 * (end_s + 1)
    assert _published(st_, "collector_site_samples_completeness_ratio") == {"s": 1.0}
    assert _published(st_, "collector_site_samples_expected") == {"s": 2 * (end_s + 1)}


def test_every_third_sample_lost_at_the_agent_is_counted_missing() -> None:
    st_ = PartitionState(0, CFG)
    kept = [i for i in range(300) if i % 3 != 2]
    _feed(st_, _batches("s", [kept, list(range(300))], upto_s=300))
    s = _site(st_, "s")
    end_s = (_end(st_) - T0) // NS
    assert s.samples_expected == 2 * (end_s + 1)
    assert s.samples_counted == sum(1 for i in kept if i <= end_s) + end_s + 1
    assert s.samples_counted < s.samples_expected
    ratio = _published(st_, "collector_site_samples_completeness_ratio")["s"]
    assert ratio == pytest.approx(s.samples_counted / s.samples_expected)
    assert ratio < 0.9
    # the batch-level ledger cannot see it: every seq arrived
    assert _published(st_, "collector_site_completeness_ratio") == {"s": 1.0}


def test_silent_site_keeps_expecting_while_another_site_moves_the_watermark() -> None:
    st_ = PartitionState(0, CFG)
    every = list(range(400))
    quiet = _batches("quiet", [every[:60], every[:60]], upto_s=60)
    busy = _batches("busy", [every, every], upto_s=400, phase=1000)
    for i, b in enumerate(busy):
        if i < len(quiet):
            _feed(st_, [quiet[i]])
        _feed(st_, [b])
        if i == 20:
            mid = _site(st_, "quiet")
            mid_ratio = _published(st_, "collector_site_samples_completeness_ratio")["quiet"]
    end = _site(st_, "quiet")
    end_s = (_end(st_) - T0) // NS
    assert end_s > 300
    assert end.samples_counted == mid.samples_counted == 2 * 60  # all it sent, nothing since
    assert end.samples_expected == 2 * (end_s + 1)
    assert end.samples_expected > mid.samples_expected > end.samples_counted
    ratios = _published(st_, "collector_site_samples_completeness_ratio")
    assert ratios["quiet"] < mid_ratio < 1.0
    assert ratios["busy"] == 1.0


def test_silent_series_stop_being_expected_when_they_expire() -> None:
    st_ = PartitionState(0, AggregateSettings(allowed_lateness_s=LATENESS_S, site_idle_s=30, stale_ttl_s=60))
    every = list(range(300))
    quiet = _batches("quiet", [every[:30], every[:30]], upto_s=30)
    _feed(st_, quiet[:1] + _batches("busy", [every, every], upto_s=300))
    assert _site(st_, "quiet").series == 0
    assert _site(st_, "quiet").samples_expected == 0
    assert "quiet" not in _published(st_, "collector_site_samples_completeness_ratio")


def _scenario() -> list[bytes]:
    every = list(range(300))
    lossy = [i for i in every if i % 4]
    quiet = _batches("quiet", [lossy[:50], every[:90]], upto_s=90)
    busy = _batches("busy", [every, lossy], upto_s=300, phase=3)
    out: list[bytes] = []
    for i, b in enumerate(busy):
        out += [quiet[i], b] if i < len(quiet) else [b]
    return out


def test_snapshot_restore_gives_the_same_ledger() -> None:
    records = _scenario()
    one = PartitionState(0, CFG)
    two = PartitionState(0, CFG)
    for i, r in enumerate(records):
        _feed(one, [r])
        _feed(two, [r])
        if i % 7 == 3:
            two = PartitionState.restore(two.snapshot(), CFG)
            assert two.view().sites == one.view().sites
    assert two.view().sites == one.view().sites
    assert any(s.samples_counted < s.samples_expected for s in one.view().sites)


def _as_v1(data: bytes) -> bytes:
    """A checkpoint as the previous format wrote it: no sample ledger columns, v=1."""
    (hl,) = struct.unpack_from("<I", data, 0)
    header = json.loads(data[4 : 4 + hl])
    pos, frames = 4 + hl, []
    for name in header["frames"]:
        (fl,) = struct.unpack_from("<Q", data, pos)
        f = pl.read_ipc(io.BytesIO(data[pos + 8 : pos + 8 + fl]))
        if name == "series":
            f = f.drop("first", "step", "count")
        frames.append(f)
        pos += 8 + fl
    header["v"] = 1
    out = io.BytesIO()
    h = json.dumps(header).encode()
    out.write(struct.pack("<I", len(h)) + h)
    for f in frames:
        buf = io.BytesIO()
        f.write_ipc(buf)
        out.write(struct.pack("<Q", len(buf.getvalue())) + buf.getvalue())
    return out.getvalue()


def test_v1_checkpoint_restores_and_starts_the_sample_ledger_at_each_last_sample() -> None:
    records = _scenario()
    st_ = PartitionState(0, CFG)
    _feed(st_, records[:20])
    old = PartitionState.restore(_as_v1(st_.snapshot()), CFG)
    assert [s.batches for s in old.view().sites] == [s.batches for s in st_.view().sites]
    _feed(old, records[20:])
    _feed(st_, records[20:])
    for a, b in zip(old.view().sites, st_.view().sites, strict=True):
        # counted from the restore on (samples buffered then, and all after it); what went
        # missing before the restore is not known
        assert 0 < a.samples_counted < b.samples_counted
        assert 0 < a.samples_expected - a.samples_counted < b.samples_expected - b.samples_counted


def test_unknown_checkpoint_version_is_refused() -> None:
    data = PartitionState(0, CFG).snapshot()
    (hl,) = struct.unpack_from("<I", data, 0)
    header = json.loads(data[4 : 4 + hl])
    header["v"] = 99
    h = json.dumps(header).encode()
    with pytest.raises(ProtocolError, match="v99"):
        PartitionState.restore(struct.pack("<I", len(h)) + h + data[4 + hl :], CFG)


@st.composite
def _grids(draw: st.DrawFn) -> tuple[list[tuple[int, int, list[int]]], list[int], int]:
    """Per series (first, step, kept times) on its grid; batch sizes; polls per advance."""
    out = []
    for _ in range(draw(st.integers(1, 2))):
        step = draw(st.sampled_from([NS // 2, NS, 3 * NS, 10 * NS, 15 * NS, 60 * NS]))
        first = T0 + draw(st.integers(0, 120 * NS))
        n = draw(st.integers(2, 150))
        drop = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        # the first two grid points arrive, so the step the ledger infers is the grid's
        kept = [first + k * step for k in range(n) if k < 2 or not drop[k]]
        out.append((first, step, kept))
    sizes = draw(st.lists(st.integers(1, 40), min_size=1, max_size=10))
    return out, sizes, draw(st.integers(1, 4))


@settings(max_examples=60, deadline=None)
@given(_grids())
def test_expected_is_the_grid_up_to_the_end_point_and_received_is_what_was_kept(
    case: tuple[list[tuple[int, int, list[int]]], list[int], int],
) -> None:
    grids, sizes, polls = case
    samples = sorted((t, j) for j, (_, _, kept) in enumerate(grids) for t in kept)
    st_ = PartitionState(0, AggregateSettings(allowed_lateness_s=LATENESS_S, stale_ttl_s=10**6))
    pos = seq = 0
    while pos < len(samples):
        chunk = samples[pos : pos + sizes[seq % len(sizes)]]
        pos += len(chunk)
        seq += 1
        counters = [(j, t, t // 1000) for t, j in chunk if SERIES[j].kind == pb.COUNTER]
        gauges = [(j, t, 1.0) for t, j in chunk if SERIES[j].kind == pb.GAUGE]
        st_.add(
            seq, make_batch(agent="a", seq=seq, site="s", series=SERIES, counters=counters, gauges=gauges)
        )
        if seq % polls == 0:
            st_.advance()
    st_.advance()
    # the end point, from its definition: the closed pane boundary (watermark = newest event
    # - lateness, rounded down to a pane) minus 1 ns, capped at the newest event
    newest = samples[-1][0]
    end = min(((newest - LATENESS_S * NS) // PANE) * PANE - 1, newest)
    expected = received = 0
    for first, step, kept in grids:
        if first + step > end:
            continue  # fewer than two samples processed: no step yet
        expected += (end - first) // step + 1
        received += sum(1 for t in kept if t <= end)
    (s,) = st_.view().sites
    assert (s.samples_expected, s.samples_counted) == (expected, received)
