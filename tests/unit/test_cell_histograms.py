"""L1M distributions (`.Bin<X>`) from PM files to Prometheus histograms: bin parsing in the
agent (collector/agent/sources/pm_parser.py), the aggregator's per-period histogram rows
(collector/aggregate/outputs.py) and their cumulative rendering
(collector/exposition/histogram.py)."""

from __future__ import annotations

import datetime as dt
import math
import shutil
import subprocess

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from collector.agent.batch import BatchBuilder, SiteInfo, delta_def
from collector.agent.sources.pm_parser import MEASUREMENTS, parse_pm_bytes
from collector.aggregate.config import AggregateSettings
from collector.aggregate.outputs import FAMILIES, build_frames
from collector.aggregate.state import PartitionState
from collector.exposition.histogram import cumulative, histogram_quantile, render_histogram
from collector.exposition.render import FamilyText, render
from collector.simulate.pm_writer import render_meas_collec

NS = 1_000_000_000
T0 = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)
RSRP, RSRQ, SINR = (MEASUREMENTS[f"L1M.SS-{m}.Bin"] for m in ("RSRP", "RSRQ", "SINR"))
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def test_bin_bounds_are_the_ts_38133_reporting_ranges() -> None:
    # SS-RSRP 10.1.6.1: RSRP_0 < -156 dBm, RSRP_1 [-156, -155), ..., RSRP_126 >= -31 dBm
    assert [RSRP.bin_le(x) for x in (0, 1, 125, 126)] == ["-156", "-155", "-31", "+Inf"]
    # SS-RSRQ 10.1.11.1: < -43 dB, 0.5 dB steps, RSRQ_127 >= 20 dB
    assert [RSRQ.bin_le(x) for x in (0, 1, 126, 127)] == ["-43", "-42.5", "20", "+Inf"]
    # SS-SINR 10.1.16.1: < -23 dB, 0.5 dB steps, SINR_127 >= 40 dB
    assert [SINR.bin_le(x) for x in (0, 1, 46, 126, 127)] == ["-23", "-22.5", "0", "40", "+Inf"]
    assert RSRP.bin_le(127) is None
    assert RSRQ.bin_le(-1) is None


spec_st = st.sampled_from([RSRP, RSRQ, SINR])


@settings(max_examples=60, deadline=None)
@given(
    spec_st,
    st.dictionaries(st.integers(0, 140), st.integers(0, 2**40), min_size=1, max_size=12),
    st.booleans(),
    st.integers(0, 3),
)
def test_bins_parse_to_one_count_per_bound_with_per_ssb_sub_counters_summed(
    spec, bins: dict[int, int], positional: bool, ssbs: int
) -> None:  # type: ignore[no-untyped-def]
    base = spec.metric
    cell: dict[str, float | int | str] = {}
    for x, n in bins.items():
        if ssbs:  # the bin split per SSB beam: the cell's bin is their sum
            for b in range(ssbs):
                cell[f"{base}{x}.{b}"] = n // ssbs + (n % ssbs if b == 0 else 0)
        else:
            cell[f"{base}{x}"] = n
    pm = parse_pm_bytes(
        render_meas_collec(begin=T0, duration_s=900, element="g", cells={"7": cell}, positional=positional),
        "f.xml",
    )
    n_bins = spec.bins[2]
    good = {x: n for x, n in bins.items() if x < n_bins}
    got = {v.le: v.value for v in pm.values}
    assert got == {spec.bin_le(x): n for x, n in good.items()}
    assert all(v.spec is spec and v.labels() == {"cell": "7", "gnb": "g", "le": v.le} for v in pm.values)
    bad = len(bins) - len(good)
    assert pm.rejected.get("unknown_bin", 0) == bad * max(ssbs, 1)


def test_a_bin_total_wins_over_its_ssb_sub_counters_and_bad_values_are_rejected() -> None:
    cell: dict[str, float | int | str] = {
        "L1M.SS-RSRP.Bin60": 10,
        "L1M.SS-RSRP.Bin60.0": 4,
        "L1M.SS-RSRP.Bin60.1": 5,
        "L1M.SS-RSRP.Bin61": -2,
        "L1M.SS-RSRP.Bin62": 1.5,
        "L1M.SS-RSRP.Bin": 3,
    }
    pm = parse_pm_bytes(render_meas_collec(begin=T0, duration_s=900, element="g", cells={"7": cell}), "f.xml")
    assert [(v.le, v.value) for v in pm.values] == [("-96", 10)]
    assert dict(pm.rejected) == {"negative": 1, "fractional_counter": 1}
    assert dict(pm.unknown) == {"L1M.SS-RSRP.Bin": 1}


# --- cumulation and rendering -------------------------------------------------------------
bucket_rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from([-120.0, -100.5, -90.0, 0.0, 3.5, math.inf]),
        st.integers(0, 10**6),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=100, deadline=None)
@given(bucket_rows)
def test_cumulative_buckets_are_monotone_end_at_the_total_and_share_bounds(
    rows: list[tuple[str, float, int]],
) -> None:
    frame = pl.DataFrame(
        {"cell": [r[0] for r in rows], "le": [r[1] for r in rows], "value": [float(r[2]) for r in rows]}
    )
    cum = cumulative(frame, ["cell"])
    bounds = sorted({r[1] for r in rows} | {math.inf})
    for cell in {r[0] for r in rows}:
        g = cum.filter(pl.col("cell") == cell).sort("le")
        assert g["le"].to_list() == bounds  # every histogram: the family's bounds
        for le, v in zip(g["le"].to_list(), g["value"].to_list(), strict=True):
            assert v == sum(n for c, b, n in rows if c == cell and b <= le)  # exact integers
        vals = g["value"].to_list()
        assert vals == sorted(vals)
        assert vals[-1] == sum(n for c, _, n in rows if c == cell)


@settings(max_examples=60, deadline=None)
@given(bucket_rows)
def test_rendered_histogram_parses_back_to_the_same_buckets_and_count(
    rows: list[tuple[str, float, int]],
) -> None:
    fam = FamilyText("edge_x_report_db", "histogram", "h", ("cell", "window"))
    frame = pl.DataFrame(
        {
            "cell": [r[0] for r in rows],
            "window": ["15m"] * len(rows),
            "le": [r[1] for r in rows],
            "value": [float(r[2]) for r in rows],
        }
    )
    text = render_histogram(fam, frame)
    [parsed] = list(text_string_to_metric_families(text))
    assert parsed.type == "histogram"
    for cell in {r[0] for r in rows}:
        buckets = [
            (float(s.labels["le"]), s.value)
            for s in parsed.samples
            if s.name.endswith("_bucket") and s.labels["cell"] == cell
        ]
        assert [b for b, _ in buckets] == sorted({r[1] for r in rows} | {math.inf})
        total = sum(n for c, _, n in rows if c == cell)
        assert buckets[-1][1] == total
        [count] = [s.value for s in parsed.samples if s.name.endswith("_count") and s.labels["cell"] == cell]
        assert count == total
    assert not any(s.name.endswith("_sum") for s in parsed.samples)  # none made up


def test_bad_bounds_and_counts_are_left_out_and_a_sum_column_is_rendered() -> None:
    fam = FamilyText("x_db", "histogram", "h", ("cell",))
    frame = pl.DataFrame(
        {
            "cell": ["1", "1", "1", "1"],
            "le": [1.0, None, math.nan, 2.0],
            "value": [2.0, 5.0, 5.0, -1.0],
            "sum": [7.5] * 4,
        }
    )
    text = render_histogram(fam, frame)
    assert 'x_db_bucket{cell="1",le="1.0"} 2.0' in text
    assert 'x_db_bucket{cell="1",le="+Inf"} 2.0' in text
    assert 'le="2.0"' not in text  # its count was negative
    assert 'x_db_count{cell="1"} 2.0' in text
    assert 'x_db_sum{cell="1"} 7.5' in text


# --- the aggregator: a cell's newest period as one histogram ------------------------------
SITE = SiteInfo("jp-tokyo-01", "JP", "Kanto", "Asia/Tokyo")
P = 900 * NS
E0 = 1_790_000_000 * NS // P * P


def _state(periods: list[tuple[int, dict[int, int]]], cells: tuple[str, ...] = ("17",)) -> PartitionState:
    st_ = PartitionState(0, AggregateSettings())
    for seq, (end, bins) in enumerate(periods, start=1):
        b = BatchBuilder("a1", SITE, "boot")
        for cell in cells:
            for x, n in bins.items():
                d = delta_def(
                    "L1M.SS-RSRP.Bin", {"cell": cell, "gnb": "g1", "le": RSRP.bin_le(x)}, unit="reports"
                )
                b.delta(d, end - P, end, n)
        st_.add(seq, b.build_bytes(seq, end))
        st_.advance()
    return st_


def _buckets(st_: PartitionState) -> dict[tuple[str, float], float]:
    fams = tuple(FamilyText(f.name, f.type, f.help, f.labels) for f in FAMILIES)
    text = render(fams, build_frames([st_.view()])).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "edge_cell_ss_rsrp_report_dbm":
            assert fam.type == "histogram"
            for s in fam.samples:
                assert s.labels["window"] == "15m"
                if s.name.endswith("_bucket"):
                    out[(s.labels["cell"], float(s.labels["le"]))] = s.value
    return out


def test_the_newest_period_of_a_cell_is_its_histogram_and_missing_bins_count_zero() -> None:
    st_ = _state([(E0, {60: 5, 61: 7, 126: 1}), (E0 + P, {61: 2, 70: 3})])
    got = _buckets(st_)
    # the newest period only: bin 60 (-96 dBm) and the top bin did not report in it, so
    # they add nothing (the +Inf bucket is the newest period's total, 5, not 18)
    assert got == {("17", -95.0): 2.0, ("17", -86.0): 5.0, ("17", math.inf): 5.0}
    # a repeated period changes nothing; an older one neither
    st2 = _state(
        [(E0, {60: 5, 61: 7, 126: 1}), (E0 + P, {61: 2, 70: 3}), (E0 + P, {61: 2, 70: 3}), (E0, {60: 5})]
    )
    assert _buckets(st2) == got


def test_histogram_quantile_of_a_rendered_cell_histogram_is_inside_the_right_bin() -> None:
    """What Prometheus computes from these buckets (linear in the bucket) lands in the 3GPP
    range the reports were in."""
    bins = {40: 10, 41: 80, 42: 10}  # -116, -115, -114 dBm upper bounds
    got = _buckets(_state([(E0, bins)]))
    b = sorted((le, v) for (_, le), v in got.items())
    rank = 0.5 * b[-1][1]
    i = next(i for i, (_, v) in enumerate(b) if v >= rank)
    lo, clo = b[i - 1] if i else (b[i][0], 0.0)
    q = lo + (b[i][0] - lo) * (rank - clo) / (b[i][1] - clo)
    assert -116.0 <= q <= -115.0  # bin 41 = [-116, -115) dBm
    assert histogram_quantile(0.5, b) == q  # the view's own copy of the formula
    assert histogram_quantile(0.5, [(math.inf, 0.0)]) is None
    assert histogram_quantile(0.99, b) == pytest.approx(-114.1)
    # a rank in the +Inf bucket: the highest finite bound, as Prometheus answers
    assert histogram_quantile(0.9, [(-116.0, 10.0), (math.inf, 20.0)]) == -116.0


def test_promtool_accepts_the_histogram_families() -> None:
    st_ = _state([(E0, {0: 1, 60: 5, 126: 2})], cells=("17", "18"))
    fams = tuple(FamilyText(f.name, f.type, f.help, f.labels) for f in FAMILIES)
    text = render(fams, build_frames([st_.view()]))
    assert b"edge_cell_ss_rsrp_report_dbm_bucket{" in text
    res = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, timeout=60, check=False
    )
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()


def test_a_bin_without_a_numeric_bound_is_rejected_and_counted() -> None:
    st_ = PartitionState(0, AggregateSettings())
    b = BatchBuilder("a1", SITE, "boot")
    for le, n in (("-95", 4), ("abc", 7), ("nan", 1), ("+Inf", 5)):
        d = delta_def("L1M.SS-RSRP.Bin", {"cell": "17", "gnb": "g1", "le": le}, unit="reports")
        b.delta(d, E0 - P, E0, n)
    st_.add(1, b.build_bytes(1, E0))
    st_.advance()
    assert st_.sites[0].dropped["rejected"] == 2
    assert _buckets(st_) == {("17", -95.0): 4.0, ("17", math.inf): 9.0}
