"""Simulator mode 1: every site a real agent (AgentPipeline) -> real ingest (TLS, per-site
token) -> real Tansu broker; the topic agrees with the ground truth."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import polars as pl
from prometheus_client import CollectorRegistry, generate_latest

from collector import wire
from collector.broker import EmbeddedBroker
from collector.config import load_settings
from collector.devcerts import DevCerts
from collector.ingest.server import IngestServer
from collector.simulate.fleet import FleetRunner, site_tokens, write_tokens_file
from collector.simulate.truth import DELIVERIES_FILE, EPOCHS_FILE, WINDOWS_FILE
from tests.conftest import make_topic
from tests.kafka_support import read_topic
from tests.simulate_support import NS, decode, small, window_deltas


async def test_agent_mode_streams_every_site_through_ingest_and_matches_truth(
    broker: EmbeddedBroker, certs: DevCerts, tmp_path: Path
) -> None:
    topic = await make_topic(broker)
    sim = small(
        sites_per_country=2,
        reset_every_s=90,
        duplicate_probability=0.1,
        late_probability=0.1,
        silent_after_s=250,
        truth_windows_s=(60,),
    )
    tokens = site_tokens(sim)
    settings = load_settings(
        kafka={"bootstrap_servers": broker.bootstrap, "topic": topic},
        ingest={
            "listen": "127.0.0.1:0",
            "metrics_listen": "",
            "tls_cert": str(certs.server_cert),
            "tls_key": str(certs.server_key),
            "tokens_file": str(write_tokens_file(tmp_path / "tokens.yaml", tokens)),
        },
        simulate=sim.model_dump(),
    )
    # Event time must be within the ingest's skew of now: run the last 400 s up to now.
    duration = 400
    start_ns = (time.time_ns() // (10 * NS) - duration // 10) * 10 * NS
    server = IngestServer(settings, bootstrap=broker.bootstrap)
    await server.start()
    try:
        reg = CollectorRegistry()
        runner = FleetRunner(
            settings,
            target=f"127.0.0.1:{server.port}",
            tokens=tokens,
            ca_file=certs.ca,
            work_dir=tmp_path / "spools",
            duration_s=duration,
            truth_dir=tmp_path / "truth",
            start_ns=start_ns,
            registry=reg,
        )
        async with runner:
            await asyncio.wait_for(runner.wait(), 90)
            metrics = generate_latest(reg).decode()
        assert runner.drained is True
        for site in tokens:  # every simulated agent reports its self-metrics
            assert f'collector_agent_batches_in_flight{{agent_id="sim-{site}"}} 0.0' in metrics
            assert f'collector_agent_batches_rejected_total{{agent_id="sim-{site}"}} 0.0' in metrics
    finally:
        await server.stop()

    deliveries = pl.read_parquet(tmp_path / "truth" / DELIVERIES_FILE)
    assert "duplicate" not in set(deliveries["kind"])  # agents cannot resend a seq on purpose
    assert (deliveries["kind"] == "late").any()
    records = await read_topic(broker.bootstrap, topic, expect=len(deliveries))
    # Every submitted batch is in the topic; a repeat only as the same (agent_id, seq, bytes).
    first: dict[tuple[str, int], bytes] = {}
    for r in records:
        b = wire.parse_batch(r.value)
        assert r.key == b.site.site_id.encode()
        prev = first.setdefault((b.agent_id, b.seq), r.value)
        assert prev == r.value
    submitted = {(a, s) for a, s in deliveries.select("agent_id", "seq").iter_rows()}
    assert set(first) == submitted

    # Restarts went through real pipeline restarts: several boot_ids per site in the topic.
    boots: dict[str, set[str]] = defaultdict(set)
    for r in records:
        b = wire.parse_batch(r.value)
        boots[b.site.site_id].add(b.boot_id)
    epochs = pl.read_parquet(tmp_path / "truth" / EPOCHS_FILE)
    assert max(len(v) for v in boots.values()) >= 2
    assert all(v <= set(epochs["boot_id"]) for v in boots.values())

    series, _ = decode(r.value for r in records)
    _, ref_site = window_deltas(series, 60)
    w = pl.read_parquet(tmp_path / "truth" / WINDOWS_FILE).filter(
        (pl.col("level") == "site") & (pl.col("kind") == "counter")
    )
    assert {
        (r["site_id"], r["metric"], r["window_start_unix_nano"]): r["delta"] for r in w.iter_rows(named=True)
    } == ref_site
    for site_dir in (tmp_path / "spools").iterdir():
        assert not list(site_dir.glob("*.seg")), site_dir


async def test_cli_agents_mode_plaintext_with_tokens_file(broker: EmbeddedBroker, tmp_path: Path) -> None:
    from collector.cli import build_parser
    from collector.simulate import main as simulate_main

    topic = await make_topic(broker)
    tokens_file = tmp_path / "tokens.yaml"
    sim = small(countries=("US",), duplicate_probability=0.0, late_probability=0.0)
    settings = load_settings(
        kafka={"bootstrap_servers": broker.bootstrap, "topic": topic},
        ingest={
            "listen": "127.0.0.1:0",
            "metrics_listen": "",
            "plaintext": True,
            "tokens_file": str(write_tokens_file(tokens_file, site_tokens(sim))),
        },
        simulate=sim.model_dump(),
    )
    server = IngestServer(settings)
    await server.start()
    try:
        start = time.time() // 10 * 10 - 100
        args = build_parser("simulate").parse_args(
            [
                "simulate",
                "--target",
                f"127.0.0.1:{server.port}",
                "--tokens-file",
                str(tokens_file),
                "--fast-forward",
                "--duration",
                "100",
                "--start",
                str(start),
                "--work-dir",
                str(tmp_path / "spools"),
                "--truth",
                str(tmp_path / "truth"),
            ]
        )
        rc = await asyncio.wait_for(simulate_main.main(settings, args, asyncio.Event()), 60)
    finally:
        await server.stop()
    assert rc == 0
    deliveries = pl.read_parquet(tmp_path / "truth" / DELIVERIES_FILE)
    records = await read_topic(broker.bootstrap, topic, expect=len(deliveries))
    assert {r.key for r in records} == {b"us-new-york-01"}
    heads = [dict(r.headers) for r in records]
    assert len({(h["agent_id"], h["seq"]) for h in heads}) == len(deliveries)


async def test_agent_mode_faster_than_real_time_is_accepted_by_ingest(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    from collector.simulate.fleet import AGENT_BACKFILL_S

    topic = await make_topic(broker)
    sim = small(
        countries=("JP",),
        acceleration=7200.0,
        start_unix_s=None,
        duplicate_probability=0.0,
        late_probability=0.0,
    )
    tokens = site_tokens(sim)
    settings = load_settings(
        kafka={"bootstrap_servers": broker.bootstrap, "topic": topic},
        ingest={
            "listen": "127.0.0.1:0",
            "metrics_listen": "",
            "plaintext": True,
            "tokens_file": str(write_tokens_file(tmp_path / "tokens.yaml", tokens)),
        },
        simulate=sim.model_dump(),
    )
    server = IngestServer(settings)
    await server.start()
    try:
        reg = CollectorRegistry()
        runner = FleetRunner(
            settings,
            target=f"127.0.0.1:{server.port}",
            tokens=tokens,
            work_dir=tmp_path / "spools",
            duration_s=3600,
            registry=reg,
        )
        async with runner:
            await asyncio.wait_for(runner.wait(), 30)
            metrics = generate_latest(reg).decode()
        assert runner.drained is True
    finally:
        await server.stop()
    assert 'collector_agent_batches_rejected_total{agent_id="sim-jp-tokyo-01"} 0.0' in metrics
    records = await read_topic(broker.bootstrap, topic, expect=runner.records)
    assert len({(dict(r.headers)["seq"]) for r in records}) == runner.records
    t = [
        int(wire.gauge_columns(wire.parse_batch(r.value)).time_unix_nano.min())
        for r in records
        if wire.parse_batch(r.value).gauges.time_unix_nano
    ]
    assert t
    # replayed 6 days back: far older than the ingest's future skew allows to be ahead
    assert time.time() - AGENT_BACKFILL_S - 60 < min(t) / NS < time.time() - AGENT_BACKFILL_S + 60
    assert max(t) / NS < time.time() - AGENT_BACKFILL_S + 3600 + 60
