"""`collector agent` with the cell source's simulated adapter -> real ingest -> real Tansu
broker: the simulator's 5G NR cell KPIs arrive as the generator made them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from collector import wire
from collector.broker import EmbeddedBroker
from collector.devcerts import DevCerts
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from collector.simulate.config import SimulateSettings
from collector.simulate.generator import FleetGenerator
from collector.simulate.topology import CELL_COUNTERS, CELL_GAUGES, FleetModel
from tests.agent_support import SITE, agent_tls, site_section, spooled_seqs, topic_batches, write_yaml
from tests.ingest_support import ingest_settings, started, token_for
from tests.procs import collector_process

NS = 10**9
CELLS = 6


async def test_agent_process_delivers_simulated_cells_through_ingest_to_the_topic(
    broker: EmbeddedBroker, topic: str, certs: DevCerts, tmp_path: Path
) -> None:
    server = await started(ingest_settings(tmp_path, certs, broker.bootstrap, topic))
    start = int(time.time()) - 120  # the simulated run started 120 one-second ticks ago
    options = {
        "seed": 11,
        "country": "JP",
        "site": 1,
        "cells": CELLS,
        "interval_s": 1.0,
        "start_unix_s": start,
    }
    spool = tmp_path / "spool"
    cfg = write_yaml(
        tmp_path / "agent.yaml",
        {
            "agent": {
                "agent_id": "agent-sim-cells",
                "site": site_section(),
                "ingest": agent_tls(
                    certs, f"127.0.0.1:{server.port}", token_for(SITE.site_id), server_name="localhost"
                ),
                "spool": {"dir": str(spool)},
                "metrics_listen": "",
                "shutdown_grace_s": 15.0,
                "sources": {
                    "server": {"enabled": False},
                    "link": {"enabled": False},
                    "cell": {"enabled": True, "adapter": "simulated", "interval_s": 1.0, "options": options},
                },
            }
        },
    )
    agent = collector_process(["agent", "--config", str(cfg), "--once"], tmp_path / "agent.log")
    try:
        await agent.start()
        assert agent.proc is not None
        async with asyncio.timeout(30):
            rc = await agent.proc.wait()
        assert rc == 0, agent.log()  # 0: collected and every batch acked
    finally:
        await agent.kill()
        await server.stop()
    got = [b for b in await topic_batches(broker.bootstrap, topic, 1) if b.agent_id == "agent-sim-cells"]
    assert [b.seq for b in got] == [1]
    batch = pb.Batch.FromString(got[0].value)
    assert len(batch.series) == CELLS * (len(CELL_COUNTERS) + len(CELL_GAUGES))
    # the values the simulator's generator gives that site at the tick the agent read
    m = FleetModel(
        SimulateSettings.model_validate(
            dict(
                seed=11,
                countries=("JP",),
                sites_per_country=2,
                links_per_site=0,
                cells_per_site=CELLS,
                hosts_per_site=0,
                record_link=False,
                interval_s=1.0,
                jitter_s=0.0,
                start_unix_s=start,
                clear_every_s=0.0,
                reset_every_s=0.0,
                gap_probability=0.0,
                silent_after_s=0.0,
            )
        )
    )
    counters = wire.counter_columns(batch)
    (t,) = set(counters.time_unix_nano.tolist())
    tick = (t - start * NS) // NS
    assert t == (start + tick) * NS  # on a tick of the simulated run
    assert tick >= 120
    block = FleetGenerator(m, start * NS).block(tick + 1)
    row = {(c.metric, c.labels): i for i, c in enumerate(m.counters) if c.site == 1}
    grow = {(g.metric, g.labels): i for i, g in enumerate(m.gauges) if g.site == 1}
    for i, v in zip(counters.series_index, counters.value.tolist(), strict=True):
        s = batch.series[i]
        key = (s.metric, tuple(sorted((lab.name, lab.value) for lab in s.labels)))
        assert v == int(block.values[row[key], tick]), s.metric  # exact integers end to end
        assert s.counter_bits == 64
        assert s.start_time_unix_nano == int(block.start[row[key], tick]) > 0
    gauges = wire.gauge_columns(batch)
    assert len(gauges.value) == CELLS * len(CELL_GAUGES)
    for i, v in zip(gauges.series_index, gauges.value.tolist(), strict=True):
        s = batch.series[i]
        key = (s.metric, tuple(sorted((lab.name, lab.value) for lab in s.labels)))
        assert v == block.gauges[grow[key], tick], s.metric
    assert not spooled_seqs(spool)
