"""The output frames take a series' labels (and a metric's family) by position from a dense id
(collector/aggregate/outputs.py, `_Lookup`) instead of by a hash join: the same rows and
values as the inner joins they replaced, which live on here only as the reference."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from unittest import mock

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from collector.agent.batch import BatchBuilder, SiteInfo, counter_def, delta_def, gauge_def
from collector.aggregate import outputs
from collector.aggregate.config import AggregateSettings
from collector.aggregate.state import PartitionState, PartitionView
from tests.aggregate_support import NS, T0, catalog_batches


@dataclass(frozen=True, slots=True)
class _HashJoin:
    """The reference: what build_frames did before, an inner hash join on the key (rows in
    the left frame's order, which Polars keeps only when asked)."""

    frame: pl.DataFrame
    key: str

    @classmethod
    def of(cls, frame: pl.DataFrame, key: str) -> _HashJoin:
        return cls(frame, key)

    def join(self, left: pl.DataFrame) -> pl.DataFrame:
        return left.join(self.frame, on=self.key, maintain_order="left")


def _by_join(views: list[PartitionView]) -> dict[str, pl.DataFrame]:
    with mock.patch.multiple(
        outputs,
        _Lookup=_HashJoin,
        _RATE_OF=_HashJoin(outputs._RATE_MAP, "metric_i"),
        _GAUGE_OF=_HashJoin(outputs._GAUGE_MAP, "metric_i"),
    ):
        return outputs.build_frames(views, timestamps=True, total_timestamps=True)


def _assert_same_frames(views: list[PartitionView]) -> None:
    got = outputs.build_frames(views, timestamps=True, total_timestamps=True)
    want = _by_join(views)
    assert got.keys() == want.keys()
    for name in want:
        # Families built with group_by have no defined row order, either way.
        assert_frame_equal(got[name], want[name], check_row_order=False, check_exact=True)
    # Where a join was replaced, the rows come in the same order too.
    for v in views:
        c, g = outputs._window_frames(v, outputs._Lookup.of(v.meta, "sid"))
        rc, rg = outputs._window_frames(v, _HashJoin.of(v.meta, "sid"))  # type: ignore[arg-type]
        assert_frame_equal(c, rc, check_exact=True)
        assert_frame_equal(g, rg, check_exact=True)
        if len(c):
            want_r = c.join(outputs._RATE_MAP, on="metric_i", maintain_order="left")
            assert_frame_equal(outputs._RATE_OF.join(c), want_r, check_exact=True)
        if len(g):
            want_g = g.join(outputs._GAUGE_MAP, on="metric_i", maintain_order="left")
            assert_frame_equal(outputs._GAUGE_OF.join(g), want_g, check_exact=True)
        if v.totals is not None:
            want_t = v.totals.join(v.meta, on="sid", maintain_order="left")
            assert_frame_equal(outputs._Lookup.of(v.meta, "sid").join(v.totals), want_t, check_exact=True)


US = SiteInfo("us-nyc-01", "US", "us-east", "America/New_York")
NIC = {"device": "eth0"}
H1 = counter_def("node_network_receive_bytes_total", {"host": "h1", **NIC}, unit="bytes")
H2 = counter_def("node_network_receive_bytes_total", {"host": "h2", **NIC}, unit="bytes")  # expires
H3 = counter_def("node_network_receive_bytes_total", {"host": "h3", **NIC}, unit="bytes")  # after H2
H4 = counter_def("node_network_receive_bytes_total", {"host": "h4", **NIC}, unit="bytes")  # no window
LINK = {"link": "et-0/0/1", "media": "optical"}
OCTETS = counter_def("link_in_octets", LINK, unit="bytes")
SPEED = gauge_def("link_speed_bytes", LINK, unit="bytes_per_second")
CELL = {"cell": "17", "gnb": "gnb-1"}
PM_DL = delta_def("DRB.PdcpSduVolumeDL", CELL, unit="bytes", scale=125_000.0)
PM_PRB = gauge_def("RRU.PrbTotDl", CELL, unit="ratio", scale=0.01)
PERIOD = 900 * NS  # T0 is on a 15-minute boundary


def _churn(partition: int) -> PartitionState:
    """Host counters of which one goes silent and expires (its id freed and taken again), one
    whose samples are all still open (labels, no window), a link's octets and speed, PM
    periods (a DELTA count, a period gauge), corrected totals."""
    s = PartitionState(partition, AggregateSettings(stale_ttl_s=60, allowed_lateness_s=0))
    for i in range(40):
        b = BatchBuilder("agent-us", US, "boot-1")
        t = T0 + i * 10 * NS
        b.counter(H1, t, 1000 + i * 7_000)
        if i < 5:
            b.counter(H2, t, 10 + i * 3_000)
        if i >= 20:
            b.counter(H3, t, i * 11_000)
        b.counter(OCTETS, t, i * 5_000_000)
        b.gauge(SPEED, t, 1.25e9)
        if i == 10:
            b.delta(PM_DL, T0 - PERIOD, T0, 40)
            b.period_gauge(PM_PRB, T0 - PERIOD, T0, 55.0)
        if i == 39:  # the newest pane: not closed yet
            b.counter(H4, t, 5)
        s.add(i, b.build_bytes(i + 1, t))
        s.advance()
        if i == 30:
            s.snapshot()
            s.publish_totals()
    return s


def _catalogue(partition: int) -> PartitionState:
    """Every catalogue metric, labels with characters the text format escapes."""
    s = PartitionState(partition, AggregateSettings())
    for i, b in enumerate(catalog_batches("jp-tokyo-01", "JP", "Kanto", nasty=True, entities=2)):
        s.add(i, b)
        s.advance()
    s.snapshot()
    s.publish_totals()
    return s


@functools.cache
def _views() -> tuple[PartitionView, PartitionView]:
    return _churn(0).view(), _catalogue(1).view()


def _labelled(view: PartitionView, host: str) -> set[int]:
    return set(view.meta.filter(pl.col("host") == host)["sid"].to_list())


def test_the_states_have_what_the_comparison_needs() -> None:
    churn, cat = _views()
    assert not _labelled(churn, "h2")  # released
    assert _labelled(churn, "h3")
    # eight series lived, seven ids are live and dense: h3 took the id h2 freed
    assert churn.meta["sid"].to_list() == list(range(7))
    windowed = {s for f in (*churn.latest_counters.values(), *churn.latest_gauges.values()) for s in f["sid"]}
    assert _labelled(churn, "h4")
    assert not _labelled(churn, "h4") & windowed  # labels, no window yet
    for v in (churn, cat):
        assert all(len(v.latest_counters[w]) and len(v.latest_gauges[w]) for w in (10, 60, 300))
        assert len(_some(v.totals))
    assert len(_some(churn.newest_period_counters))
    assert len(_some(churn.newest_period_gauges))


def _some(frame: pl.DataFrame | None) -> pl.DataFrame:
    assert frame is not None
    return frame


def test_frames_by_gather_equal_the_hash_join_frames_over_several_partitions() -> None:
    churn, cat = _views()
    _assert_same_frames([churn])
    _assert_same_frames([cat])
    _assert_same_frames([churn, cat])
    _assert_same_frames([cat, churn])


@settings(max_examples=20)
@given(data=st.data(), order=st.permutations([0, 1]), both=st.booleans())
def test_window_rows_of_series_without_labels_are_dropped_as_by_the_join(
    data: st.DataObject, order: list[int], both: bool
) -> None:
    """A view whose labels lack some series that still have windows, totals or periods (the
    state drops them together; the join dropped such rows, and so does the gather)."""
    views = []
    for i in order[: 2 if both else 1]:
        v = _views()[i]
        keep = data.draw(st.lists(st.booleans(), min_size=len(v.meta), max_size=len(v.meta)))
        views.append(dataclasses.replace(v, meta=v.meta.filter(pl.Series(keep, dtype=pl.Boolean))))
    _assert_same_frames(views)


_KEYS = st.integers(0, 40)


@given(
    data=st.data(),
    right_keys=st.lists(_KEYS, unique=True, max_size=20),
    dtype=st.sampled_from([pl.UInt32, pl.Int16]),
)
def test_lookup_join_is_the_inner_join_in_left_order(
    data: st.DataObject, right_keys: list[int], dtype: pl.DataType
) -> None:
    """Left keys missing on the right, beyond its largest key, below 0, null, or repeated."""
    keys = [st.none(), _KEYS, st.integers(41, 1000)]
    if dtype == pl.Int16:
        keys.append(st.integers(-40, -1))
    left_keys = data.draw(st.lists(st.one_of(keys), max_size=40))
    right = pl.DataFrame(
        {"k": right_keys, "name": [f"n{k}" for k in right_keys], "x": [k * 0.5 for k in right_keys]},
        schema={"k": dtype, "name": pl.String, "x": pl.Float64},
    )
    left = pl.DataFrame(
        {"k": left_keys, "row": np.arange(len(left_keys))}, schema={"k": dtype, "row": pl.Int64}
    )
    got = outputs._Lookup.of(right, "k").join(left)
    assert_frame_equal(got, left.join(right, on="k", maintain_order="left"), check_exact=True)
