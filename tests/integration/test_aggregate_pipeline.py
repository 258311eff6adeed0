"""The aggregator against the real broker: windows equal ground truth, poison records go to
the dead-letter topic, /metrics passes promtool, and a real Prometheus sees JP and US."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from collector.aggregate.service import Aggregator
from collector.aggregate.window_log import window_records
from collector.broker import EmbeddedBroker, TopicSpec, free_port
from collector.errors import BrokerError
from tests.aggregate_support import (
    aggregator_settings as _settings,
)
from tests.aggregate_support import (
    final_boundary,
    http_request,
    make_fleet,
    produce,
    published,
    truth_windows,
)
from tests.conftest import make_topic
from tests.waiting import eventually

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SITES = (("jp-tokyo-01", "JP", "Kanto"), ("us-nyc-01", "US", "us-east"))


async def test_windows_equal_truth_poison_to_dlq_and_promtool_passes(broker: EmbeddedBroker) -> None:
    topic = await make_topic(broker, 3)
    dlq = await make_topic(broker, 1, prefix="dlq")
    fleet = make_fleet(n_batches=40, sites=SITES)
    part = {"jp-tokyo-01": 0, "us-nyc-01": 2}
    truncated = fleet.records[3][1][:-9]
    rng = random.Random(7)
    poison = [("jp-tokyo-01", bytes(rng.getrandbits(8) for _ in range(200))), ("jp-tokyo-01", truncated)]
    records = fleet.records[:20] + poison + fleet.records[20:]
    ends = await produce(broker.bootstrap, topic, records, part)
    rows: list[dict] = []
    settings = _settings(topic, dlq)
    async with Aggregator(
        settings,
        bootstrap=broker.bootstrap,
        registry=CollectorRegistry(),
        on_window=lambda p, w, c, g: rows.extend(window_records(p, w, c, g)),
    ) as agg:
        assert agg.metrics_port > 0
        assert await eventually(
            lambda: all(p in agg.states and agg.states[p].next_offset == end for p, end in ends.items()),
            within=60,
        ), "all records consumed"
        upto = final_boundary(fleet)
        assert await eventually(lambda: all(agg.states[p].closed_ns == upto for p in ends), within=30), (
            "final close"
        )
        # the dead-letter produce is awaited after the poll that read the poison records
        assert await eventually(
            lambda: agg.registry.get_sample_value("collector_aggregate_dead_letter_records_total") == 2,
            within=30,
        ), "dead letters"
        status, headers, body = await http_request(agg.metrics_port)
        assert status == 200
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
    got = published(rows)
    want = truth_windows(fleet, settings.aggregate.windows_s, settings.aggregate.pane_s, upto)
    assert got == want
    res = await asyncio.to_thread(
        subprocess.run,
        [PROMTOOL, "check", "metrics"],
        input=body,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
    text = body.decode()
    assert (
        'collector_aggregate_decode_errors_total{reason="not_a_batch"}' in text
        or 'collector_aggregate_decode_errors_total{reason="columns"}' in text
    )
    assert "collector_aggregate_dead_letter_records_total 2.0" in text
    for self_metric in (
        'collector_aggregate_records_total{partition="0"}',
        'collector_aggregate_event_time_lag_seconds{partition="2"}',
        "collector_aggregate_window_close_latency_seconds_count",
        "collector_aggregate_partitions_assigned 3.0",
        'collector_site_completeness_ratio{site="us-nyc-01"',
    ):
        assert self_metric in text, self_metric
    assert 'edge_site_link_throughput_bytes_per_second{site="us-nyc-01",country="US"' in text
    assert (
        'collector_site_samples_dropped_total{site="jp-tokyo-01",country="JP",region="Kanto",'
        'reason="duplicate"}' in text
    )
    # the dead-letter topic holds the two poison records, unchanged, with a reason
    c = AIOKafkaConsumer(dlq, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
    await c.start()
    try:
        got_dlq: list = []

        async def both_read() -> bool:
            for recs in (await c.getmany(timeout_ms=500)).values():
                got_dlq.extend(recs)
            return len(got_dlq) >= 2

        await eventually(both_read, within=20)
    finally:
        await c.stop()
    assert sorted(r.value for r in got_dlq) == sorted(v for _, v in poison)
    assert all(dict(r.headers).get("dlq_reason") for r in got_dlq)


async def test_real_prometheus_scrapes_and_queries_by_country(broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic = await make_topic(broker, 2)
    dlq = await make_topic(broker, 1, prefix="dlq")
    fleet = make_fleet(n_batches=20, sites=SITES, late=(), swap=(), gap=(), reset_at=None)
    await produce(broker.bootstrap, topic, fleet.records, {"jp-tokyo-01": 0, "us-nyc-01": 1})
    async with Aggregator(_settings(topic, dlq), bootstrap=broker.bootstrap) as agg:
        assert await eventually(
            lambda: len(agg.states) == 2 and all(len(s.latest_counters[10]) for s in agg.states.values()),
            within=60,
        ), "windows"
        port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: aggregate\n    static_configs: [{{targets: ['127.0.0.1:{agg.metrics_port}']}}]\n"
        )
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        try:
            q = 'sum by (country) (edge_site_link_throughput_bytes_per_second{window="10s"})'
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            countries: set[str] = set()

            async def both_countries() -> bool:
                nonlocal countries
                with contextlib.suppress(OSError):
                    data = await asyncio.to_thread(
                        lambda: json.loads(urllib.request.urlopen(url, timeout=5).read())
                    )
                    countries = {
                        r["metric"].get("country") for r in data["data"]["result"] if float(r["value"][1]) > 0
                    }
                return countries == {"JP", "US"}

            await eventually(both_countries, within=60, step=0.5)
            assert countries == {"JP", "US"}, (tmp_path / "prometheus.log").read_text()[-2000:]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
            log.close()


async def test_missing_topic_is_a_clear_error_at_start() -> None:
    async with EmbeddedBroker(topics=(TopicSpec("other", 1, 600_000),)) as b:
        agg = Aggregator(_settings("missing-topic", "dlq"), bootstrap=b.bootstrap)
        with pytest.raises(BrokerError, match="missing-topic"):
            await agg.start()
        await agg.stop()


async def test_start_and_stop_are_idempotent(broker: EmbeddedBroker) -> None:
    topic = await make_topic(broker, 1)
    agg = Aggregator(_settings(topic, "dlq-unused"), bootstrap=broker.bootstrap)
    await agg.start()
    port = agg.metrics_port
    await agg.start()
    assert agg.metrics_port == port > 0
    await agg.stop()
    await agg.stop()
    assert agg.metrics_port == 0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def _put_checkpoint(bootstrap: str, state_topic: str, group: str, value: bytes) -> None:
    """Write one checkpoint record to partition 0 of the state topic and point the
    `<group>.checkpoints` offsets at it, as a previous owner would have."""
    from aiokafka import AIOKafkaProducer, TopicPartition

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await p.start()
    try:
        md = await p.send_and_wait(
            state_topic, value, partition=0, headers=[("snapshot", b"s1"), ("chunk", b"0/1")]
        )
    finally:
        await p.stop()
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group + ".checkpoints", enable_auto_commit=False
    )
    await c.start()
    try:
        stp = TopicPartition(state_topic, 0)
        c.assign([stp])
        await c.commit({stp: md.offset})
    finally:
        await c.stop()


async def test_unreadable_checkpoint_pauses_the_partition_until_restored(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Consuming a partition without its state would publish wrong windows and commit past
    them: it stays paused (and counted) until its checkpoint can be read."""
    import collector.aggregate.service as service
    from collector.aggregate.state import PartitionState

    monkeypatch.setattr(service, "_RESTORE_RETRY_S", 0.5)
    topic = await make_topic(broker, 1)
    dlq = await make_topic(broker, 1, prefix="dlq")
    settings = _settings(topic, dlq)
    state_topic, group = settings.aggregate.state_topic, settings.aggregate.group_id
    await broker.create_topics([TopicSpec(state_topic, 1, 3_600_000)])
    await _put_checkpoint(broker.bootstrap, state_topic, group, b"\x07not a checkpoint")
    fleet = make_fleet(n_batches=10, sites=SITES[:1], late=(), swap=(), gap=(), reset_at=None)
    ends = await produce(broker.bootstrap, topic, fleet.records, {SITES[0][0]: 0})
    async with Aggregator(settings, bootstrap=broker.bootstrap, registry=CollectorRegistry()) as agg:
        paused = agg.registry.get_sample_value
        assert await eventually(lambda: paused("collector_aggregate_partitions_paused") == 1, within=30), (
            "paused"
        )

        def failed_restores() -> int:
            return sum("checkpoint not restored" in r.getMessage() for r in caplog.records)

        # several failed retries, and the partition is still paused and unread
        assert await eventually(lambda: failed_restores() >= 3, within=30), caplog.text[-2000:]
        assert not agg.states
        assert paused("collector_aggregate_records_total", {"partition": "0"}) is None
        # a readable checkpoint (an empty state at offset 0) appears: the partition resumes
        empty = PartitionState(0, settings.aggregate)
        empty.next_offset = 0
        await _put_checkpoint(broker.bootstrap, state_topic, group, empty.snapshot())
        assert await eventually(
            lambda: 0 in agg.states and agg.states[0].next_offset == ends[0], within=30
        ), "resumed and consumed"
        assert paused("collector_aggregate_partitions_paused") == 0
        assert paused("collector_aggregate_restores_total") == 1
        assert paused("collector_aggregate_samples_total") == sum(len(v) for v in fleet.counted.values())


async def test_unexpected_error_in_the_loop_fails_the_member_loudly(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug (here injected into record processing) must not leave a live /metrics over a
    # dead consume loop: the member reports failure and `collector aggregate` exits 1 so
    # its supervisor restarts it from the checkpoints.
    from argparse import Namespace

    from collector.aggregate import main as aggregate_main

    topic = await make_topic(broker, 1)
    settings = _settings(topic, "dlq-unused")
    fleet = make_fleet(n_batches=30, sites=SITES[:1])

    def broken(self: Aggregator, batch: dict) -> list:  # type: ignore[type-arg]
        if any(batch.values()):
            raise RuntimeError("injected bug")
        return []

    monkeypatch.setattr(Aggregator, "_process", broken)
    # --duration far beyond the wait below: only the failure can end the member in time
    args = Namespace(bootstrap=broker.bootstrap, metrics_listen=None, duration=3600.0)
    run = asyncio.create_task(aggregate_main.main(settings, args, asyncio.Event()))
    await produce(broker.bootstrap, topic, fleet.records, {"jp-tokyo-01": 0})
    rc = await asyncio.wait_for(run, 120)
    assert rc == 1


def test_unreachable_kafka_at_start_is_one_line_naming_the_address() -> None:
    port = free_port()  # nothing listens there
    collector = Path(sys.executable).with_name("collector")
    res = subprocess.run(
        [str(collector), "aggregate", "--bootstrap", f"127.0.0.1:{port}", "--metrics-listen", "127.0.0.1:0"],
        capture_output=True,
        timeout=120,
    )
    err = res.stderr.decode().strip()
    assert res.returncode == 1, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert f"127.0.0.1:{port}" in err
    assert "unreachable" in err
