"""Simulator mode 2 (straight into Kafka) against the real Tansu broker."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import polars as pl
import pytest
import yaml

from collector import cli, wire
from collector.broker import EmbeddedBroker
from collector.config import Settings
from collector.simulate.bench import measure_generation
from collector.simulate.fleet import FleetRunner, Simulation
from collector.simulate.truth import DELIVERIES_FILE, META_FILE, WINDOWS_FILE
from tests.conftest import make_topic
from tests.kafka_support import read_topic
from tests.simulate_support import NS, START_S, decode, small, window_deltas
from tests.waiting import eventually


async def test_kafka_mode_writes_records_like_ingest_and_they_match_the_truth(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = await make_topic(broker)
    sim_settings = small(
        sites_per_country=2,
        reset_every_s=120,
        duplicate_probability=0.1,
        late_probability=0.1,
        silent_after_s=300,
        truth_windows_s=(60,),
    )
    settings = Settings(simulate=sim_settings)
    runner = FleetRunner(
        settings,
        bootstrap=broker.bootstrap,
        topic=topic,
        work_dir=tmp_path / "w",
        duration_s=900,
        truth_dir=tmp_path / "truth",
        start_ns=START_S * NS,
    )
    async with runner:
        await asyncio.wait_for(runner.wait(), 60)
    assert runner.drained is True
    deliveries = pl.read_parquet(tmp_path / "truth" / DELIVERIES_FILE)
    assert set(deliveries["kind"]) == {"normal", "duplicate", "late"}
    records = await read_topic(broker.bootstrap, topic, expect=len(deliveries))
    assert len(records) == len(deliveries) == runner.records

    for r in records:
        h = dict(r.headers)
        assert h["schema"] == b"telemetry.v1.Batch"
        b = wire.parse_batch(r.value)
        assert r.key == b.site.site_id.encode()
        assert h["agent_id"] == b.agent_id.encode()
        assert h["seq"] == str(b.seq).encode()

    # Same bytes, in the same per-site order, as a deterministic re-run without Kafka.
    again = Simulation(sim_settings, start_ns=START_S * NS)
    expected: dict[bytes, list[bytes]] = defaultdict(list)
    for b in again.run(90):
        expected[b.site.info.site_id.encode()].append(again.encode(b))
    got: dict[bytes, list[bytes]] = defaultdict(list)
    for r in records:
        got[r.key].append(r.value)
    assert got == expected

    # The truth agrees with what a reader of the topic derives (duplicates dropped).
    series, dups = decode(r.value for r in records)
    assert dups == int((deliveries["kind"] == "duplicate").sum())
    _, ref_site = window_deltas(series, 60)
    w = pl.read_parquet(tmp_path / "truth" / WINDOWS_FILE).filter(
        (pl.col("level") == "site") & (pl.col("kind") == "counter")
    )
    assert {
        (r["site_id"], r["metric"], r["window_start_unix_nano"]): r["delta"] for r in w.iter_rows(named=True)
    } == ref_site
    # the silent site stopped sending at its announced time
    meta = yaml.safe_load((tmp_path / "truth" / META_FILE).read_text())
    silent = [s for s in meta["sites"] if s["silent_from_unix_nano"]]
    assert len(silent) == 1
    last = max(k.time_unix_nano for key, v in series.items() if key[0] == silent[0]["site_id"] for k in v)
    assert last < silent[0]["silent_from_unix_nano"]


async def test_generation_measurement_writes_decodable_records(own_broker: EmbeddedBroker) -> None:
    # Its own broker: the records written are freed with it (Tansu keeps topics in memory).
    # The speed itself is bench/simulate.py's job (no timing assertion in tests): here the
    # measurement must run, be acknowledged by Kafka and leave records a reader can decode.
    broker = own_broker
    topic = await make_topic(broker)
    await measure_generation(broker.bootstrap, topic, 0.5)
    records = await read_topic(broker.bootstrap, topic, expect=10, timeout_s=30)
    assert len(records) >= 10
    for r in records[:10]:
        b = wire.parse_batch(r.value)
        assert r.key == b.site.site_id.encode()


def test_cli_simulate_writes_tokens_and_truth(broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic = asyncio.run(make_topic(broker))
    tokens = tmp_path / "tokens.yaml"
    assert cli.main(["simulate", "--write-tokens", str(tokens)]) == 0
    assert sorted(yaml.safe_load(tokens.read_text()).values())[:1] == ["jp-osaka-01"]
    truth = tmp_path / "truth"
    rc = cli.main(
        [
            "simulate",
            "--bootstrap",
            broker.bootstrap,
            "--topic",
            topic,
            "--fast-forward",
            "--duration",
            "300",
            "--truth",
            str(truth),
            "--start",
            str(START_S),
            "--seed",
            "5",
        ]
    )
    assert rc == 0
    meta = yaml.safe_load((truth / META_FILE).read_text())
    assert meta["ticks"] == 30
    assert meta["settings"]["seed"] == 5
    assert meta["calibration"]["JP"]["speed_mbps_mean"] == pytest.approx(217.11)


async def test_paced_run_follows_acceleration_and_stops_promptly(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = await make_topic(broker)
    paced = Settings(simulate=small(interval_s=1.0, jitter_s=0.01, acceleration=20.0))
    runner = FleetRunner(paced, bootstrap=broker.bootstrap, topic=topic, work_dir=tmp_path, duration_s=20)
    async with runner:
        await asyncio.wait_for(runner.wait(), 60)
    assert runner.sim.next_tick == 20
    assert runner.drained is True
    # batches of a paced run span at most about one wall second of simulated time
    assert runner.sim.planner.ticks_per_batch == 4  # batch_ticks 4 < 20 ticks per wall second

    # real time, no duration: stop() interrupts the wait for the next tick at once
    live = Settings(simulate=small(acceleration=1.0, start_unix_s=None))
    runner = FleetRunner(live, bootstrap=broker.bootstrap, topic=topic, work_dir=tmp_path)
    await runner.start()
    assert await eventually(lambda: runner.records >= 1, within=30)
    await asyncio.wait_for(runner.stop(), 30)
    # stop() did not wait for tick 1 (10 s away): it was never generated
    assert runner.sim.next_tick == 1
    assert runner.records >= 1
    assert runner.drained is True


def test_agent_mode_faster_than_real_time_replays_the_recent_past(tmp_path: Path) -> None:
    from collector.simulate.fleet import AGENT_BACKFILL_S

    s = Settings(simulate=small(acceleration=0.0, start_unix_s=None))
    runner = FleetRunner(s, target="127.0.0.1:1", tokens={}, ca_file=None, work_dir=tmp_path)
    lag = time.time() - runner.sim.start_ns / NS
    assert AGENT_BACKFILL_S <= lag < AGENT_BACKFILL_S + 60
    real_time = Settings(simulate=small(acceleration=1.0, start_unix_s=None))
    runner = FleetRunner(real_time, target="127.0.0.1:1", work_dir=tmp_path)
    assert abs(time.time() - runner.sim.start_ns / NS) < 60
