"""`collector run`: the whole pipeline on one machine, in one command, with a live view.

    embedded Tansu broker (or an existing Kafka) -> ingest (gRPC over TLS, bearer tokens)
    -> Kafka topic -> aggregator (consumer group, windows) -> /metrics
    fed by a simulated fleet of Japanese and US (and optionally UAE) sites, each a real agent
    stream (spool + sender) with its own token, plus optionally one real agent reading 3GPP
    PM files from a directory (`--pm-dir`).

Everything listens on loopback. TLS material, tokens, agent spools and the run's log live
in the work directory (default ./var/run). `collector run` marks a directory it creates
(`.collector-run`) and clears only such a directory at the next start; it refuses a
non-empty directory it did not create. On a terminal the run shows a live Japan-vs-US view
(collector/runview.py); otherwise (CI, a pipe, `--no-live`) it prints a status block every
10 s. Ctrl-C (or SIGTERM) stops everything in order and prints a final summary; a second
Ctrl-C kills the child processes and exits at once (collector/cli.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from collector.aggregate.service import Aggregator
from collector.broker import EmbeddedBroker, topics_for
from collector.config import Settings
from collector.devcerts import make_dev_certs
from collector.errors import BrokerError, ConfigError
from collector.ingest.server import IngestServer
from collector.monitoring import run_monitoring
from collector.runview import LiveView, Monitor, PlainView, RunInfo, View, log_line
from collector.simulate.config import SimulateSettings
from collector.simulate.fleet import FleetRunner, site_tokens, write_tokens_file

log = logging.getLogger(__name__)
STATUS_EVERY_S = 10.0
SAMPLE_EVERY_S = 1.0
# `run` is for looking at: sample every second so 10 s windows close at once.
RUN_INTERVAL_S = 1.0
RUN_PM_PERIOD_S = 10  # simulated PM granularity: cell figures within ~20 s of the start
WORKDIR_MARKER = ".collector-run"
PM_SITE_DEFAULT = ("pm-files-01", "JP")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this many wall-clock seconds (default: until Ctrl-C)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("var/run"),
        help="TLS material, tokens, agent spools, run log (default var/run). "
        "A directory `collector run` created is cleared at start; a "
        "non-empty one it did not create is refused, never deleted",
    )
    parser.add_argument(
        "--sites-per-country", type=int, default=None, metavar="N", help="override simulate.sites_per_country"
    )
    parser.add_argument(
        "--countries",
        default=None,
        metavar="JP,US[,AE]",
        help="override simulate.countries (comma-separated: JP, US, AE)",
    )
    parser.add_argument("--seed", type=int, default=None, help="override simulate.seed")
    parser.add_argument(
        "--acceleration",
        type=float,
        default=None,
        metavar="X",
        help="override simulate.acceleration (simulated seconds per second)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="override simulate.interval_s (default for `run`: "
        f"{RUN_INTERVAL_S:g}s unless the config file sets it)",
    )
    parser.add_argument(
        "--bootstrap",
        default=None,
        metavar="HOST:PORT[,...]",
        help="use this existing Kafka instead of the embedded broker "
        "(same as kafka.bootstrap_servers); missing topics are created",
    )
    parser.add_argument(
        "--pm-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="also run one real agent whose cell source reads 3GPP TS 32.435 "
        "PM files from DIR (site from agent.site, default "
        f"{PM_SITE_DEFAULT[0]}/{PM_SITE_DEFAULT[1]})",
    )
    parser.add_argument(
        "--no-live",
        action="store_true",
        help="plain status lines even on a terminal (the default when stdout is not a terminal)",
    )


# ------------------------------------------------------------------ settings and files


def prepare_workdir(path: Path) -> Path:
    """Create `path` (marked as ours) or clear it if we marked it; never touch anything else."""
    path = path.absolute()
    marker = path / WORKDIR_MARKER
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ConfigError(f"{path} is not a directory", key="--workdir", source="command line")
    if path.exists():
        if marker.is_file():
            for child in path.iterdir():
                if child.name == WORKDIR_MARKER:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        elif any(path.iterdir()):
            raise ConfigError(
                f"{path} is not empty and was not created by `collector run` (no "
                f"{WORKDIR_MARKER} file in it): refusing to clear it; give a new or empty "
                "directory",
                key="--workdir",
                source="command line",
            )
    else:
        path.mkdir(parents=True)
    marker.write_text(
        "created by `collector run`: everything else in this directory is deleted at its next start\n"
    )
    return path


def _simulate_overrides(settings: Settings, args: argparse.Namespace) -> SimulateSettings:
    sim = settings.simulate
    upd: dict[str, Any] = {}
    interval = args.interval
    if interval is None and "interval_s" not in sim.model_fields_set:
        interval = RUN_INTERVAL_S
    flags = {
        "sites_per_country": "--sites-per-country",
        "acceleration": "--acceleration",
        "interval_s": "--interval",
        "seed": "--seed",
        "countries": "--countries",
    }
    countries = None
    if args.countries is not None:
        countries = tuple(c.strip().upper() for c in args.countries.split(",") if c.strip())
    for key, value in (
        ("sites_per_country", args.sites_per_country),
        ("acceleration", args.acceleration),
        ("interval_s", interval),
        ("seed", args.seed),
        ("countries", countries),
    ):
        if value is not None:
            upd[key] = value
    # Simulated cells as real PM files through the agents' cell source (simulate/pm_files.py),
    # 10-s periods so cell metrics show soon; both overridable in the config file.
    upd.update(
        {
            k: v
            for k, v in (("pm_files", True), ("pm_granularity_s", RUN_PM_PERIOD_S))
            if k not in sim.model_fields_set
        }
    )
    if not upd:
        return sim
    try:
        return SimulateSettings.model_validate({**sim.model_dump(), **upd})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else next(iter(upd))
        flag = flags.get(key, "")
        raise ConfigError(
            f"{err['msg']}", key=f"simulate.{key}" + (f" ({flag})" if flag else ""), source="command line"
        ) from exc


def _pm_site(settings: Settings) -> tuple[str, str]:
    s = settings.agent.site
    return (s.site_id or PM_SITE_DEFAULT[0], s.country or PM_SITE_DEFAULT[1])


def settings_for_run(settings: Settings, args: argparse.Namespace, workdir: Path) -> Settings:
    """The run's settings: command-line overrides, dev TLS material and tokens in `workdir`."""
    sim = _simulate_overrides(settings, args)
    if args.pm_dir is not None:
        if not args.pm_dir.is_dir():
            raise ConfigError(f"{args.pm_dir} is not a directory", key="--pm-dir", source="command line")
        args.pm_dir = args.pm_dir.absolute()
    certs = make_dev_certs(workdir / "tls")
    tokens = site_tokens(sim)
    if args.pm_dir is not None:
        tokens[_pm_site(settings)[0]] = _pm_token(sim)
    tokens_file = write_tokens_file(workdir / "tokens.yaml", tokens)
    ingest = settings.ingest.model_copy(
        update={
            "tls_cert": certs.server_cert,
            "tls_key": certs.server_key,
            "plaintext": False,
            "client_ca": None,
            "tokens_file": tokens_file,
            "allow_unauthenticated": False,
        }
    )
    kafka = settings.kafka
    if args.bootstrap:
        kafka = kafka.model_copy(update={"bootstrap_servers": args.bootstrap})
    return settings.model_copy(update={"ingest": ingest, "simulate": sim, "kafka": kafka})


def _pm_token(sim: SimulateSettings) -> str:
    import hashlib

    return hashlib.sha256(f"pm-agent/{sim.seed}".encode()).hexdigest()[:32]


# ------------------------------------------------------------------ Kafka


async def ensure_topics(settings: Settings, bootstrap: str) -> list[str]:
    """Create the run's topics on an existing Kafka when missing; returns those created.

    Partitions from `broker.partitions`, replication factor min(3, brokers) - a real cluster
    should have them created by its operator (docs/deploy.md); this is for a quick look.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError

    from collector.kafka import client_kwargs

    admin = AIOKafkaAdminClient(**client_kwargs(settings.kafka, bootstrap))
    try:
        await asyncio.wait_for(admin.start(), settings.broker.startup_timeout_s)
        existing = set(await admin.list_topics())
        brokers = len((await admin.describe_cluster()).get("brokers", [])) or 1
        created = []
        for t in topics_for(settings):
            if t.name in existing:
                continue
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            t.name,
                            num_partitions=t.partitions,
                            replication_factor=min(3, brokers),
                            topic_configs={"retention.ms": str(t.retention_ms)},
                        )
                    ]
                )
                created.append(t.name)
        return created
    except (KafkaError, OSError, TimeoutError) as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap} (kafka.bootstrap_servers): {exc!r}") from exc
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


@dataclass
class KafkaInfo:
    bootstrap: str
    kind: str
    pid: int | None = None
    embedded: bool = True
    created: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def _kafka(settings: Settings, workdir: Path) -> AsyncIterator[KafkaInfo]:
    if settings.kafka.bootstrap_servers:
        bs = settings.kafka.bootstrap_servers
        created = await ensure_topics(settings, bs)
        yield KafkaInfo(bs, "existing Kafka", embedded=False, created=created)
        return
    b = settings.broker
    async with EmbeddedBroker(
        host=b.host,
        port=b.port,
        binary=b.binary,
        topics=topics_for(settings),
        startup_timeout_s=b.startup_timeout_s,
        log_path=workdir / "tansu.log",
    ) as broker:
        yield KafkaInfo(broker.bootstrap, f"embedded Tansu, pid {broker.pid}, in memory", pid=broker.pid)


# ------------------------------------------------------------------ PM-file agent


@contextlib.asynccontextmanager
async def _pm_agent(
    settings: Settings, pm_dir: Path, target: str, ca_file: Path, workdir: Path, registry: CollectorRegistry
) -> AsyncIterator[Any]:
    """One real agent (pipeline + pm_xml cell source) over `pm_dir`, for `--pm-dir`."""
    from collector.agent.batch import SiteInfo
    from collector.agent.main import build_sources
    from collector.agent.metrics import collector_for
    from collector.agent.pipeline import AgentPipeline
    from collector.agent.sources import run_source

    a = settings.agent
    site_id, country = _pm_site(settings)
    src = a.sources.model_copy(
        update={
            "server": a.sources.server.model_copy(update={"enabled": False}),
            "link": a.sources.link.model_copy(update={"enabled": False}),
            "cell": a.sources.cell.model_copy(
                update={"enabled": True, "adapter": "pm_xml", "pm_dir": pm_dir}
            ),
        }
    )
    ing = a.ingest.model_copy(
        update={"target": target, "ca_file": ca_file, "plaintext": False, "server_name": "localhost"}
    )
    agent = a.model_copy(update={"sources": src, "ingest": ing})
    agent_id = a.agent_id or f"{site_id}-run"
    site = SiteInfo(site_id, country, a.site.region, a.site.timezone)
    pipeline = AgentPipeline(
        agent,
        agent_id=agent_id,
        site=site,
        boot_id=f"run-{time.time_ns()}",
        spool_dir=workdir / "pm-agent",
        token=_pm_token(settings.simulate),
        registry=registry,
    )
    sources = build_sources(agent)
    coll = collector_for(registry)
    for s in sources:
        coll.add_source(agent_id, s.name, s.stats)
    stop = asyncio.Event()
    async with pipeline:
        tasks = [asyncio.create_task(run_source(s, pipeline, stop), name=f"pm-{s.name}") for s in sources]
        try:
            yield pipeline
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for s in sources:
                await s.close()


# ------------------------------------------------------------------ the run


def wants_live(args: argparse.Namespace) -> bool:
    return not args.no_live and sys.stdout.isatty()


@contextlib.contextmanager
def _logs_to_file(path: Path, recent: Callable[[logging.LogRecord], None] | None) -> Iterator[None]:
    """While the live view owns the terminal, log lines go to the run's log file (and the
    view shows the recent warnings); the console handlers come back afterwards."""
    root = logging.getLogger()
    console = [
        h
        for h in root.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    fh = logging.FileHandler(path, encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for h in console:
        root.removeHandler(h)
    root.addHandler(fh)
    tap = None
    if recent is not None:
        tap = _Tap(recent)
        tap.setLevel(logging.WARNING)
        root.addHandler(tap)
    try:
        yield
    finally:
        root.removeHandler(fh)
        if tap is not None:
            root.removeHandler(tap)
        fh.close()
        for h in console:
            root.addHandler(h)


class _Tap(logging.Handler):
    def __init__(self, sink: Callable[[logging.LogRecord], None]) -> None:
        super().__init__()
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self._sink(record)


async def main(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    workdir = prepare_workdir(args.workdir)
    settings = settings_for_run(settings, args, workdir)
    if not wants_live(args):
        return await _run(settings, args, stop, workdir, None)
    # The live view owns the terminal: log lines go to the run's log file from the start,
    # the view shows the recent warnings.
    warnings: deque[str] = deque(maxlen=4)
    with _logs_to_file(workdir / "collector.log", lambda r: warnings.append(log_line(r))):
        return await _run(settings, args, stop, workdir, warnings)


async def _run(
    settings: Settings,
    args: argparse.Namespace,
    stop: asyncio.Event,
    workdir: Path,
    warnings: deque[str] | None,
) -> int:
    sim = settings.simulate
    tls = workdir / "tls"
    agent_registry = CollectorRegistry()
    started = time.monotonic()
    failed = False
    view: View | None = None
    final = None
    async with contextlib.AsyncExitStack() as stack:
        kafka = await stack.enter_async_context(_kafka(settings, workdir))
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": kafka.bootstrap})}
        )
        ingest = await stack.enter_async_context(IngestServer(settings))
        aggregator = await stack.enter_async_context(Aggregator(settings, bootstrap=kafka.bootstrap))
        target = f"127.0.0.1:{ingest.port}"
        fleet = FleetRunner(
            settings,
            target=target,
            tokens=site_tokens(settings),
            ca_file=tls / "ca.pem",
            work_dir=workdir / "agents",
            registry=agent_registry,
        )
        await stack.enter_async_context(fleet)
        if args.pm_dir is not None:
            await stack.enter_async_context(
                _pm_agent(settings, args.pm_dir, target, tls / "ca.pem", workdir, agent_registry)
            )
        info = RunInfo(
            countries=tuple(sim.countries),
            duration_s=args.duration,
            workdir=workdir,
            links=[
                ("Kafka", f"{kafka.bootstrap}  ({kafka.kind}), topic {settings.kafka.topic}"),
                ("ingest gRPC (TLS)", f"{target}  CA {tls / 'ca.pem'}, tokens {workdir / 'tokens.yaml'}"),
                (
                    "ingest /metrics",
                    f"http://127.0.0.1:{ingest.metrics_port}/metrics" if ingest.metrics_port else "off",
                ),
                (
                    "aggregate /metrics",
                    f"http://127.0.0.1:{aggregator.metrics_port}/metrics"
                    if aggregator.metrics_port
                    else "off",
                ),
            ],
            fleet=(
                f"{sim.sites_per_country} sites per country ({'/'.join(sim.countries)}), "
                f"{sim.links_per_site} links, {sim.cells_per_site} cells, "
                f"{sim.hosts_per_site} hosts each, every {sim.interval_s:g}s at "
                f"{sim.acceleration:g}x" + (f"; PM files from {args.pm_dir}" if args.pm_dir else "")
            ),
            embedded=kafka.embedded,
        )
        if aggregator.metrics_port:
            info.links.append(
                (
                    "look at",
                    f"curl -s http://127.0.0.1:{aggregator.metrics_port}"
                    "/metrics | grep 'country=\"JP\"' | head",
                )
            )
        monitoring = await stack.enter_async_context(
            run_monitoring(
                ingest.metrics_port, aggregator.metrics_port, agent_registry, workdir / "monitoring"
            )
        )
        info.links += monitoring.links()
        monitor = Monitor(
            ingest=ingest,
            aggregator=aggregator,
            fleet=fleet,
            agents=agent_registry,
            countries=tuple(sim.countries),
        )
        view = (
            LiveView(info, monitor=monitor, warnings=warnings)
            if warnings is not None
            else PlainView(info, every_s=STATUS_EVERY_S, monitor=monitor)
        )
        with view:
            deadline = started + args.duration if args.duration else None
            while not stop.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                view.update(await monitor.sample())
                wake = min(now + SAMPLE_EVERY_S, deadline) if deadline else now + SAMPLE_EVERY_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.05, wake - time.monotonic()))
                if aggregator.failed.is_set():
                    failed = True
                    log.error("aggregator failed: %r; stopping", aggregator.failure)
                    break
            final = await monitor.sample()
        print(
            "stopping: fleet drains its spools, ingest answers in-flight batches, "
            "aggregator commits ... (Ctrl-C again to force)",
            flush=True,
        )
    failed = failed or aggregator.failed.is_set()
    if failed:
        print(f"aggregator failed: {aggregator.failure!r}", flush=True)
    print(view.summary(final, time.monotonic() - started) if view else "", flush=True)
    print("stopped", flush=True)
    return 1 if failed else 0
