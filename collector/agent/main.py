"""`collector agent --config agent.yaml`: collect this site's telemetry, spool it, stream it.

Wires the enabled sources (server, link, cell) to one AgentPipeline (spool + sender) and
serves the agent's own /metrics. Runs until SIGINT/SIGTERM; then stops collecting, keeps
sending for `shutdown_grace_s`, and leaves whatever is unacked in the spool for next time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import socket
import uuid
from typing import Any

from prometheus_client import CollectorRegistry

from collector.agent.batch import SiteInfo
from collector.agent.config import ID_PATTERN, AgentSettings
from collector.agent.metrics import collector_for
from collector.agent.pipeline import AgentPipeline
from collector.agent.sources import Source, collect_once, run_source
from collector.catalog import COUNTRIES
from collector.errors import ConfigError
from collector.exposition.http import MetricsServer, serve_metrics

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--once", action="store_true", help="collect every enabled source once, deliver, and exit"
    )


def build_sources(a: AgentSettings) -> list[Source]:
    sources: list[Source] = []
    src = a.sources
    if src.server.enabled:
        from collector.agent.sources.server import ServerSource

        sources.append(ServerSource(src.server))
    if src.link.enabled:
        from collector.agent.sources.link import LinkSource

        sources.append(LinkSource(src.link))
    if src.cell.enabled:
        from collector.agent.sources.cell import CellSource

        sources.append(CellSource(src.cell, max_batch_bytes=a.ingest.max_batch_bytes))
    return sources


def site_of(a: AgentSettings) -> SiteInfo:
    s = a.site
    if not s.site_id:
        raise ConfigError("the agent needs a site", key="agent.site.site_id")
    if s.country not in COUNTRIES:
        raise ConfigError(f"not an ISO 3166-1 alpha-2 code: {s.country!r}", key="agent.site.country")
    return SiteInfo(s.site_id, s.country, s.region, s.timezone)


async def main(settings: Any, args: argparse.Namespace, stop: asyncio.Event) -> int:
    a: AgentSettings = settings.agent
    site = site_of(a)
    agent_id = a.agent_id or f"{site.site_id}-{socket.gethostname()}"
    if not re.fullmatch(ID_PATTERN, agent_id):
        raise ConfigError(
            f"{agent_id!r} (site_id-hostname) is not a valid agent id: set one "
            "([A-Za-z0-9][A-Za-z0-9._:-]*, at most 64 characters)",
            key="agent.agent_id",
        )
    registry = CollectorRegistry()
    pipeline = AgentPipeline(
        a, agent_id=agent_id, site=site, boot_id=uuid.uuid4().hex, spool_dir=a.spool.dir, registry=registry
    )
    sources = build_sources(a)
    coll = collector_for(registry)
    for s in sources:
        coll.add_source(agent_id, s.name, s.stats)
    http: MetricsServer | None = None
    if a.metrics_listen:
        listen = a.metrics_listen
        if listen.startswith(":"):
            listen = "127.0.0.1" + listen  # an agent without a host serves loopback only
        http = await serve_metrics("agent", listen, a.metrics_web_config, registry)
    metrics_port = http.bound_port if http is not None else 0
    try:
        async with pipeline:
            print(
                f"agent ready: agent_id={agent_id} last_seq={pipeline.spool.last_seq} "
                f"spooled={len(pipeline.spool)} metrics port={metrics_port}",
                flush=True,
            )
            if args.once:
                for s in sources:
                    await collect_once(s, pipeline)
                drained = await pipeline.wait_drained(a.shutdown_grace_s)
                return 0 if drained else 3
            tasks = [
                asyncio.create_task(run_source(s, pipeline, stop), name=f"source-{s.name}") for s in sources
            ]
            await stop.wait()
            await asyncio.gather(*tasks)
            st = pipeline.stats
            log.info(
                "stopping: %d batches still spooled, %d sent, %d acked", st.spool_batches, st.sent, st.acked
            )
    finally:
        for s in sources:
            await s.close()
        if http is not None:
            await http.stop()
    return 0
