"""/metrics rendering: correct text format (promtool, parser round trip), every family
documented, and the vectorised renderer agreeing with prometheus-client's own."""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from collector.aggregate.config import AggregateSettings
from collector.aggregate.outputs import FAMILIES, build_frames
from collector.aggregate.self_metrics import SelfMetrics
from collector.aggregate.state import PartitionState
from collector.exposition.histogram import cumulative
from collector.exposition.render import FamilyText, render, render_family
from tests.aggregate_support import catalog_batches

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ROOT = Path(__file__).resolve().parents[2]
TEXT = tuple(FamilyText(f.name, f.type, f.help, f.labels) for f in FAMILIES)


@pytest.fixture(scope="module")
def states() -> list[PartitionState]:
    out = []
    for p, (site, cc, region, nasty) in enumerate(
        (("jp-tokyo-01", "JP", "Kanto", True), ("us-nyc-01", "US", "us-east", False))
    ):
        st = PartitionState(p, AggregateSettings())
        for i, b in enumerate(catalog_batches(site, cc, region, nasty=nasty, entities=2)):
            st.add(i, b)
            st.advance()
        st.snapshot()  # a committed checkpoint publishes the corrected totals
        st.publish_totals()
        out.append(st)
    return out


@pytest.fixture(scope="module")
def body(states: list[PartitionState]) -> str:
    reg = CollectorRegistry()
    SelfMetrics(reg).samples.inc(5)
    agg = render(TEXT, build_frames([s.view() for s in states]))
    return (generate_latest(reg) + agg).decode()


def test_every_family_has_rows_from_a_full_catalogue(body: str) -> None:
    for f in FAMILIES:
        name = f.name + "_bucket" if f.type == "histogram" else f.name
        assert f"\n{name}{{" in body, f"{f.name} has no samples"


def test_promtool_check_metrics_passes(body: str) -> None:
    res = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=body.encode(), capture_output=True, timeout=60, check=False
    )
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()


def test_promtool_rejects_a_bits_name() -> None:
    """The check above can fail: promtool does lint units."""
    text = "# HELP x_bits b\n# TYPE x_bits gauge\nx_bits 1\n"
    res = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60, check=False
    )
    assert res.returncode != 0


def test_parser_round_trip_matches_state(body: str, states: list[PartitionState]) -> None:
    frames = build_frames([s.view() for s in states])
    parsed = {f.name: f for f in text_string_to_metric_families(body)}
    for fam in FAMILIES:
        base = fam.name[: -len("_total")] if fam.type == "counter" else fam.name
        got = parsed[base]
        assert got.type == fam.type
        frame = frames[fam.name]
        if fam.type == "histogram":  # per-bucket counts in the frame, cumulative on the wire
            cum = cumulative(frame, fam.labels)
            want_b = {
                (*r[: len(fam.labels)], r[len(fam.labels)]): r[-1]
                for r in cum.select(*fam.labels, "le", "value").iter_rows()
            }
            got_b = {
                (*(s.labels[lb] for lb in fam.labels), float(s.labels["le"])): s.value
                for s in got.samples
                if s.name == fam.name + "_bucket"
            }
            assert got_b == want_b
            counts = {
                tuple(s.labels[lb] for lb in fam.labels): s.value
                for s in got.samples
                if s.name == fam.name + "_count"
            }
            assert counts == {k[:-1]: v for k, v in want_b.items() if k[-1] == math.inf}
            assert counts
            assert all(v > 0 for v in counts.values())
            continue
        want = {tuple(r[: len(fam.labels)]): r[-1] for r in frame.iter_rows()}
        samples = {
            tuple(s.labels[lb] for lb in fam.labels): s.value for s in got.samples if s.name == fam.name
        }
        assert samples.keys() == want.keys()
        for k, v in want.items():
            assert samples[k] == v or (math.isnan(v) and math.isnan(samples[k]))
    nasty = [
        s
        for s in parsed["edge_link_throughput_bytes_per_second"].samples
        if s.labels["site"] == "jp-tokyo-01"
    ]
    assert any(s.labels["link"] == 'link "0" \\ back\nslash ü' for s in nasty)


def test_help_and_type_once_per_family(body: str) -> None:
    helps = [line.split()[2] for line in body.splitlines() if line.startswith("# HELP")]
    types = [line.split()[2] for line in body.splitlines() if line.startswith("# TYPE")]
    assert len(helps) == len(set(helps))
    assert len(types) == len(set(types))


def test_vectorised_rendering_equals_prometheus_client(states: list[PartitionState]) -> None:
    frames = build_frames([s.view() for s in states])
    fam = next(f for f in TEXT if f.name == "edge_link_throughput_bytes_per_second")
    frame = frames[fam.name]
    reg = CollectorRegistry()

    class _C:
        def collect(self):  # type: ignore[no-untyped-def]
            g = GaugeMetricFamily(fam.name, fam.help, labels=list(fam.labels))
            for row in frame.iter_rows():
                g.add_metric(list(row[:-1]), row[-1])
            yield g

    reg.register(_C())  # type: ignore[arg-type]
    ours = render_family(fam, frame)
    theirs = generate_latest(reg).decode()
    parse = lambda t: {  # noqa: E731
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in text_string_to_metric_families(t)
        for s in f.samples
    }
    assert parse(ours) == parse(theirs)


def test_special_values_render_in_exposition_spelling() -> None:
    fam = FamilyText("x_ratio", "gauge", "h", ("a",))
    frame = pl.DataFrame({"a": ["p", "n", "q", "z"], "value": [math.inf, -math.inf, math.nan, 1e-300]})
    text = render_family(fam, frame)
    assert 'x_ratio{a="p"} +Inf' in text
    assert 'x_ratio{a="n"} -Inf' in text
    assert 'x_ratio{a="q"} NaN' in text
    values = [s.value for f in text_string_to_metric_families(text) for s in f.samples]
    assert values[0] == math.inf
    assert values[3] == 1e-300


def test_metrics_doc_is_fresh() -> None:
    res = subprocess.run(
        [str(ROOT / ".venv/bin/python"), str(ROOT / "scripts/gen_metrics_doc.py"), "--check"],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr.decode()
    doc = (ROOT / "docs/metrics.md").read_text()
    for f in FAMILIES:
        assert f"`{f.name}`" in doc


def test_series_scale_turns_raw_values_into_published_units() -> None:
    """The cell PM source sends PRB use in percent (scale 0.01), UE throughput in kbit/s
    (scale 125) and PDCP volume in Mbit (scale 125000): /metrics must show ratios and bytes/s."""
    from collector.proto.telemetry.v1 import telemetry_pb2 as pb
    from tests.aggregate_support import NS, T0, SeriesDef, make_batch

    cell = {"cell": "c1", "gnb": "g1"}
    series = [
        SeriesDef("RRU.PrbTotDl", cell, kind=pb.GAUGE, unit="ratio", scale=0.01),
        SeriesDef("DRB.UEThpDl", cell, kind=pb.GAUGE, unit="bytes_per_second", scale=125.0),
        SeriesDef("DRB.PdcpSduVolumeDL", cell, unit="bytes", scale=125_000.0),
    ]
    st = PartitionState(0, AggregateSettings(allowed_lateness_s=0))
    for b in range(4):
        ts = [T0 + (b * 10 + k) * NS for k in range(10)]
        st.add(
            b,
            make_batch(
                agent="a",
                seq=b + 1,
                site="s",
                series=series,
                gauges=[(0, t, 73.0) for t in ts] + [(1, t, 8000.0) for t in ts],
                counters=[(2, t, 2 * (t - T0) // NS) for t in ts],
            ),
        )  # 2 Mbit/s
        st.advance()
    frames = build_frames([st.view()])

    def value(fam: str, **labels: str) -> float:
        f = frames[fam].filter(**labels)  # type: ignore[arg-type]
        assert len(f) == 1, f
        return float(f["value"][0])

    for stat in ("avg", "min", "max"):
        assert value("edge_cell_prb_utilization_ratio", window="10s", stat=stat) == pytest.approx(0.73)
        assert value("edge_cell_user_throughput_bytes_per_second", window="10s", stat=stat) == 1_000_000
    assert value("edge_cell_throughput_bytes_per_second", window="10s") == 250_000


async def test_metrics_body_is_cached_per_generation_and_ledger_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scrape re-renders only when a window closed, totals were committed or the ledger
    refresh period passed; self-metrics and body come from the same moment."""
    from collector.aggregate import service
    from collector.aggregate.service import Aggregator
    from collector.config import load_settings

    agg = Aggregator(
        load_settings(aggregate={"metrics_listen": "", "ledger_refresh_s": 3600}),
        bootstrap="127.0.0.1:1",
        registry=CollectorRegistry(),
    )
    st = PartitionState(0, AggregateSettings())
    batches = catalog_batches("jp-tokyo-01", "JP", "Kanto", n_batches=4)
    for i, b in enumerate(batches):
        st.add(i, b)
        st.advance()
    agg.states[0] = st
    dup = 'collector_site_batches_duplicate_total{site="jp-tokyo-01",country="JP",region="Kanto"}'
    first = await agg.render_metrics()
    assert f"{dup} 0.0" in first.decode()
    assert agg.renders == 1
    # a record that closes nothing: the cached body (same bytes, self-metrics included)
    agg.metrics.samples.inc(7)
    st.add(len(batches), batches[1])
    st.advance()
    assert await agg.render_metrics() is first
    assert agg.renders == 1
    # committed totals are a new generation
    st.snapshot()
    st.publish_totals()
    second = (await agg.render_metrics()).decode()
    assert agg.renders == 2
    assert f"{dup} 1.0" in second
    assert "collector_aggregate_samples_total 7.0" in second  # taken with the same view
    assert "\nedge_link_bytes_total{" in second
    # the ledger period passing refreshes the ledger without any close
    clock = [time.monotonic()]
    monkeypatch.setattr(service.time, "monotonic", lambda: clock[0])
    agg._render_cache = None
    assert f"{dup} 1.0" in (await agg.render_metrics()).decode()
    st.add(len(batches) + 1, batches[2])
    assert f"{dup} 1.0" in (await agg.render_metrics()).decode()
    clock[0] += 3600
    assert f"{dup} 2.0" in (await agg.render_metrics()).decode()


def test_site_last_event_time_is_the_newest_sample_and_survives_a_checkpoint() -> None:
    from collector import wire

    st = PartitionState(0, AggregateSettings())
    batches = catalog_batches("jp-tokyo-01", "JP", "Kanto", n_batches=4)
    newest = 0
    for i, raw in enumerate(batches):
        st.add(i, raw)
        b = wire.parse_batch(raw)
        for cols in (wire.counter_columns(b), wire.gauge_columns(b)):
            if len(cols):
                newest = max(newest, int(cols.time_unix_nano.max()))
    st.add(len(batches), batches[0])  # an old duplicate does not move it back

    def last(state: PartitionState) -> float:
        (site,) = state.view().sites
        assert site.last_event_ns is not None
        return site.last_event_ns / 1e9

    assert last(st) == newest / 1e9
    restored = PartitionState.restore(st.snapshot(), AggregateSettings())
    assert last(restored) == newest / 1e9
    text = render(TEXT, build_frames([restored.view()])).decode()
    assert (
        'collector_site_last_event_timestamp_seconds{site="jp-tokyo-01",country="JP",'
        f'region="Kanto"}} {newest / 1e9!r}'
    ) in text
