"""`collector ingest`: run the gRPC ingest service until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio

from collector.config import Settings
from collector.ingest.server import IngestServer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default kafka.bootstrap_servers)")


async def main(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    async with IngestServer(settings, bootstrap=args.bootstrap) as server:
        print(f"ingest ready: grpc port={server.port} metrics port={server.metrics_port}", flush=True)
        await stop.wait()
    return 0
