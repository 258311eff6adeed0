"""`collector run`: the one-command pipeline serves JP and US series, shows them live on a
terminal, stops cleanly on its own, on SIGINT and when forced, and leaves no child behind."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from collector.broker import EmbeddedBroker
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
SMALL_FLEET = {"sites_per_country": 2, "links_per_site": 3, "cells_per_site": 3, "hosts_per_site": 1}


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def _config(tmp_path: Path, **sections: Any) -> Path:
    cfg: dict[str, Any] = {
        "log_level": "WARNING",
        "ingest": {"listen": "127.0.0.1:0", "metrics_listen": "127.0.0.1:0", "grace_period_s": 5.0},
        "aggregate": {"metrics_listen": "127.0.0.1:0", "stop_grace_s": 5.0},
        "simulate": dict(SMALL_FLEET),
    }
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Run:
    """`collector run` as a child process with stdout on a pipe (not a terminal)."""

    def __init__(self, cfg: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "--config", str(cfg), "run", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self.children: list[psutil.Process] = []

    def read_until(self, pattern: str, within: float = 90.0) -> re.Match[str]:
        deadline = time.monotonic() + within
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                break
            self.lines.append(line)
            if m := re.search(pattern, line):
                return m
        raise AssertionError(f"no {pattern!r} in output:\n{self.output[-4000:]}")

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def remember_children(self) -> None:
        self.children = psutil.Process(self.proc.pid).children(recursive=True)

    def finish(self, within: float) -> int:
        out, _ = self.proc.communicate(timeout=within)
        self.lines.append(out)
        return self.proc.returncode

    def left_behind(self) -> list[psutil.Process]:
        return [c for c in self.children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for c in self.left_behind():
            with contextlib.suppress(psutil.Error):
                c.kill()


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for r in started:
        r.kill()


def _country_rates(body: str, metric: str = "edge_site_link_throughput_bytes_per_second") -> dict[str, float]:
    out: dict[str, float] = {}
    for c, v in re.findall(metric + r'\{[^}]*country="(\w+)"[^}]*\} (\S+)', body):
        out[c] = out.get(c, 0.0) + float(v)
    return out


def test_run_for_30s_without_a_terminal_serves_jp_and_us_and_leaves_no_child(
    tmp_path: Path, runs: list[Run]
) -> None:
    r = Run(_config(tmp_path), "--duration", "30", "--workdir", str(tmp_path / "work"))
    runs.append(r)
    url = r.read_until(r"aggregate /metrics\s+(http://127\.0\.0\.1:\d+/metrics)").group(1)
    tansu = int(re.search(r"embedded Tansu, pid (\d+)", r.output).group(1))  # type: ignore[union-attr]
    r.remember_children()
    assert tansu in {c.pid for c in r.children}
    rates = wait_until(
        lambda: (lambda x: x if {"JP", "US"} <= set(x) else None)(_country_rates(_get(url))), within=60
    )
    assert rates, rates
    assert {"JP", "US"} <= set(rates), rates
    assert all(v > 0 for v in rates.values()), rates
    # the simulated hosts' RAPL energy becomes site power for both countries (the dashboards'
    # country power panel sums it)
    power = wait_until(
        lambda: (lambda x: x if {"JP", "US"} <= set(x) else None)(
            _country_rates(_get(url), "edge_site_power_watts")
        ),
        within=60,
    )
    assert power, power
    assert all(v > 0 for v in power.values()), power
    assert r.finish(within=90) == 0, r.output[-4000:]
    out = r.output
    assert re.search(r"\[\s+\d+s\] samples/s", out)  # the plain status block (not a terminal)
    assert "\x1b[" not in out  # no terminal control codes into a pipe
    assert "run summary" in out
    assert "  JP: 2 sites" in out
    assert re.search(r"SS-RSRP median -\d+\.\d dBm", out), out[-3000:]
    assert "  US: 2 sites" in out
    assert out.rstrip().endswith("stopped")
    assert not r.left_behind(), r.left_behind()
    assert not psutil.pid_exists(tansu) or psutil.Process(tansu).status() == psutil.STATUS_ZOMBIE
    # the work dir is ours: marked, and cleared (not refused) by the next run
    assert (tmp_path / "work" / ".collector-run").is_file()


def test_sigint_mid_run_stops_within_the_grace_period(tmp_path: Path, runs: list[Run]) -> None:
    r = Run(_config(tmp_path), "--workdir", str(tmp_path / "work"))
    runs.append(r)
    url = r.read_until(r"aggregate /metrics\s+(http://127\.0\.0\.1:\d+/metrics)").group(1)
    r.remember_children()
    assert wait_until(lambda: {"JP", "US"} <= set(_country_rates(_get(url))), within=60)
    r.proc.send_signal(signal.SIGINT)
    # ingest grace 5 s + aggregator stop grace 5 s + agents' shutdown grace 5 s + broker 5 s
    assert r.finish(within=20 + 30) == 0, r.output[-4000:]
    assert "run summary" in r.output
    assert "stopped" in r.output
    assert not r.left_behind()


def test_a_second_sigint_forces_exit_and_kills_the_broker(tmp_path: Path, runs: list[Run]) -> None:
    r = Run(
        _config(tmp_path, ingest={"grace_period_s": 60.0}, aggregate={"stop_grace_s": 60.0}),
        "--workdir",
        str(tmp_path / "work"),
    )
    runs.append(r)
    r.read_until(r"aggregate /metrics")
    r.remember_children()
    # stop the broker so the graceful stop hangs on Kafka, then insist
    tansu = next(c for c in r.children if "tansu" in c.name())
    tansu.suspend()
    r.proc.send_signal(signal.SIGINT)
    r.read_until(r"stopping:", within=30)
    r.proc.send_signal(signal.SIGINT)
    assert r.finish(within=30) == 130
    assert "forced exit" in r.output
    assert not r.left_behind()


def test_busy_port_is_one_line_naming_the_key(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = _config(tmp_path, aggregate={"metrics_listen": f"127.0.0.1:{port}"})
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "collector",
                "--config",
                str(cfg),
                "run",
                "--workdir",
                str(tmp_path / "w"),
                "--duration",
                "5",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert p.returncode == 2, p.stdout + p.stderr
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(err) == 1, p.stderr
    assert "aggregate.metrics_listen" in err[0]
    assert f"127.0.0.1:{port}" in err[0]


def test_run_refuses_a_workdir_it_did_not_create(tmp_path: Path) -> None:
    w = tmp_path / "mine"
    w.mkdir()
    (w / "thesis.tex").write_text("years of work")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "collector",
            "--config",
            str(_config(tmp_path)),
            "run",
            "--workdir",
            str(w),
            "--duration",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2
    assert "--workdir" in p.stderr
    assert "refusing" in p.stderr
    assert (w / "thesis.tex").read_text() == "years of work"


def test_run_on_an_existing_kafka_with_three_countries_and_a_pm_directory(
    tmp_path: Path, broker: EmbeddedBroker, runs: list[Run]
) -> None:
    import datetime as dt

    from collector.simulate.pm_writer import render_meas_collec

    u = uuid.uuid4().hex[:8]
    pm = tmp_path / "pm"
    pm.mkdir()
    end = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    (pm / "gnb1.xml").write_bytes(
        render_meas_collec(
            begin=end - dt.timedelta(minutes=5),
            duration_s=300,
            element="gnb-pm-1",
            cells={"cell-1": {"DRB.UEThpDl": 200_000, "CELL.CoverageRatio": 97}},
        )
    )
    os.utime(pm / "gnb1.xml", (time.time() - 60, time.time() - 60))
    cfg = _config(
        tmp_path,
        kafka={"topic": f"run-{u}", "dead_letter_topic": f"run-{u}.dlq"},
        aggregate={"group_id": f"run-{u}", "state_topic": f"run-{u}.state"},
        agent={
            "site": {"site_id": "jp-pm-01", "country": "JP"},
            "sources": {"cell": {"interval_s": 1.0, "settle_s": 0.0}},
        },
        simulate={"sites_per_country": 1},
    )
    r = Run(
        cfg,
        "--bootstrap",
        broker.bootstrap,
        "--countries",
        "JP,US,AE",
        "--seed",
        "3",
        "--pm-dir",
        str(pm),
        "--workdir",
        str(tmp_path / "work"),
    )
    runs.append(r)
    url = r.read_until(r"aggregate /metrics\s+(http://127\.0\.0\.1:\d+/metrics)").group(1)
    assert f"{broker.bootstrap}  (existing Kafka)" in r.output
    assert wait_until(lambda: {"JP", "US", "AE"} <= set(_country_rates(_get(url))), within=60)
    # the PM file was read by a real agent, went through ingest and Kafka, and is aggregated
    assert wait_until(lambda: 'site="jp-pm-01"' in _get(url), within=60), _get(url)[-2000:]
    assert wait_until(lambda: (pm / "done" / "gnb1.xml").exists(), within=10)
    r.proc.send_signal(signal.SIGINT)
    assert r.finish(within=60) == 0, r.output[-4000:]
    assert "  AE: 1 sites" in r.output
    assert "in memory: they are gone" not in r.output  # not the embedded broker


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is installed by `make test`")
def test_live_view_in_a_terminal_shows_both_countries_with_throughput(tmp_path: Path) -> None:
    sock = tmp_path / "tmux.sock"
    cfg = _config(tmp_path)
    cmd = (
        f"cd {ROOT} && env -u COLUMNS -u LINES {sys.executable} -m collector --config {cfg} "
        f"run --duration 120 --workdir {tmp_path / 'work'}; echo EXIT=$?; sleep 600"
    )
    tmux = ["tmux", "-S", str(sock)]
    subprocess.run([*tmux, "new-session", "-d", "-x", "150", "-y", "50", cmd], check=True)
    try:

        def screen() -> str:
            return subprocess.run(
                [*tmux, "capture-pane", "-p", "-S", "-200"], check=True, capture_output=True, text=True
            ).stdout

        def throughput() -> list[str] | None:
            frame = screen()
            m = re.search(r"links in/out\s*│\s*(.+?)\s*│\s*(.+?)\s*│", frame)
            speed = re.search(r"per-user DL\s*│\s*[\d.]+ Mb/s \(ref 217\.11\)", frame)
            if m and speed and all(not v.startswith("0.0 b/s") for v in m.groups()):
                return list(m.groups())
            return None

        got = wait_until(throughput, within=90, step=1.0)
        frame = screen()
        assert got, frame
        assert "Japan (JP)" in frame
        assert "United States (US)" in frame
        assert re.search(r"│\s*[\d.]+ Mb/s \(ref 279\.93\)", frame), frame
        # the simulated PM files' L1M.SS-RSRP distributions, as a median per country
        assert wait_until(
            lambda: re.search(r"SS-RSRP median\s*│\s*-\d+\.\d dBm\s*│\s*-\d+\.\d dBm", screen()),
            within=30,
            step=1.0,
        ), screen()
        assert "INFO" not in frame  # log lines go to the run's log file, not over the view
        subprocess.run([*tmux, "send-keys", "C-c"], check=True)
        assert wait_until(lambda: "EXIT=" in screen(), within=60, step=1.0), screen()
        end = screen()
        assert "EXIT=0" in end, end
        assert "run summary" in end, end
        assert (tmp_path / "work" / "collector.log").is_file()
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
