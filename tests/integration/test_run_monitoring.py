"""`collector run` starts a local Prometheus (and Alertmanager) with the project's rules over
its own endpoints, prints the URLs, and stops them with everything else; without the
binaries it says how to get them and carries on."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from collector.monitoring import LocalMonitoring
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        return list(json.loads(r.read())["data"]["result"])


def _port_open(url: str) -> bool:
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, int(port))) == 0


def test_run_starts_prometheus_with_the_rules_and_stops_it(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "log_level": "WARNING",
                "ingest": {"listen": "127.0.0.1:0", "metrics_listen": "127.0.0.1:0"},
                "aggregate": {"metrics_listen": "127.0.0.1:0"},
                "simulate": {
                    "sites_per_country": 1,
                    "links_per_site": 2,
                    "cells_per_site": 2,
                    "hosts_per_site": 1,
                },
            }
        )
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collector",
            "--config",
            str(cfg),
            "run",
            "--duration",
            "150",
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        prom = am = None
        deadline = time.monotonic() + 90
        assert proc.stdout is not None
        while not (prom and am) and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if m := re.search(r"^\s*prometheus\s+(http://127\.0\.0\.1:\d+)\s", line):
                prom = m.group(1)
            if m := re.search(r"^\s*prometheus\s.*alertmanager (http://127\.0\.0\.1:\d+)", line):
                am = m.group(1)
        assert prom, "".join(lines)
        assert am, "".join(lines)
        # every job scraped; a country roll-up of the project's rules has JP and US (the ledger's,
        # which exists from the first batch; the 1 min window roll-ups follow a minute later)
        seen: dict[str, Any] = {}

        def all_up_and_both_countries() -> bool:
            seen["up"] = {r["metric"]["job"]: float(r["value"][1]) for r in _query(prom, "up")}
            seen["countries"] = {
                r["metric"]["country"] for r in _query(prom, "country:collector_site_completeness_ratio:avg")
            }
            return seen["up"] == {"edge-aggregate": 1, "edge-ingest": 1, "edge-agent": 1} and seen[
                "countries"
            ] >= {"JP", "US"}

        assert wait_until(all_up_and_both_countries, within=90, step=1), seen
        with urllib.request.urlopen(f"{prom}/api/v1/alertmanagers", timeout=5) as r:
            active = json.loads(r.read())["data"]["activeAlertmanagers"]
        assert [a["url"] for a in active] == [f"{am}/api/v2/alerts"]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        lines.append(out)
        assert proc.returncode == 0, "".join(lines)[-3000:]
        assert not _port_open(prom), "prometheus still listening after the run stopped"
        assert not _port_open(am), "alertmanager still listening after the run stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_without_the_binary_it_says_how_to_get_it_and_starts_nothing(tmp_path: Path) -> None:
    mon = LocalMonitoring({"aggregate": ["127.0.0.1:1"]}, tmp_path, optional=True)
    mon.prometheus_binary = None  # as on a machine without Prometheus
    await mon.start()
    try:
        assert not mon.available
        assert mon.prometheus is None
        ((label, line),) = mon.links()
        assert label == "prometheus"
        assert "no binary on PATH" in line
        assert "apt-get install prometheus" in line
        assert not (tmp_path / "prometheus").exists()
    finally:
        await mon.stop()


async def test_a_prometheus_that_cannot_start_is_reported_not_raised(tmp_path: Path) -> None:
    mon = LocalMonitoring({"aggregate": ["127.0.0.1:1"]}, tmp_path, optional=True)
    mon.prometheus_binary = "/bin/false"  # exits at once
    mon.alertmanager_binary = None
    await mon.start()
    try:
        assert mon.prometheus is None
        ((label, line),) = mon.links()
        assert label == "prometheus"
        assert "failed to start" in line
        assert "prometheus exited" in line
    finally:
        await mon.stop()
