"""deploy/alertmanager: amtool accepts it, routes go to the right country's team by severity,
no secrets, and a real Alertmanager applies the inhibitions the runbooks promise."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.monitoring import ALERTMANAGER_CONFIG, LocalAlertmanager, alertmanager_config, find_binary
from tests.waiting import eventually

SITE_DOWN = {"country": "JP", "severity": "critical", "site": "jp-tokyo-01", "alertname": "EdgeSiteDown"}


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("amtool")
    assert tool, "amtool missing: make setup-test installs Debian's prometheus-alertmanager"
    return subprocess.run([tool, *args], capture_output=True, text=True, check=False, timeout=60)


def test_amtool_check_config() -> None:
    p = _amtool("check-config", str(ALERTMANAGER_CONFIG))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (SITE_DOWN, "jp-pager"),
        (
            {
                "country": "JP",
                "severity": "warning",
                "site": "jp-tokyo-01",
                "alertname": "EdgeLinkUtilizationHigh",
            },
            "jp-ticket",
        ),
        (
            {
                "country": "US",
                "severity": "critical",
                "site": "us-new-york-01",
                "alertname": "EdgeCellUnavailable",
            },
            "us-pager",
        ),
        (
            {
                "country": "US",
                "severity": "warning",
                "site": "us-new-york-01",
                "alertname": "EdgeSiteCompletenessLow",
            },
            "us-ticket",
        ),
        ({"severity": "critical", "alertname": "EdgeCollectorDown", "job": "edge-ingest"}, "platform-pager"),
        ({"severity": "warning", "alertname": "EdgeAggregatorLagGrowing"}, "platform-ticket"),
        (
            {"country": "AE", "severity": "critical", "site": "ae-dubai-01", "alertname": "EdgeSiteDown"},
            "platform-pager",
        ),
    ],
)
def test_routes_by_country_and_severity(labels: dict[str, str], receiver: str) -> None:
    p = _amtool(
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--verify.receivers={receiver}",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_country_routes_group_by_site_and_hold_no_secrets() -> None:
    cfg = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for r in cfg["route"]["routes"][:2]:
        assert r["group_by"] == ["country", "site"]
    text = ALERTMANAGER_CONFIG.read_text()
    assert not re.search(r"(password|api_key|token|secret|credentials)\s*:", text, re.I)
    for rcv in cfg["receivers"]:
        for hook in rcv["webhook_configs"]:
            assert re.match(r"http://[a-z0-9.-]+\.example(:\d+)?/", hook["url"]), hook


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _post(url: str, body: Any) -> None:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


async def test_real_alertmanager_applies_the_inhibitions(tmp_path: Path) -> None:
    binary = find_binary("prometheus-alertmanager", "alertmanager")
    assert binary, "Alertmanager missing: make setup-test installs prometheus-alertmanager"
    cfg_path = alertmanager_config(tmp_path)
    cfg = yaml.safe_load(cfg_path.read_text())
    # Inhibition is applied when a group is flushed: shorten the wait, keep every rule.
    cfg["route"]["group_wait"] = "1s"
    for r in cfg["route"]["routes"]:
        r["group_wait"] = "1s"
    assert all(set(r) == {"name"} for r in cfg["receivers"])  # nothing is sent anywhere
    cfg_path.write_text(yaml.safe_dump(cfg))
    async with LocalAlertmanager(binary, cfg_path, tmp_path / "am") as am:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))

        def alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
            return {"labels": {"alertname": name, "severity": severity, **labels}, "startsAt": now}

        jp = {"country": "JP", "region": "Kansai"}
        _post(
            am.url + "/api/v2/alerts",
            [
                alert("EdgeSiteDown", "critical", site="jp-osaka-01", **jp),
                alert("EdgeLinkDown", "critical", site="jp-osaka-01", link="et-0", **jp),
                alert("EdgeCellPrbUtilizationHigh", "warning", site="jp-osaka-01", cell="c1", **jp),
                alert(
                    "EdgeLinkDown", "critical", site="jp-tokyo-01", link="et-0", country="JP", region="Kanto"
                ),
            ],
        )

        def states() -> dict[tuple[str, str], list[str]]:
            return {
                (a["labels"]["alertname"], a["labels"].get("site", "")): a["status"]["inhibitedBy"]
                for a in _get(am.url + "/api/v2/alerts")
            }

        await eventually(lambda: bool(states()[("EdgeLinkDown", "jp-osaka-01")]), within=30, step=0.2)
        st = states()
        assert st[("EdgeLinkDown", "jp-osaka-01")], st  # the silent site's link alert is muted
        assert st[("EdgeCellPrbUtilizationHigh", "jp-osaka-01")], st
        assert st[("EdgeLinkDown", "jp-tokyo-01")] == [], st  # another site's is not
        assert st[("EdgeSiteDown", "jp-osaka-01")] == [], st

        # A collector that cannot be scraped silences every site-down, in every country.
        _post(
            am.url + "/api/v2/alerts",
            [
                alert("EdgeCollectorDown", "critical", job="edge-aggregate", instance="a1:9465"),
                alert("EdgeSiteDown", "critical", site="us-chicago-01", country="US", region="us-central"),
            ],
        )
        await eventually(
            lambda: bool(
                states().get(("EdgeSiteDown", "us-chicago-01")) and states()[("EdgeSiteDown", "jp-osaka-01")]
            ),
            within=30,
            step=0.2,
        )
        st = states()
        assert st[("EdgeSiteDown", "us-chicago-01")], st
        assert st[("EdgeSiteDown", "jp-osaka-01")], st
        assert st[("EdgeCollectorDown", "")] == [], st
        assert st[("EdgeLinkDown", "jp-tokyo-01")] == [], st
