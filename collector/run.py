"""`collector run`: the whole pipeline on one machine, in one command.

    embedded Tansu broker -> ingest (gRPC over TLS, bearer tokens) -> Kafka topic
    -> aggregator (consumer group, windows) -> /metrics
    fed by a simulated fleet of Japanese and US sites, each a real agent stream
    (spool + sender) with its own token.

Everything listens on loopback. TLS material and tokens are generated into the work
directory (default ./var/run), which is recreated at every start. With
`kafka.bootstrap_servers` set, a real Kafka is used instead of the embedded broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

from collector.aggregate.service import Aggregator
from collector.broker import EmbeddedBroker
from collector.broker_cmd import topics_for
from collector.config import Settings
from collector.devcerts import make_dev_certs
from collector.ingest.server import IngestServer
from collector.simulate.fleet import FleetRunner, site_tokens, write_tokens_file

log = logging.getLogger(__name__)
STATUS_EVERY_S = 10.0
# `run` is for looking at: sample every second so 10 s windows close at once.
RUN_INTERVAL_S = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many wall-clock seconds (default: until Ctrl-C)")
    parser.add_argument("--workdir", type=Path, default=Path("var/run"),
                        help="TLS material, tokens, agent spools (recreated; default var/run)")
    parser.add_argument("--sites-per-country", type=int, default=None,
                        help="override simulate.sites_per_country")
    parser.add_argument("--acceleration", type=float, default=None,
                        help="override simulate.acceleration (simulated seconds per second)")
    parser.add_argument("--interval", type=float, default=None,
                        help="override simulate.interval_s (default for `run`: "
                             f"{RUN_INTERVAL_S:g}s unless the config file sets it)")


def _settings_for_run(settings: Settings, args: argparse.Namespace, workdir: Path) -> Settings:
    certs = make_dev_certs(workdir / "tls")
    sim = settings.simulate
    interval = args.interval
    if interval is None and "interval_s" not in sim.model_fields_set:
        interval = RUN_INTERVAL_S
    sim_update = {k: v for k, v in (("sites_per_country", args.sites_per_country),
                                    ("acceleration", args.acceleration),
                                    ("interval_s", interval)) if v is not None}
    if sim_update:
        sim = sim.model_copy(update=sim_update)
    tokens_file = write_tokens_file(workdir / "tokens.yaml", site_tokens(sim))
    ingest = settings.ingest.model_copy(update={
        "tls_cert": certs.server_cert, "tls_key": certs.server_key, "plaintext": False,
        "client_ca": None, "tokens_file": tokens_file, "allow_unauthenticated": False,
    })
    return settings.model_copy(update={"ingest": ingest, "simulate": sim})


@contextlib.asynccontextmanager
async def _kafka(settings: Settings, workdir: Path) -> AsyncIterator[tuple[str, str]]:
    if settings.kafka.bootstrap_servers:
        yield settings.kafka.bootstrap_servers, "external Kafka"
        return
    b = settings.broker
    async with EmbeddedBroker(host=b.host, port=b.port, binary=b.binary,
                              topics=topics_for(settings), startup_timeout_s=b.startup_timeout_s,
                              log_path=workdir / "tansu.log") as broker:
        yield broker.bootstrap, f"embedded Tansu, pid {broker.pid}"


def _fresh_dir(path: Path) -> Path:
    path = path.resolve()
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _status(ingest: IngestServer, aggregator: Aggregator, elapsed: float) -> str:
    reg = ingest.registry
    value = lambda name: reg.get_sample_value(name) or 0.0  # noqa: E731
    rejected = sum(s.value for m in reg.collect() if m.name == "collector_ingest_batches_rejected"
                   for s in m.samples if s.name.endswith("_total"))
    return (f"[{elapsed:6.0f}s] ingest accepted "
            f"{value('collector_ingest_batches_accepted_total'):,.0f} batches / "
            f"{value('collector_ingest_samples_accepted_total'):,.0f} samples, "
            f"rejected {rejected:,.0f}; aggregator {_aggregator_status(aggregator)}")


def _aggregator_status(agg: Aggregator) -> str:
    samples = agg.registry.get_sample_value("collector_aggregate_samples_total") or 0.0
    closed = [st.closed_ns for st in agg.states.values() if st.closed_ns is not None]
    until = (time.strftime("%H:%M:%S", time.localtime(min(closed) / 1e9)) if closed
             else "none yet")
    return f"{samples:,.0f} samples in windows, windows closed to {until}"


async def main(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    workdir = _fresh_dir(args.workdir)
    settings = _settings_for_run(settings, args, workdir)
    sim = settings.simulate
    async with contextlib.AsyncExitStack() as stack:
        bootstrap, kafka_kind = await stack.enter_async_context(_kafka(settings, workdir))
        settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(
            update={"bootstrap_servers": bootstrap})})
        ingest = await stack.enter_async_context(IngestServer(settings))
        aggregator = await stack.enter_async_context(Aggregator(settings, bootstrap=bootstrap))
        fleet = FleetRunner(settings, target=f"127.0.0.1:{ingest.port}",
                            tokens=site_tokens(settings), ca_file=workdir / "tls" / "ca.pem",
                            work_dir=workdir / "agents")
        await stack.enter_async_context(fleet)
        countries = "/".join(sim.countries)
        tls = workdir / "tls"
        print(f"""
edge telemetry pipeline running - Ctrl-C to stop{f' (or after {args.duration:g}s)' if args.duration else ''}
  Kafka               {bootstrap}  ({kafka_kind}), topic {settings.kafka.topic}
  ingest gRPC (TLS)   127.0.0.1:{ingest.port}  CA {tls / 'ca.pem'}, tokens {workdir / 'tokens.yaml'}
  ingest /metrics     http://127.0.0.1:{ingest.metrics_port}/metrics
  aggregate /metrics  http://127.0.0.1:{aggregator.metrics_port}/metrics
  simulated fleet     {sim.sites_per_country} sites per country ({countries}), \
{sim.links_per_site} links, {sim.cells_per_site} cells, {sim.hosts_per_site} hosts each, \
every {sim.interval_s:g}s at {sim.acceleration:g}x
  look at             curl -s http://127.0.0.1:{aggregator.metrics_port}/metrics | grep 'country="JP"' | head
""", flush=True)
        started = time.monotonic()
        deadline = started + args.duration if args.duration else None
        next_status = started + STATUS_EVERY_S
        while not stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            wake = min(next_status, deadline) if deadline else next_status
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.05, wake - now))
            if aggregator.failed.is_set():
                print(f"aggregator failed: {aggregator.failure!r}; stopping", flush=True)
                break
            if time.monotonic() >= next_status:
                next_status += STATUS_EVERY_S
                print(_status(ingest, aggregator, time.monotonic() - started), flush=True)
        print("stopping: fleet drains its spools, ingest answers in-flight batches, "
              "aggregator commits ...", flush=True)
    print("stopped", flush=True)
    return 1 if aggregator.failed.is_set() else 0
