"""grafana/dashboards: generated, fresh, and structurally sound for the provisioned Grafana.

The integration test (tests/integration/test_dashboards_prometheus.py) runs every query
against a real Prometheus; this one checks the JSON itself."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASH = ROOT / "grafana" / "dashboards"
GEN = ROOT / "scripts" / "gen_dashboards.py"
FILES = sorted(DASH.glob("*.json"))
VAR = re.compile(r"\$(?:\{)?([A-Za-z_][A-Za-z0-9_]*)")
UNITS = {
    "bps",
    "Bps",
    "bytes",
    "percentunit",
    "short",
    "s",
    "dBm",
    "dB",
    "sci",
    "pps",
    "ops",
    "cps",
    "bool_yes_no",
    "watt",
}


def _dashboards() -> list[dict[str, Any]]:
    return [json.loads(f.read_text()) for f in FILES]


def _panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in d["panels"] if p["type"] != "row"]


def _provisioned_uid() -> str:
    ds = yaml.safe_load((ROOT / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    (prom,) = ds["datasources"]
    return str(prom["uid"])


def test_committed_json_is_what_the_generator_writes() -> None:
    p = subprocess.run([sys.executable, str(GEN), "--check"], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr


def test_staleness_check_fails_on_an_edited_or_missing_dashboard(tmp_path: Path) -> None:
    out = tmp_path / "dash"
    shutil.copytree(DASH, out)
    first = sorted(out.glob("*.json"))[0]
    first.write_text(first.read_text().replace('"title"', '"tittle"', 1))
    p = subprocess.run(
        [sys.executable, str(GEN), "--check", "--out", str(out)], capture_output=True, text=True, check=False
    )
    assert p.returncode == 1
    assert first.name in p.stderr
    first.unlink()
    (out / "hand-made.json").write_text("{}")
    p = subprocess.run(
        [sys.executable, str(GEN), "--check", "--out", str(out)], capture_output=True, text=True, check=False
    )
    assert p.returncode == 1
    assert "hand-made.json" in p.stderr


def test_the_dashboards_the_issue_asks_for_exist() -> None:
    titles = {d["title"] for d in _dashboards()}
    assert titles == {
        "Japan vs United States",
        "Site detail",
        "Links and optics",
        "5G cells",
        "Pipeline health",
    }


def test_uids_are_unique_and_panel_ids_unique_per_dashboard() -> None:
    uids = [d["uid"] for d in _dashboards()]
    assert len(uids) == len(set(uids))
    for d in _dashboards():
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), d["uid"]
        titles = [p["title"] for p in _panels(d)]
        assert len(titles) == len(set(titles)), d["uid"]


@pytest.mark.parametrize("d", _dashboards(), ids=lambda d: d["uid"])
def test_every_datasource_is_the_provisioned_one(d: dict[str, Any]) -> None:
    uid = _provisioned_uid()
    refs = [p["datasource"] for p in _panels(d)]
    refs += [t["datasource"] for p in _panels(d) for t in p["targets"]]
    refs += [v["datasource"] for v in d["templating"]["list"]]
    assert refs
    assert all(r == {"type": "prometheus", "uid": uid} for r in refs), refs


@pytest.mark.parametrize("d", _dashboards(), ids=lambda d: d["uid"])
def test_every_panel_has_a_query_a_unit_thresholds_and_a_description(d: dict[str, Any]) -> None:
    for p in _panels(d):
        assert p["targets"], p["title"]
        assert all(t["expr"].strip() and t["refId"] for t in p["targets"]), p["title"]
        defaults = p["fieldConfig"]["defaults"]
        assert defaults.get("unit") in UNITS, p["title"]
        assert defaults["thresholds"]["steps"], p["title"]
        assert len(p.get("description", "")) > 20, p["title"]
        assert 0 < p["gridPos"]["w"] <= 24, p["title"]


@pytest.mark.parametrize("d", _dashboards(), ids=lambda d: d["uid"])
def test_every_variable_resolves(d: dict[str, Any]) -> None:
    """Each $var in a query is a variable of the dashboard (or a Grafana built-in), each
    variable's query only uses variables defined before it, and each has "All"."""
    defined: list[str] = []
    for v in d["templating"]["list"]:
        m = re.fullmatch(r"label_values\((\w+)(\{.*\})?, *(\w+)\)", v["query"])
        assert m, v["query"]
        assert set(VAR.findall(v["query"])) <= set(defined), v["name"]
        assert v["includeAll"] is True
        assert v["allValue"] == ".*"
        defined.append(v["name"])
    for p in _panels(d):
        for t in p["targets"]:
            used = {n for n in VAR.findall(t["expr"]) if not n.startswith("__")}
            assert used <= set(defined), (p["title"], used)
            builtins = {n for n in VAR.findall(t["expr"]) if n.startswith("__")}
            assert builtins <= {"__rate_interval"}, (p["title"], builtins)


def test_traffic_is_shown_in_bits_by_converting_the_byte_series() -> None:
    for d in _dashboards():
        for p in _panels(d):
            for t in p["targets"]:
                if "bytes_per_second" in t["expr"] and p["fieldConfig"]["defaults"]["unit"] == "bps":
                    assert "* 8" in t["expr"], (p["title"], t["expr"])


def test_overview_draws_the_articles_figures_and_compares_countries() -> None:
    (d,) = [d for d in _dashboards() if d["uid"] == "edge-jp-vs-us"]
    exprs = " ".join(t["expr"] for p in _panels(d) for t in p["targets"])
    for ref in (
        "country:edge_reference_user_throughput_bytes_per_second:article",
        "country:edge_reference_cell_coverage_ratio:target",
        "local_hour",
    ):
        assert ref in exprs
    (site,) = [d for d in _dashboards() if d["uid"] == "edge-site-detail"]
    assert "global:edge_reference_link_throughput_bytes_per_second:record" in json.dumps(site)
    assert [v["name"] for v in site["templating"]["list"]] == ["country", "region", "site"]


def test_queries_only_use_recorded_or_exported_series() -> None:
    """Every rule-style name (level:metric:ops) in a query is a recording rule."""
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/recording.yml").read_text())
    records = {r["record"] for g in rules["groups"] for r in g["rules"]}
    for d in _dashboards():
        for p in _panels(d):
            for t in p["targets"]:
                for name in re.findall(r"\b[a-z]+:[a-zA-Z0-9_]+:[a-z0-9_]+\b", t["expr"]):
                    assert name in records, (p["title"], name)
