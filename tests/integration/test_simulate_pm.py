"""The simulator's gNBs write TS 32.435 PM files; each site's agent reads them with its real
cell source (parse -> spool), streams them over TLS to the ingest -> Tansu -> the aggregator,
and the JP and US cell metrics on /metrics equal the simulator's truth for every cell."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from collector.aggregate.service import Aggregator
from collector.broker import EmbeddedBroker
from collector.config import load_settings
from collector.devcerts import DevCerts
from collector.ingest.server import IngestServer
from collector.simulate.fleet import FleetRunner, site_tokens, write_tokens_file
from tests.aggregate_support import http_request
from tests.conftest import make_topic
from tests.simulate_support import NS, small
from tests.waiting import eventually

PERIOD_S = 60


def _published(text: str) -> dict[tuple[str, str, str, str], float]:
    """(site, cell, family/direction, stat) -> value of the PM cell metrics (window 1m)."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            lb = s.labels
            if not s.name.startswith("edge_cell_") or lb.get("window") != "1m":
                continue
            if lb.get("stat", "avg") != ("max" if s.name.endswith("_peak") else "avg"):
                continue
            key = s.name + (f"/{lb['direction']}" if lb.get("direction") else "")
            key += f"/le={lb['le']}" if "le" in lb else ""  # histogram buckets
            out[(lb["site"], lb["cell"], key, lb.get("country", ""))] = s.value
    return out


async def test_simulated_pm_files_reach_metrics_equal_to_the_truth_for_jp_and_us(
    broker: EmbeddedBroker, certs: DevCerts, tmp_path: Path
) -> None:
    topic = await make_topic(broker)
    sim = small(
        sites_per_country=1,
        cells_per_site=3,
        pm_files=True,
        pm_granularity_s=PERIOD_S,
        reset_every_s=0,
        silent_after_s=0,
        gap_probability=0,
        interval_s=5.0,
        jitter_s=0.0,
    )
    tokens = site_tokens(sim)
    settings = load_settings(
        kafka={"bootstrap_servers": broker.bootstrap, "topic": topic, "dead_letter_topic": f"{topic}.dlq"},
        ingest={
            "listen": "127.0.0.1:0",
            "metrics_listen": "",
            "tls_cert": str(certs.server_cert),
            "tls_key": str(certs.server_key),
            "tokens_file": str(write_tokens_file(tmp_path / "tokens.yaml", tokens)),
        },
        aggregate={
            "metrics_listen": "127.0.0.1:0",
            "group_id": f"g-{topic}",
            "state_topic": f"{topic}.state",
            "checkpoint_interval_s": 0.5,
            "session_timeout_ms": 3000,
            "heartbeat_interval_ms": 500,
        },
        simulate=sim.model_dump(),
    )
    # The last 6 whole periods up to now (event time within the ingest's skew of now).
    duration = 6 * PERIOD_S + 10
    start_ns = (time.time_ns() // (PERIOD_S * NS) - 7) * PERIOD_S * NS
    server = IngestServer(settings, bootstrap=broker.bootstrap)
    await server.start()
    try:
        async with Aggregator(settings, bootstrap=broker.bootstrap, registry=CollectorRegistry()) as agg:
            runner = FleetRunner(
                settings,
                target=f"127.0.0.1:{server.port}",
                tokens=tokens,
                ca_file=certs.ca,
                work_dir=tmp_path / "agents",
                duration_s=duration,
                start_ns=start_ns,
            )
            async with runner:
                await asyncio.wait_for(runner.wait(), 120)
            assert runner.drained is True
            writer = runner.sink.pm  # type: ignore[attr-defined]
            assert writer is not None
            assert writer.files >= 2 * 5  # both sites, every whole period
            newest: dict[tuple[str, str], int] = {}
            for site, _gnb, cell, end in writer.truth:
                newest[(site, cell)] = max(end, newest.get((site, cell), 0))
            want = {
                (site, cell, k): v
                for (site, _gnb, cell, end), fig in writer.truth.items()
                if end == newest[(site, cell)]
                for k, v in fig.items()
            }
            got: dict[tuple[str, str, str, str], float] = {}

            async def all_published() -> bool:
                nonlocal got
                got = _published((await http_request(agg.metrics_port))[2].decode())
                by_key = {(s, c, k): v for (s, c, k, _), v in got.items()}
                return all(k in by_key and by_key[k] == by_key[k] for k in want) and all(
                    abs(by_key[k] - v) <= 1e-12 * max(1.0, abs(v)) for k, v in want.items()
                )

            await eventually(all_published, within=60, step=0.5)  # asserted key by key below
            by_key = {(s, c, k): v for (s, c, k, _), v in got.items()}
            missing = [k for k in want if k not in by_key]
            assert not missing, missing[:5]
            for k, v in want.items():
                assert abs(by_key[k] - v) <= 1e-12 * max(1.0, abs(v)), (k, by_key[k], v)
            countries = {c for (_, _, _, c) in got}
            assert countries == {"JP", "US"}
            print("\nsite cell metric | truth | published")
            for k in sorted(want):
                print(f"{k} | {want[k]!r} | {by_key[k]!r}")
    finally:
        await server.stop()
