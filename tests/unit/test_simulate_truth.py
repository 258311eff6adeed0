"""Simulator ground truth against an independent reference decoder (Python ints), the
calibration of the fleet averages, and the 402 Tb/s link over 30 simulated days."""

from __future__ import annotations

import itertools
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.simulate.fleet import Simulation
from collector.simulate.truth import SAMPLES_FILE, WINDOWS_FILE, load_truth, window_truth
from tests.simulate_support import NS, decode, increments, small, window_deltas


def _truth(sim: Simulation, tmp: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    assert sim.truth is not None
    sim.truth.write(tmp)
    return pl.read_parquet(tmp / WINDOWS_FILE), pl.read_parquet(tmp / SAMPLES_FILE)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**62),
    reset_every=st.sampled_from([0.0, 90.0, 600.0]),
    clear_every=st.sampled_from([0.0, 60.0, 600.0]),
    gap=st.sampled_from([0.0, 0.05, 0.2]),
    interval=st.sampled_from([1.0, 10.0, 60.0]),
    wrap32=st.booleans(),
    ticks=st.integers(1, 70),
)
def test_truth_equals_reference_decoding_of_the_sent_batches(
    tmp_path_factory: pytest.TempPathFactory,
    seed: int,
    reset_every: float,
    clear_every: float,
    gap: float,
    interval: float,
    wrap32: bool,
    ticks: int,
) -> None:
    s = small(
        seed=seed,
        reset_every_s=reset_every,
        clear_every_s=clear_every,
        gap_probability=gap,
        interval_s=interval,
        jitter_s=interval / 4,
        wrap32=wrap32,
        duplicate_probability=0.2,
        late_probability=0.2,
        late_delay_s=interval * 3,
        silent_after_s=interval * 40,
        truth_windows_s=(10, 60),
    )
    sim = Simulation(s, truth=True, truth_samples=True)
    batches = sim.run(ticks)
    series, dups = decode(sim.encode(b) for b in batches)
    assert dups == sum(b.kind == "duplicate" for b in batches)
    windows, samples = _truth(sim, tmp_path_factory.mktemp("truth"))

    # per sample: the true increment equals what the reference decoder derives
    got = {
        (r["site_id"], r["metric"], r["labels"]): r["increment"]
        for r in samples.filter(pl.col("kind") == "counter")
        .group_by("site_id", "metric", "labels")
        .agg(pl.col("increment").sort_by("time_unix_nano"))
        .iter_rows(named=True)
    }
    counters = {k: v for k, v in series.items() if v[0].bits}
    assert set(got) == set(counters)
    for key, smp in counters.items():
        assert got[key] == increments(smp), key

    # per window: series and site deltas
    for w in (10, 60):
        ref_series, ref_site = window_deltas(series, w)
        tw = windows.filter((pl.col("window_s") == w) & (pl.col("kind") == "counter"))
        t_series = {
            ((r["site_id"], r["metric"], r["labels"]), r["window_start_unix_nano"]): r["delta"]
            for r in tw.filter(pl.col("level") == "series").iter_rows(named=True)
        }
        t_site = {
            (r["site_id"], r["metric"], r["window_start_unix_nano"]): r["delta"]
            for r in tw.filter(pl.col("level") == "site").iter_rows(named=True)
        }
        assert t_series == ref_series
        assert t_site == ref_site
        assert all(isinstance(v, Decimal) for v in t_site.values())

    # gauges: count / min / max / avg per series window (avg to float rounding)
    gw = windows.filter(
        (pl.col("window_s") == 60) & (pl.col("level") == "series") & (pl.col("kind") == "gauge")
    )
    for r in gw.iter_rows(named=True):
        vals = [
            x.value
            for x in series[(r["site_id"], r["metric"], r["labels"])]
            if x.time_unix_nano // (60 * NS) * 60 * NS == r["window_start_unix_nano"]
        ]
        assert r["samples"] == len(vals)
        assert r["gauge_min"] == min(vals)
        assert r["gauge_max"] == max(vals)
        assert r["gauge_avg"] == pytest.approx(sum(vals) / len(vals), rel=1e-12)


def test_reset_delta_and_recomputation_from_samples(tmp_path: Path) -> None:
    sim = Simulation(small(reset_every_s=60, truth_windows_s=(60,)), truth=True, truth_samples=True)
    sim.run(120)
    windows, samples = _truth(sim, tmp_path)
    loaded = load_truth(tmp_path)
    assert loaded.samples is not None
    assert loaded.windows.equals(windows)
    assert loaded.meta["ticks"] == 120
    assert len(loaded.expected(level="site", window_s=60, metric="link_in_octets")) == 2 * 21
    series_w = windows.filter((pl.col("level") == "series") & (pl.col("kind") == "counter"))
    assert series_w["resets"].sum() > 0
    assert (series_w["reset_delta"] <= series_w["delta"]).all()
    again = window_truth(samples, 60)
    joined = series_w.join(again, on=["series_id", "window_start_unix_nano"], suffix="_again")
    assert len(joined) == len(series_w)
    assert (joined["delta"] == joined["delta_again"]).all()


@pytest.mark.parametrize(("countries", "ticks"), [(("JP", "US"), 90), (("JP", "US", "AE"), 45)])
def test_fleet_speed_averages_are_the_article_figures(
    tmp_path: Path, countries: tuple[str, ...], ticks: int
) -> None:
    """Every delivered tick's per-country mean of DRB.UEThpDl is the target (float rounding
    only), so any set of whole ticks averages to it: JP 217.11, US 279.93, AE 291.85 Mb/s."""
    sim = Simulation(
        small(
            countries=countries,
            sites_per_country=3,
            cells_per_site=6,
            gap_probability=0.05,
            silent_after_s=300,
        ),
        truth=True,
        truth_samples=True,
    )
    sim.run(ticks)
    _, samples = _truth(sim, tmp_path)
    series = pl.read_parquet(tmp_path / "series.parquet").select("series_id", "country")
    thp = samples.filter(pl.col("metric") == "DRB.UEThpDl").join(series, on="series_id")
    mbps = thp.group_by("country").agg((pl.col("gauge") * 8 / 1e6).mean().alias("m"))
    got = dict(mbps.iter_rows())
    expected = {"JP": 217.11, "US": 279.93, "AE": 291.85}
    for c in countries:
        assert got[c] == pytest.approx(expected[c], rel=1e-12)
    # per tick, too (the silent site and the gaps change which cells are averaged)
    tick = ((pl.col("time_unix_nano") - sim.start_ns) // sim.model.interval_ns).alias("tick")
    per_tick = thp.group_by("country", tick).agg((pl.col("gauge") * 8 / 1e6).mean().alias("m"))
    for c, m in per_tick.select("country", "m").iter_rows():
        assert m == pytest.approx(expected[c], rel=1e-12)
    assert sim.truth is not None
    cal = sim.truth.calibration()
    assert cal["JP"]["speed_mbps_mean"] == pytest.approx(217.11, rel=1e-12)
    assert got["US"] > got["JP"]


def test_japan_5g_coverage_is_98_percent(tmp_path: Path) -> None:
    """Coverage is a per-cell constant; the mean over Japan's cells is 0.98 exactly and the
    sample mean is within 0.2 % (gaps give cells different sample counts)."""
    sim = Simulation(
        small(sites_per_country=4, cells_per_site=9, gap_probability=0.05), truth=True, truth_samples=True
    )
    sim.run(60)
    _, samples = _truth(sim, tmp_path)
    series = pl.read_parquet(tmp_path / "series.parquet").select("series_id", "country")
    cov = samples.filter(pl.col("metric") == "CELL.CoverageRatio").join(series, on="series_id")
    per_cell = cov.group_by("country", "series_id").agg(pl.col("gauge").mean())
    means = dict(per_cell.group_by("country").agg(pl.col("gauge").mean()).iter_rows())
    assert means["JP"] == pytest.approx(0.98, abs=1e-12)
    assert means["US"] == pytest.approx(0.95, abs=1e-12)
    assert cov.filter(pl.col("country") == "JP")["gauge"].mean() == pytest.approx(0.98, abs=0.002)
    assert cov["gauge"].max() <= 1.0


def test_record_link_402_tbps_for_30_days_passes_2_53_and_2_64_exactly(tmp_path: Path) -> None:
    days = 30
    s = small(
        countries=("JP",),
        links_per_site=0,
        cells_per_site=0,
        hosts_per_site=0,
        interval_s=60,
        reset_every_s=0,
        clear_every_s=0,
        gap_probability=0,
        duplicate_probability=0,
        late_probability=0,
        silent_after_s=0,
        batch_samples=1500,
        batch_ticks=100,
        truth_windows_s=(300, 864_000),
    )
    sim = Simulation(s, truth=True)
    batches = sim.run(days * 86400 // 60)
    series, _ = decode(sim.encode(b) for b in batches)
    key = ("jp-tokyo-01", "link_in_octets", '{link="nict-sdm-402t",media="optical"}')
    smp = series[key]
    assert len(smp) == days * 1440
    values = [x.value for x in smp]
    incs = increments(smp)
    total = sum(i for i in incs if i is not None)
    assert isinstance(total, int)
    line_rate = 402e12 / 8
    span = (smp[-1].time_unix_nano - smp[0].time_unix_nano) / NS
    assert 0.2 * line_rate * span < total <= line_rate * span
    assert total > 2**64  # the uint64 counter wrapped (several times) ...
    assert sum(v2 < v1 for v1, v2 in itertools.pairwise(values)) >= 2  # ... as wraps
    assert max(values) > 2**63
    assert min(values[1:]) < 2**53 < max(values)
    # float64 cannot hold such counter values exactly: the reason deltas are integer math
    assert any(int(float(v)) != v for v in values)

    assert sim.truth is not None
    sim.truth.write(tmp_path)
    meta = load_truth(tmp_path).meta
    assert meta["record_link_max_value"] == max(values)
    assert meta["record_link_wraps"] == sum(v2 < v1 for v1, v2 in itertools.pairwise(values))
    w = pl.read_parquet(tmp_path / WINDOWS_FILE).filter(
        (pl.col("level") == "series") & (pl.col("metric") == "link_in_octets") & (pl.col("labels") == key[2])
    )
    assert w["delta"].dtype == pl.Decimal(38, 0)
    for win in (300, 864_000):
        ws = w.filter(pl.col("window_s") == win)
        assert sum(ws["delta"].to_list()) == total
    ref, ref_site = window_deltas({key: smp}, 864_000)
    ten_days = w.filter(pl.col("window_s") == 864_000)
    got = {(key, r["window_start_unix_nano"]): r["delta"] for r in ten_days.iter_rows(named=True)}
    assert got == ref
    assert max(got.values()) > 2**64  # a 10-day window of one link exceeds uint64
    # the site roll-up of that window as well, exactly
    site = pl.read_parquet(tmp_path / WINDOWS_FILE).filter(
        (pl.col("level") == "site") & (pl.col("metric") == "link_in_octets") & (pl.col("window_s") == 864_000)
    )
    assert {
        ("jp-tokyo-01", "link_in_octets", r[0]): r[1]
        for r in site.select("window_start_unix_nano", "delta").iter_rows()
    } == ref_site


def test_deliveries_say_how_late_each_late_batch_arrives(tmp_path: Path) -> None:
    s = small(late_probability=0.3, late_delay_s=30, duplicate_probability=0.0)
    sim = Simulation(s, truth=True)
    sim.run(100)
    assert sim.truth is not None
    d = sim.truth.deliveries()
    late = d.filter(pl.col("kind") == "late")
    assert len(late) > 3
    bound = (30 + 2 * s.batch_ticks * s.interval_s) * NS
    # at least late_delay_s behind, unless newer batches were late too or the run ended first
    assert (late["behind_ns"] >= 30 * NS).mean() > 0.5
    assert (late["behind_ns"] <= bound).all()
    normal = d.filter(pl.col("kind") == "normal")
    # in-order batches are behind only by their own span (several chunks of one tick range)
    assert (normal["behind_ns"] <= s.batch_ticks * s.interval_s * NS).all()


def test_truth_does_not_depend_on_block_size_or_partial_merging(monkeypatch: pytest.MonkeyPatch) -> None:
    import collector.simulate.truth as truth_mod

    s = small(reset_every_s=60, gap_probability=0.05)
    one = Simulation(s, truth=True)
    one.run(96)
    monkeypatch.setattr(truth_mod, "_MAX_PARTS", 2)
    many = Simulation(s, truth=True)
    many.block_ticks = s.batch_ticks  # one batch group per block: many partial aggregates
    many.run(96)
    assert one.truth is not None
    assert many.truth is not None
    a = one.truth.windows()
    b = many.truth.windows()
    assert a.select(pl.exclude("gauge_sum", "gauge_avg")).equals(
        b.select(pl.exclude("gauge_sum", "gauge_avg"))
    )
    rel = ((a["gauge_avg"] - b["gauge_avg"]).abs() / a["gauge_avg"].abs().clip(1e-300)).max()
    assert rel is None or rel < 1e-12  # float summation order only
    assert one.truth.deliveries().equals(many.truth.deliveries())
