"""A local Prometheus (and Alertmanager) with the project's own config and rules.

`collector run` starts one on loopback, pointed at the run's own endpoints, so a newcomer
sees the recording rules, alerts and dashboard queries working on live data; the
integration tests start the same thing to prove every panel query and rule against a real
Prometheus. The configuration is derived from `deploy/prometheus/prometheus.yml` (scrape
interval, jobs, rule files) and `deploy/alertmanager/alertmanager.yml` (routes,
inhibitions); only the targets are replaced (file_sd files written into the work
directory) and the Alertmanager receivers are emptied, so nothing is sent anywhere.

    agent/ingest/aggregate /metrics --scrape--> local Prometheus --alerts--> local Alertmanager

The binaries come from the system (Debian: `apt-get install prometheus
prometheus-alertmanager`); without them `find_binary` returns None and `collector run`
says how to get them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from collector import children
from collector.broker import free_port
from collector.errors import CollectorError
from collector.exposition.http import MetricsServer
from collector.lifecycle import Component

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
# Scrape jobs of deploy/prometheus/prometheus.yml, by component.
JOBS = {"aggregate": "edge-aggregate", "ingest": "edge-ingest", "agents": "edge-agent"}
INSTALL_HINT = (
    "apt-get install prometheus prometheus-alertmanager (Debian/Ubuntu), or put the "
    "prometheus and alertmanager binaries from prometheus.io on PATH"
)


class MonitoringError(CollectorError):
    """The local Prometheus or Alertmanager could not be started."""


def find_binary(*names: str) -> str | None:
    """First of `names` on PATH (Debian names Alertmanager `prometheus-alertmanager`)."""
    for n in names:
        if found := shutil.which(n):
            return found
    return None


def prometheus_config(
    targets: Mapping[str, Sequence[str]],
    workdir: Path,
    *,
    alertmanager: str | None = None,
    scrape_interval: str | None = None,
    rule_files: Sequence[Path] | None = None,
    source: Path = PROMETHEUS_DIR / "prometheus.yml",
) -> Path:
    """Write a Prometheus config into `workdir`: the project's, with each job's targets
    (component -> ["host:port", ...], see JOBS) in file_sd files of the work directory, rule
    files as absolute paths and `alertmanager` (host:port) as the only Alertmanager."""
    cfg: dict[str, Any] = yaml.safe_load(source.read_text())
    workdir.mkdir(parents=True, exist_ok=True)
    if scrape_interval:
        cfg["global"]["scrape_interval"] = scrape_interval
        cfg["global"]["evaluation_interval"] = scrape_interval
        cfg["global"]["scrape_timeout"] = scrape_interval
    by_job = {JOBS[k]: list(v) for k, v in targets.items()}
    for job in cfg["scrape_configs"]:
        job.pop("scrape_timeout", None)  # may exceed a shortened interval
        f = workdir / f"targets-{job['job_name']}.json"
        f.write_text(json.dumps([{"targets": by_job.get(job["job_name"], [])}]))
        job["file_sd_configs"] = [{"files": [str(f)], "refresh_interval": "5s"}]
    rules = rule_files if rule_files is not None else sorted((source.parent / "rules").glob("*.yml"))
    cfg["rule_files"] = [str(Path(r).resolve()) for r in rules]
    if alertmanager:
        cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    else:
        cfg.pop("alerting", None)
    out = workdir / "prometheus.yml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def alertmanager_config(workdir: Path, source: Path = ALERTMANAGER_CONFIG) -> Path:
    """The project's routes and inhibitions with every receiver emptied (a local run must not
    call the placeholder webhooks)."""
    cfg: dict[str, Any] = yaml.safe_load(source.read_text())
    cfg["receivers"] = [{"name": r["name"]} for r in cfg["receivers"]]
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "alertmanager.yml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


class _Child(Component):
    """A server child process on a loopback port, ready when `ready_path` answers 200."""

    name = "server"
    ready_path = "/-/ready"

    def __init__(
        self,
        binary: str,
        config: Path,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 30.0,
    ) -> None:
        self.binary = binary
        self.config = config
        self.workdir = workdir
        self.host = host
        self.port = 0
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def args(self) -> list[str]:
        raise NotImplementedError

    async def start(self) -> None:
        if self.proc is not None:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.host)
        self._log = open(self.log_path, "ab")  # noqa: SIM115, ASYNC230 - once, at start-up
        self.proc = subprocess.Popen(  # noqa: ASYNC220
            [self.binary, *self.args()],
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )
        children.track(self.proc, self.name)  # a forced exit (second Ctrl-C) kills it by pid
        log.info("%s pid %d on %s", self.name, self.proc.pid, self.url)
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise MonitoringError(
                    f"{self.name} exited with {self.proc.returncode} at start-up (see {self.log_path})"
                )
            with contextlib.suppress(OSError):
                if await asyncio.to_thread(_status, self.url + self.ready_path) == 200:
                    return
            await asyncio.sleep(0.1)
        raise MonitoringError(
            f"{self.name} not ready within {self.startup_timeout_s:g}s (see {self.log_path})"
        )

    async def stop(self, grace_s: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        await children.terminate(proc, grace_s)
        if self._log is not None:
            self._log.close()
            self._log = None


class LocalPrometheus(_Child):
    name = "prometheus"

    def args(self) -> list[str]:
        return [
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address={self.address}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ]

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path> (blocking); the `data` member of a successful answer."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise MonitoringError(f"{path}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        return data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]


class LocalAlertmanager(_Child):
    name = "alertmanager"

    def args(self) -> list[str]:
        # --cluster.listen-address= turns the HA gossip off (it would bind 0.0.0.0:9094).
        return [
            f"--config.file={self.config}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class LocalMonitoring(Component):
    """Prometheus (+ Alertmanager when its binary exists) over the given targets.

    `targets` maps component ("aggregate", "ingest", "agents") to host:port lists. With
    `agent_registry` (the in-process agents of `collector run`), their self-metrics are
    served on a loopback port of our own and scraped as the "agents" job. When the
    prometheus binary is missing, `start()` does nothing and `available` is False."""

    def __init__(
        self,
        targets: Mapping[str, Sequence[str]],
        workdir: Path,
        *,
        scrape_interval: str | None = None,
        agent_registry: CollectorRegistry | None = None,
        optional: bool = False,
    ) -> None:
        self.targets = dict(targets)
        self.optional = optional  # a failed start is reported (links()), not raised
        self.error: str | None = None
        self.workdir = workdir
        self.scrape_interval = scrape_interval
        self.agent_registry = agent_registry
        self.prometheus: LocalPrometheus | None = None
        self.alertmanager: LocalAlertmanager | None = None
        self.agents_http: MetricsServer | None = None
        self.prometheus_binary = find_binary("prometheus")
        self.alertmanager_binary = find_binary("prometheus-alertmanager", "alertmanager")

    @property
    def available(self) -> bool:
        return self.prometheus_binary is not None

    def links(self) -> list[tuple[str, str]]:
        """One (label, text) line for `collector run` to show with its other addresses."""
        if self.prometheus is None:
            if self.error:
                return [("prometheus", f"failed to start: {self.error}")]
            return [
                (
                    "prometheus",
                    "not started, no binary on PATH (apt-get install prometheus prometheus-alertmanager)",
                )
            ]
        text = f"{self.prometheus.url}  (rules and alerts of deploy/prometheus)"
        if self.alertmanager is not None:
            text = f"{self.prometheus.url}  alertmanager {self.alertmanager.url}"
        return [("prometheus", text)]

    async def start(self) -> None:
        if self.prometheus is not None or self.prometheus_binary is None:
            return
        try:
            if self.agent_registry is not None:
                self.agents_http = MetricsServer("127.0.0.1", 0, self.agent_registry)
                await self.agents_http.start()
                self.targets["agents"] = [f"127.0.0.1:{self.agents_http.bound_port}"]
            am_addr = None
            if self.alertmanager_binary:
                am = LocalAlertmanager(
                    self.alertmanager_binary,
                    alertmanager_config(self.workdir / "alertmanager"),
                    self.workdir / "alertmanager",
                )
                await am.start()
                self.alertmanager = am
                am_addr = am.address
            cfg = prometheus_config(
                self.targets,
                self.workdir / "prometheus",
                alertmanager=am_addr,
                scrape_interval=self.scrape_interval,
            )
            prom = LocalPrometheus(self.prometheus_binary, cfg, self.workdir / "prometheus")
            await prom.start()
            self.prometheus = prom
        except MonitoringError as exc:
            await self.stop()
            if not self.optional:
                raise
            self.error = str(exc)
            log.warning("local Prometheus not started: %s", exc)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        prom, self.prometheus = self.prometheus, None
        am, self.alertmanager = self.alertmanager, None
        agents, self.agents_http = self.agents_http, None
        if prom is not None:
            await prom.stop()
        if am is not None:
            await am.stop()
        if agents is not None:
            await agents.stop()


def run_monitoring(
    ingest_metrics_port: int,
    aggregate_metrics_port: int,
    agent_registry: CollectorRegistry | None,
    workdir: Path,
) -> LocalMonitoring:
    """The local Prometheus/Alertmanager of `collector run`, over the run's own endpoints
    (a component whose metrics endpoint is off is left out). Optional: a Prometheus that
    cannot start is reported in `links()`, the run goes on."""
    targets = {
        k: [f"127.0.0.1:{port}"]
        for k, port in (("ingest", ingest_metrics_port), ("aggregate", aggregate_metrics_port))
        if port
    }
    return LocalMonitoring(targets, workdir, agent_registry=agent_registry, optional=True)
