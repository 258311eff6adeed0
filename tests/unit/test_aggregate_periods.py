"""Period samples (DELTA counts, period gauges) through the aggregator's state and outputs."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.agent.batch import BatchBuilder, SiteInfo, counter_def, delta_def, gauge_def
from collector.aggregate.config import AggregateSettings
from collector.aggregate.outputs import build_frames
from collector.aggregate.state import PartitionState
from collector.errors import ProtocolError
from collector.ingest.validate import Limits, validate
from collector.proto.telemetry.v1 import telemetry_pb2 as pb

NS = 1_000_000_000
T0 = 1_790_000_000 * NS // (900 * NS) * (900 * NS)  # a 15-min boundary
P = 900 * NS
SITE = SiteInfo("jp-tokyo-01", "JP", "Kanto", "Asia/Tokyo")
CFG = AggregateSettings(windows_s=(10, 60, 300), allowed_lateness_s=10)
CELL = {"cell": "17", "gnb": "gnb-1"}
DL = delta_def("DRB.PdcpSduVolumeDL", CELL, unit="bytes", scale=125_000.0)
REQ = delta_def("MM.HoExeIntraReq", CELL, unit="attempts")
SUCC = delta_def("MM.HoExeIntraSucc", CELL, unit="attempts")
PRB = gauge_def("RRU.PrbTotDl", CELL, unit="ratio", scale=0.01)
HOST = counter_def("node_network_receive_bytes_total", {"host": "h1", "device": "eth0"}, unit="bytes")


class Feed:
    def __init__(self) -> None:
        self.st = PartitionState(0, CFG)
        self.seq = 0
        self.offset = 0
        self.rows: list[tuple[int, pl.DataFrame, pl.DataFrame]] = []
        self.st.on_window = lambda p, w, c, g: self.rows.append((w, c, g))

    def send(self, fill, agent: str = "a1") -> int:  # type: ignore[no-untyped-def]
        b = BatchBuilder(agent, SITE, "boot-1")
        fill(b)
        self.seq += 1
        data = b.build_bytes(self.seq, T0)
        # the same bytes pass the ingest's validation
        validate(pb.Batch.FromString(data), Limits(max_past_age_s=1e10, max_future_skew_s=1e10), T0)
        n = self.st.add(self.offset, data)
        self.offset += 1
        self.st.advance()
        return n

    def pm(self, end: int, dl: int, req: int, succ: int, prb: float, agent: str = "a1") -> int:
        def fill(b: BatchBuilder) -> None:
            b.delta(DL, end - P, end, dl)
            b.delta(REQ, end - P, end, req)
            b.delta(SUCC, end - P, end, succ)
            b.period_gauge(PRB, end - P, end, prb)

        return self.send(fill, agent)

    def live(self, t: int, v: int) -> int:
        return self.send(lambda b: b.counter(HOST, t, v), agent="a-live")

    def family(self, name: str) -> pl.DataFrame:
        return build_frames([self.st.view()]).get(name, pl.DataFrame())

    def dropped(self, reason: str) -> int:
        return self.st.sites[0].dropped[reason]


def _value(frame: pl.DataFrame, **labels: str) -> float:
    f = frame
    for k, v in labels.items():
        f = f.filter(pl.col(k) == v)
    assert len(f) == 1, f
    return float(f["value"][0])


def test_pm_period_is_published_as_its_own_window_while_live_data_is_far_ahead() -> None:
    feed = Feed()
    for i in range(0, 200):  # 2000 s of live data from the same site: watermark far ahead
        feed.live(T0 + P + 100 * NS + i * 10 * NS, i * 1000)
    # the PM file for [T0, T0+P) arrives afterwards
    assert feed.pm(T0 + P, dl=7200, req=40, succ=38, prb=42.5) == 4
    assert feed.dropped("late") == 0
    thr = feed.family("edge_cell_throughput_bytes_per_second")
    # 7200 Mbit * 125000 B/Mbit over 900 s
    assert _value(thr, cell="17", direction="dl", window="15m") == 7200 * 125_000 / 900
    ho = feed.family("edge_cell_handover_success_ratio")
    assert _value(ho, cell="17", window="15m") == 38 / 40
    att = feed.family("edge_cell_handover_attempts_per_second")
    assert _value(att, cell="17", window="15m") == 40 / 900
    prb = feed.family("edge_cell_prb_utilization_ratio")
    assert _value(prb, cell="17", direction="dl", window="15m", stat="avg") == pytest.approx(0.425)
    site = feed.family("edge_site_cell_throughput_bytes_per_second")
    assert _value(site, direction="dl", window="15m") == 7200 * 125_000 / 900
    # the audit trail has the period at its own end
    logged = [(w, c) for w, c, _ in feed.rows if w == 900 and len(c)]
    assert logged
    assert int(logged[0][1]["end"][0]) == T0 + P


def test_repeated_period_counts_once_and_older_period_keeps_the_newest_published() -> None:
    feed = Feed()
    feed.pm(T0 + 2 * P, dl=900, req=10, succ=10, prb=10.0)
    assert feed.pm(T0 + 2 * P, dl=900, req=10, succ=10, prb=10.0) == 0  # repeated file, new seq
    assert feed.dropped("duplicate") == 4
    # an older file: accepted at its own period, the newest period stays published
    assert feed.pm(T0 + P, dl=1800, req=20, succ=5, prb=90.0) == 4
    thr = feed.family("edge_cell_throughput_bytes_per_second")
    assert _value(thr, cell="17", direction="dl", window="15m") == 900 * 125_000 / 900
    # and repeated again later: still once
    assert feed.pm(T0 + P, dl=1800, req=20, succ=5, prb=90.0) == 0
    assert feed.dropped("duplicate") == 8


def test_period_older_than_the_horizon_is_dropped_as_too_old() -> None:
    feed = Feed()
    horizon = int(CFG.period_horizon_s * NS)
    feed.pm(T0 + horizon + 2 * P, dl=1, req=1, succ=1, prb=1.0)
    assert feed.pm(T0 + P, dl=5, req=5, succ=5, prb=5.0) == 0
    assert feed.dropped("too_old") == 4


def test_overlapping_period_is_dropped_as_overlap() -> None:
    feed = Feed()
    feed.pm(T0 + P, dl=900, req=1, succ=1, prb=1.0)
    n = feed.send(lambda b: b.delta(DL, T0 + P // 2, T0 + P + P // 2, 5))
    assert n == 0
    assert feed.dropped("overlap") == 1


def test_period_store_survives_a_checkpoint() -> None:
    feed = Feed()
    feed.pm(T0 + P, dl=900, req=10, succ=9, prb=50.0)
    feed.st = PartitionState.restore(feed.st.snapshot(), CFG)
    assert feed.pm(T0 + P, dl=900, req=10, succ=9, prb=50.0) == 0  # still a duplicate
    assert feed.dropped("duplicate") == 4
    thr = feed.family("edge_cell_throughput_bytes_per_second")
    assert _value(thr, cell="17", direction="dl", window="15m") == 900 * 125_000 / 900


def test_period_series_expire_when_their_next_period_is_overdue() -> None:
    feed = Feed()
    feed.pm(T0 + P, dl=900, req=10, succ=9, prb=50.0)
    # live data runs on: within period + stale TTL (1500 s) the period stays published
    for i in range(0, 140):
        feed.live(T0 + P + i * 10 * NS, i)
    assert len(feed.family("edge_cell_throughput_bytes_per_second")) == 1
    for i in range(140, 170):
        feed.live(T0 + P + i * 10 * NS, i)
    assert len(feed.family("edge_cell_throughput_bytes_per_second")) == 0


def test_a_delta_series_in_the_counter_columns_is_rejected_not_lost_silently() -> None:
    feed = Feed()
    b = BatchBuilder("a1", SITE, "boot-1")
    b.counter(DL, T0, 5)  # wrong column for its kind: the ingest refuses it; from elsewhere
    data = b.build_bytes(1, T0)
    feed.st.add(0, data)
    assert feed.dropped("rejected") == 1


def test_period_columns_are_checked_by_the_decoder() -> None:
    st = PartitionState(0, CFG)
    b = pb.Batch(agent_id="a", seq=1, site=SITE.to_pb(), boot_id="b")
    b.series.append(DL.to_pb())
    b.deltas.series_index.append(0)
    b.deltas.start_time_unix_nano.append(T0 + P)
    b.deltas.time_unix_nano.append(T0)  # end before start
    b.deltas.value.append(1)
    with pytest.raises(ProtocolError, match="period"):
        st.add(0, b.SerializeToString())
    b.deltas.start_time_unix_nano.append(T0)  # unequal lengths
    with pytest.raises(ProtocolError, match="column_lengths"):
        st.add(1, b.SerializeToString())


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 2**64 - 1)), min_size=1, max_size=20))
def test_any_delivery_order_with_repeats_publishes_the_newest_period_exactly(
    deliveries: list[tuple[int, int]],
) -> None:
    """Periods k (inside the horizon; one value per k, the first delivery wins) delivered in
    any order, repeated:
    each counted once, the newest published as value / period exactly."""
    feed = Feed()
    value_of: dict[int, int] = {}
    for k, v in deliveries:
        value_of.setdefault(k, v)
    for k, _ in deliveries:
        end = T0 + (k + 1) * P
        feed.send(lambda b, k=k, end=end: b.delta(DL, end - P, end, value_of[k]))
    newest = max(value_of)
    thr = feed.family("edge_cell_throughput_bytes_per_second")
    assert _value(thr, cell="17", window="15m") == pytest.approx(value_of[newest] * 125_000 / 900, rel=1e-15)
    assert feed.st.sites[0].samples == len(value_of)
    assert feed.dropped("duplicate") == len(deliveries) - len(value_of)
    # the dedup memory holds each period exactly once
    hist = feed.st.periods.hist[False]
    assert sorted(hist["end"].to_list()) == sorted(T0 + (k + 1) * P for k in value_of)
    assert {int(e): int(v) for e, v in zip(hist["end"], hist["value"], strict=True)} == {
        T0 + (k + 1) * P: v for k, v in value_of.items()
    }
