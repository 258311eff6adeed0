"""`collector run`: the one-command pipeline starts, serves JP and US series, stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def test_run_serves_jp_and_us_series_and_stops_on_sigint(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "log_level": "WARNING",
        "ingest": {"listen": "127.0.0.1:0", "metrics_listen": "127.0.0.1:0"},
        "aggregate": {"metrics_listen": "127.0.0.1:0"},
        "simulate": {"sites_per_country": 2, "links_per_site": 3, "cells_per_site": 3,
                     "hosts_per_site": 1},
    }))
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "--config", str(cfg), "run", "--duration", "120",
         "--workdir", str(tmp_path / "work")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        url = None
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if m := re.search(r"aggregate /metrics\s+(http://127\.0\.0\.1:\d+/metrics)", line):
                url = m.group(1)
        assert url, "".join(lines)
        body = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            body = _get(url)
            if ('country="JP"' in body and 'country="US"' in body
                    and "edge_site_link_throughput_bytes_per_second{" in body):
                break
            time.sleep(1)
        site_rates = re.findall(
            r'edge_site_link_throughput_bytes_per_second\{[^}]*country="(JP|US)"[^}]*\} (\S+)', body)
        assert {c for c, _ in site_rates} == {"JP", "US"}, body[-3000:]
        assert all(float(v) >= 0 for _, v in site_rates)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        lines.append(out)
        assert proc.returncode == 0, "".join(lines)[-3000:]
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
