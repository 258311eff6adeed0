"""`collector broker`: run the embedded Tansu broker in the foreground until stopped."""

from __future__ import annotations

import argparse
import asyncio

from collector.broker import EmbeddedBroker, topics_for
from collector.config import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="listen port (default broker.port, 0 = free)")


async def main(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    b = settings.broker
    port = args.port if args.port is not None else b.port
    async with EmbeddedBroker(
        host=b.host,
        port=port,
        binary=b.binary,
        topics=topics_for(settings),
        startup_timeout_s=b.startup_timeout_s,
    ) as broker:
        print(f"embedded broker ready: bootstrap={broker.bootstrap} pid={broker.pid}", flush=True)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                if broker.proc is None or broker.proc.poll() is not None:
                    print("embedded broker exited unexpectedly", flush=True)
                    return 1
    return 0
