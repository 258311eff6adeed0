"""/metrics rendering: correct text format (promtool, parser round trip), every family
documented, and the vectorised renderer agreeing with prometheus-client's own."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from collector.aggregate.config import AggregateSettings
from collector.aggregate.outputs import FAMILIES, build_frames
from collector.aggregate.service import SelfMetrics
from collector.aggregate.state import PartitionState
from collector.exposition.render import FamilyText, render, render_family
from tests.aggregate_support import catalog_batches

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ROOT = Path(__file__).resolve().parents[2]
TEXT = tuple(FamilyText(f.name, f.type, f.help, f.labels) for f in FAMILIES)


@pytest.fixture(scope="module")
def states() -> list[PartitionState]:
    out = []
    for p, (site, cc, region, nasty) in enumerate((("jp-tokyo-01", "JP", "Kanto", True),
                                                  ("us-nyc-01", "US", "us-east", False))):
        st = PartitionState(p, AggregateSettings())
        for i, b in enumerate(catalog_batches(site, cc, region, nasty=nasty, entities=2)):
            st.add(i, b)
            st.advance()
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
        assert f"\n{f.name}{{" in body, f"{f.name} has no samples"


def test_promtool_check_metrics_passes(body: str) -> None:
    res = subprocess.run([PROMTOOL, "check", "metrics"], input=body.encode(), capture_output=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()


def test_promtool_rejects_a_bits_name() -> None:
    """The check above can fail: promtool does lint units."""
    text = "# HELP x_bits b\n# TYPE x_bits gauge\nx_bits 1\n"
    res = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                         timeout=60, check=False)
    assert res.returncode != 0


def test_parser_round_trip_matches_state(body: str, states: list[PartitionState]) -> None:
    frames = build_frames([s.view() for s in states])
    parsed = {f.name: f for f in text_string_to_metric_families(body)}
    for fam in FAMILIES:
        base = fam.name[: -len("_total")] if fam.type == "counter" else fam.name
        got = parsed[base]
        assert got.type == fam.type
        frame = frames[fam.name]
        want = {tuple(r[: len(fam.labels)]): r[-1] for r in frame.iter_rows()}
        samples = {tuple(s.labels[lb] for lb in fam.labels): s.value
                   for s in got.samples if s.name == fam.name}
        assert samples.keys() == want.keys()
        for k, v in want.items():
            assert samples[k] == v or (math.isnan(v) and math.isnan(samples[k]))
    nasty = [s for s in parsed["edge_link_throughput_bytes_per_second"].samples
             if s.labels["site"] == "jp-tokyo-01"]
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
    parse = lambda t: {(s.name, tuple(sorted(s.labels.items())), s.value)  # noqa: E731
                       for f in text_string_to_metric_families(t) for s in f.samples}
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
    res = subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "scripts/gen_metrics_doc.py"),
                          "--check"], capture_output=True, timeout=60, check=False, cwd=ROOT)
    assert res.returncode == 0, res.stderr.decode()
    doc = (ROOT / "docs/metrics.md").read_text()
    for f in FAMILIES:
        assert f"`{f.name}`" in doc
