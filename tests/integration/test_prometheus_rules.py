"""deploy/prometheus: promtool checks the config and rules and runs the rule unit tests;
every rule is covered by a test and every alert is documented and tested both ways."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
RULES = sorted((PROM / "rules").glob("*.yml"))
TESTS = sorted((PROM / "tests").glob("*.yml"))
NAME = re.compile(r"^[a-z]+:[a-z][a-z0-9_]*:[a-z0-9_]+$")  # level:metric:operations


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool missing: make setup-test installs Debian's prometheus package"
    return subprocess.run([tool, *args], capture_output=True, text=True, check=False, timeout=120)


def _rules() -> list[dict[str, Any]]:
    return [r for f in RULES for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]]


def test_promtool_checks_the_config_and_its_rule_files() -> None:
    p = _promtool("check", "config", str(PROM / "prometheus.yml"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"{len(RULES)} rule files found" in p.stdout, p.stdout


def test_promtool_checks_the_rules() -> None:
    p = _promtool("check", "rules", *map(str, RULES))
    assert p.returncode == 0, p.stdout + p.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    assert TESTS
    p = _promtool("test", "rules", *map(str, TESTS))
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("SUCCESS") == len(TESTS), p.stdout


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests are not vacuous: raising the site-down threshold makes them fail."""
    alerts = (PROM / "rules" / "alerts.yml").read_text()
    assert "> 300)" in alerts
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / "alerts.yml").write_text(alerts.replace("> 300)", "> 30000)"))
    shutil.copy(PROM / "rules" / "recording.yml", tmp_path / "rules" / "recording.yml")
    shutil.copy(PROM / "tests" / "alerts_test.yml", tmp_path / "tests" / "alerts_test.yml")
    p = _promtool("test", "rules", str(tmp_path / "tests" / "alerts_test.yml"))
    assert p.returncode != 0
    assert "EdgeSiteDown" in p.stdout + p.stderr


def test_recording_rule_names_follow_level_metric_operations() -> None:
    bad = [r["record"] for r in _rules() if "record" in r and not NAME.match(r["record"])]
    assert bad == []


def test_every_recording_rule_has_a_unit_test() -> None:
    tested: set[str] = set()
    for f in TESTS:
        for case in yaml.safe_load(f.read_text())["tests"]:
            for t in case.get("promql_expr_test", []):
                tested |= set(re.findall(r"[a-z]+:[a-zA-Z0-9_]+:[a-z0-9_]+", t["expr"]))
    records = {r["record"] for r in _rules() if "record" in r}
    assert records - tested == set()


def test_every_alert_is_tested_firing_and_quiet() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for f in TESTS:
        for case in yaml.safe_load(f.read_text())["tests"]:
            for t in case.get("alert_rule_test", []):
                (fires if t["exp_alerts"] else quiet).add(t["alertname"])
    alerts = {r["alert"] for r in _rules() if "alert" in r}
    assert len(alerts) >= 18
    assert alerts - fires == set(), "alerts without a test where they fire"
    assert alerts - quiet == set(), "alerts without a does-not-fire case"


@pytest.mark.parametrize("rule", [r for r in _rules() if "alert" in r], ids=lambda r: r["alert"])
def test_alert_has_labels_annotations_and_a_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning"}
    ann = rule["annotations"]
    assert ann["summary"]
    assert ann["description"]
    assert "$value" in ann["summary"] + ann["description"], "the description quotes the value"
    assert "$labels.site" in ann["summary"] + ann["description"] or "site" not in rule["expr"]
    page, _, anchor = ann["runbook_url"].partition("#")
    assert page == "docs/runbooks.md"
    headings = {h.strip().lower() for h in re.findall(r"^## (.+)$", (ROOT / page).read_text(), re.M)}
    assert anchor == rule["alert"].lower()
    assert anchor in headings
    # at least a minute (6 scrapes at 10 s): one missed scrape never pages
    m = re.fullmatch(r"(\d+)m", rule["for"])
    assert m
    assert int(m.group(1)) >= 1


def test_local_config_keeps_jobs_and_rules_and_points_at_the_given_targets(tmp_path: Path) -> None:
    import json

    from collector.monitoring import prometheus_config

    cfg_path = prometheus_config(
        {"aggregate": ["127.0.0.1:1001"], "ingest": ["127.0.0.1:1002"], "agents": ["127.0.0.1:1003"]},
        tmp_path,
        alertmanager="127.0.0.1:1004",
        scrape_interval="2s",
    )
    p = _promtool("check", "config", str(cfg_path))
    assert p.returncode == 0, p.stdout + p.stderr
    cfg = yaml.safe_load(cfg_path.read_text())
    assert cfg["global"]["scrape_interval"] == "2s"
    assert [Path(r).name for r in cfg["rule_files"]] == [r.name for r in RULES]
    targets = {}
    for job in cfg["scrape_configs"]:
        (f,) = job["file_sd_configs"][0]["files"]
        targets[job["job_name"]] = json.loads(Path(f).read_text())[0]["targets"]
    assert targets == {
        "edge-aggregate": ["127.0.0.1:1001"],
        "edge-ingest": ["127.0.0.1:1002"],
        "edge-agent": ["127.0.0.1:1003"],
    }
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:1004"]
