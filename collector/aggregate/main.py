"""`collector aggregate`: run one aggregator member until SIGINT/SIGTERM.

Several of these with the same `aggregate.group_id` split the telemetry topic's partitions;
each serves /metrics for the sites it owns. The embedded broker is not started here: point
`kafka.bootstrap_servers` (or --bootstrap) at Kafka, or use `collector run` for everything
in one command.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from collector.aggregate.service import Aggregator
from collector.config import Settings
from collector.errors import ConfigError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: kafka.bootstrap_servers)")
    parser.add_argument("--metrics-listen", help="HOST:PORT for /metrics (default: aggregate.metrics_listen)")
    parser.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (0: run until interrupted)"
    )


async def main(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    bootstrap = args.bootstrap or settings.kafka.bootstrap_servers
    if not bootstrap:
        raise ConfigError(
            "no Kafka to consume from: set it or pass --bootstrap "
            "(`collector run` starts an embedded broker)",
            key="kafka.bootstrap_servers",
        )
    if args.metrics_listen:
        settings = settings.model_copy(
            update={
                "aggregate": settings.aggregate.model_copy(update={"metrics_listen": args.metrics_listen})
            }
        )
    async with Aggregator(settings, bootstrap=bootstrap) as agg:
        if agg.metrics_port:
            scheme = "https" if agg.metrics_tls else "http"
            print(f"aggregator /metrics: {scheme}://127.0.0.1:{agg.metrics_port}/metrics", flush=True)
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(agg.failed.wait())]
        await asyncio.wait(
            waits, timeout=args.duration if args.duration > 0 else None, return_when=asyncio.FIRST_COMPLETED
        )
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    if agg.failed.is_set():
        log.error("aggregator failed: %r; exiting with status 1", agg.failure)
        return 1
    return 0
