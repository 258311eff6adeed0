"""`collector run`'s pure parts: the per-country figures, formatting, options and work dir."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector import run
from collector.config import Settings, load_settings
from collector.errors import ConfigError
from collector.runview import (
    SPARK,
    CountryStats,
    LiveView,
    RunInfo,
    Snapshot,
    bar,
    country_stats,
    si,
    sparkline,
    summary_text,
)


def _site(c: str, s: str) -> str:
    return f'site="{s}",country="{c}",region="r"'


BODY = "\n".join(
    [
        "# HELP edge_site_link_throughput_bytes_per_second Sum of the site's link throughputs.",
        "# TYPE edge_site_link_throughput_bytes_per_second gauge",
        f'edge_site_link_throughput_bytes_per_second{{{_site("JP", "a")},direction="in",window="10s"}} 100',
        f'edge_site_link_throughput_bytes_per_second{{{_site("JP", "b")},direction="in",window="10s"}} 50',
        f'edge_site_link_throughput_bytes_per_second{{{_site("JP", "a")},direction="out",window="10s"}} 7',
        f'edge_site_link_throughput_bytes_per_second{{{_site("JP", "a")},direction="in",window="1m"}} 999',
        f'edge_site_link_throughput_bytes_per_second{{{_site("US", "c")},direction="in",window="10s"}} 3',
        f'edge_site_cell_throughput_bytes_per_second{{{_site("US", "c")},direction="dl",window="10s"}} 11',
        f'edge_cell_user_throughput_bytes_per_second{{{_site("JP", "a")},cell="1",gnb="g",direction="dl",'
        'window="1m",stat="avg"} 25000000',
        f'edge_cell_user_throughput_bytes_per_second{{{_site("JP", "a")},cell="2",gnb="g",direction="dl",'
        'window="1m",stat="avg"} 35000000',
        f'edge_cell_user_throughput_bytes_per_second{{{_site("JP", "a")},cell="2",gnb="g",direction="dl",'
        'window="1m",stat="max"} 99000000',
        f'edge_cell_coverage_ratio{{{_site("JP", "a")},cell="1",gnb="g",window="1m",stat="avg"}} 0.97',
        f'edge_cell_coverage_ratio{{{_site("JP", "a")},cell="2",gnb="g",window="1m",stat="avg"}} 0.99',
        f'edge_cell_availability_ratio{{{_site("JP", "a")},cell="1",gnb="g",window="1m",stat="avg"}} 1',
        f"collector_site_completeness_ratio{{{_site('JP', 'a')}}} 1",
        f"collector_site_completeness_ratio{{{_site('JP', 'b')}}} 0.5",
        f"collector_site_series{{{_site('JP', 'a')}}} 10",
        f"collector_site_series{{{_site('JP', 'b')}}} 4",
        f"collector_site_series{{{_site('US', 'c')}}} 0",
        f'collector_site_samples_dropped_total{{{_site("JP", "a")},reason="late"}} 5',
        f'collector_site_samples_dropped_total{{{_site("JP", "b")},reason="late"}} 2',
        f'collector_site_samples_dropped_total{{{_site("US", "c")},reason="duplicate"}} 1',
        # SS-RSRP report histograms of two JP cells (cumulative buckets, 1m = the ratio window)
        *(
            f'edge_cell_ss_rsrp_report_dbm_bucket{{{_site("JP", "a")},cell="{c}",gnb="g",window="1m",'
            f'le="{le}"}} {n}'
            for c, le, n in (
                ("1", "-100.0", 2),
                ("1", "-90.0", 6),
                ("1", "+Inf", 6),
                ("2", "-100.0", 0),
                ("2", "-90.0", 4),
                ("2", "+Inf", 4),
            )
        ),
        f'edge_site_link_throughput_bytes_per_second{{{_site("DE", "x")},direction="in",window="10s"}} 1',
        "collector_aggregate_samples_total 123",
    ]
)


def test_country_stats_sums_rates_and_averages_ratios_per_country() -> None:
    out = country_stats(BODY, ("JP", "US"), "10s", "1m")
    assert set(out) == {"JP", "US"}  # DE is not a run country
    jp, us = out["JP"], out["US"]
    assert (jp.link_in, jp.link_out) == (150.0, 7.0)  # the 1m window is not the rate window
    assert jp.user_dl_mbps == pytest.approx((25e6 + 35e6) / 2 * 8 / 1e6)  # avg stat only
    assert jp.coverage == pytest.approx(0.98)
    assert jp.availability == 1.0
    assert jp.completeness == 0.75
    assert jp.completeness_min == 0.5
    assert jp.sites == 2
    assert us.sites == 0
    assert jp.dropped == {"late": 7.0}
    assert us.dropped == {"duplicate": 1.0}
    assert us.cell_dl == 11.0
    assert us.user_dl_mbps is None
    assert us.coverage is None
    # summed by le: 2 reports <= -100, 10 <= -90: the median (rank 5) is 3/8 into (-100, -90]
    assert jp.rsrp_median_dbm == pytest.approx(-100 + 10 * 3 / 8)
    assert us.rsrp_median_dbm is None


def test_country_without_series_is_reported_empty() -> None:
    out = country_stats("", ("AE",), "10s", "1m")
    assert out["AE"] == CountryStats()


@given(st.lists(st.floats(0, 1e18, allow_nan=False), max_size=100), st.integers(1, 60))
def test_sparkline_has_one_block_per_value_and_peaks_at_the_maximum(vals: list[float], width: int) -> None:
    s = sparkline(vals, width)
    assert len(s) == min(width, len(vals))
    assert set(s) <= set(SPARK)
    tail = vals[-width:]
    if tail and max(tail) > 0:
        assert s[tail.index(max(tail))] == SPARK[-1]


@given(st.floats(0, 10, allow_nan=False), st.floats(0.1, 10, allow_nan=False))
def test_bar_grows_with_the_value_and_is_capped(v: float, full: float) -> None:
    assert len(bar(v, full, 16)) <= 16 * 1.25 + 1
    assert len(bar(v, full, 16)) <= len(bar(v + full, full, 16))


def test_si_prefixes() -> None:
    assert si(402e12, "b/s") == "402.0 Tb/s"
    assert si(217.11e6, "b/s", 2) == "217.11 Mb/s"
    assert si(3, "b/s") == "3.0 b/s"
    assert si(None, "b/s") == "-"


def test_live_view_renders_both_countries_from_a_snapshot() -> None:
    from rich.console import Console

    snap = Snapshot(
        t=0.0, agents_samples=10, kafka_samples=10, countries=country_stats(BODY, ("JP", "US"), "10s", "1m")
    )
    info = RunInfo(
        countries=("JP", "US"),
        duration_s=None,
        workdir=Path("/w"),
        links=[("aggregate /metrics", "http://127.0.0.1:1/metrics")],
        fleet="f",
    )
    console = Console(width=140, record=True, force_terminal=False)
    console.print(LiveView(info, console=console).render(snap, {"agents": 5.0}))
    text = console.export_text()
    assert "Japan (JP)" in text
    assert "United States (US)" in text
    assert "1.2 kb/s / 56.0 b/s" in text  # JP links: 150 B/s in, 7 B/s out, as bits
    assert "240.00 Mb/s (ref 217.11)" in text
    assert "98.0% (target 98%)" in text
    assert "100.00%" in text


def test_summary_says_what_the_embedded_broker_loses() -> None:
    info = RunInfo(countries=("JP",), duration_s=None, workdir=Path("/w"), links=[], fleet="f")
    assert "in memory" in summary_text(info, None, 1.0)
    info.embedded = False
    assert "in memory" not in summary_text(info, None, 1.0)


# ------------------------------------------------------------------ options and work dir


def _args(**kw: object) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    run.add_arguments(p)
    ns = p.parse_args([])
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


def test_workdir_is_created_and_marked_then_cleared_at_the_next_start(tmp_path: Path) -> None:
    w = run.prepare_workdir(tmp_path / "new" / "run")
    assert (w / run.WORKDIR_MARKER).is_file()
    (w / "agents").mkdir()
    (w / "agents" / "spool").write_text("x")
    assert run.prepare_workdir(w) == w
    assert [p.name for p in w.iterdir()] == [run.WORKDIR_MARKER]


def test_workdir_an_empty_directory_is_adopted(tmp_path: Path) -> None:
    run.prepare_workdir(tmp_path)
    assert (tmp_path / run.WORKDIR_MARKER).is_file()


def test_workdir_refuses_a_directory_it_did_not_create(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="--workdir") as e:
        run.prepare_workdir(tmp_path)
    assert "refusing" in str(e.value)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        run.prepare_workdir(f)


def test_workdir_symlink_to_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / run.WORKDIR_MARKER).write_text("")
    (tmp_path / "real" / "data").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ConfigError):
        run.prepare_workdir(tmp_path / "link")
    assert (tmp_path / "real" / "data").exists()


def test_run_options_override_the_simulator(tmp_path: Path) -> None:
    s = run.settings_for_run(
        load_settings(),
        _args(countries="jp, us,AE", seed=7, sites_per_country=2, acceleration=3.0),
        run.prepare_workdir(tmp_path / "w"),
    )
    assert s.simulate.countries == ("JP", "US", "AE")
    assert (s.simulate.seed, s.simulate.sites_per_country, s.simulate.acceleration) == (7, 2, 3.0)
    assert s.simulate.interval_s == run.RUN_INTERVAL_S
    assert s.ingest.tokens_file is not None
    assert s.ingest.tls_cert is not None


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"countries": "JP,FR"}, "simulate.countries (--countries)"),
        ({"sites_per_country": 0}, "simulate.sites_per_country (--sites-per-country)"),
        ({"countries": "JP,JP"}, "--countries"),
    ],
)
def test_bad_run_option_names_the_key_and_flag(tmp_path: Path, kw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        run.settings_for_run(load_settings(), _args(**kw), tmp_path)
    assert key in str(e.value) or "countries" in str(e.value)


def test_bootstrap_option_selects_an_existing_kafka(tmp_path: Path) -> None:
    s = run.settings_for_run(load_settings(), _args(bootstrap="127.0.0.1:1"), tmp_path)
    assert s.kafka.bootstrap_servers == "127.0.0.1:1"


def test_pm_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--pm-dir"):
        run.settings_for_run(load_settings(), _args(pm_dir=tmp_path / "nope"), tmp_path)


def test_default_ports_of_all_components_differ() -> None:
    s = Settings()
    listens = {
        "ingest.listen": s.ingest.listen,
        "ingest.metrics_listen": s.ingest.metrics_listen,
        "agent.metrics_listen": s.agent.metrics_listen,
        "aggregate.metrics_listen": s.aggregate.metrics_listen,
    }
    ports = [v.rsplit(":", 1)[1] for v in listens.values()]
    assert len(set(ports)) == len(ports), listens
