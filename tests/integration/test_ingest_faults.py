"""Faults: the broker is paused (SIGSTOP) while agents stream, then resumed (SIGCONT)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from collector.broker import EmbeddedBroker
from collector.devcerts import DevCerts
from tests.conftest import make_topic
from tests.ingest_support import MiniAgent, channel, ingest_settings, started
from tests.kafka_support import read_topic
from tests.waiting import eventually

PAUSE_S = 6.0
SETTLE_S = 1.0  # Kafka answers already on the wire when the broker stopped may still arrive
MAX_INFLIGHT_BYTES = 64 * 1024


async def _health(port: int, certs: DevCerts) -> int:
    async with channel(port, certs) as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="telemetry.v1.IngestService"), timeout=5
        )
        return resp.status


async def test_broker_paused_nothing_acked_is_lost_and_memory_stays_bounded(
    own_broker: EmbeddedBroker, certs: DevCerts, tmp_path: Path
) -> None:
    topic = await make_topic(own_broker, partitions=2)
    settings = ingest_settings(
        tmp_path,
        certs,
        own_broker.bootstrap,
        topic,
        max_inflight_per_stream=16,
        max_inflight_total=64,
        max_inflight_bytes=MAX_INFLIGHT_BYTES,
        kafka={"produce_timeout_s": 2.0, "producer_rebuild_after": 2, "request_timeout_ms": 5000},
    )
    server = await started(settings)
    agents = [
        MiniAgent(server.port, certs, site, f"agent-{site}", total=400)
        for site in ("jp-tokyo-01", "us-dallas-01", "us-seattle-01")
    ]
    peak_bytes = 0.0
    try:
        runs = asyncio.gather(*(a.run(deadline_s=90) for a in agents))
        assert await eventually(lambda: sum(len(a.acked_at) for a in agents) >= 30, within=30.0)
        acked_before = sum(len(a.acked_at) for a in agents)
        rss_before = psutil.Process().memory_info().rss
        own_broker.pause()
        paused_at = time.monotonic()
        while time.monotonic() - paused_at < PAUSE_S:
            inflight = server.metrics.registry.get_sample_value("collector_ingest_inflight_bytes")
            peak_bytes = max(peak_bytes, inflight or 0.0)
            await asyncio.sleep(0.05)
        rss_growth = psutil.Process().memory_info().rss - rss_before
        status_paused = await _health(server.port, certs)
        own_broker.resume()
        resumed_at = time.monotonic()
        await asyncio.wait_for(runs, 120)
        status_after = await _health(server.port, certs)
    finally:
        own_broker.resume()
        await server.stop()

    assert acked_before > 0, "nothing flowed before the pause"
    # While Kafka could not answer, no batch was acknowledged.
    acked_in_pause = [
        s for a in agents for s, t in a.acked_at.items() if paused_at + SETTLE_S < t < resumed_at
    ]
    assert acked_in_pause == []
    assert status_paused == health_pb2.HealthCheckResponse.NOT_SERVING
    assert status_after == health_pb2.HealthCheckResponse.SERVING
    # Memory stayed bounded: in-flight bytes never passed the budget (+ one batch).
    assert peak_bytes <= MAX_INFLIGHT_BYTES + max(len(p) for a in agents for p in a.payload.values())
    # ... and the process (ingest and the agents) did not grow while the agents kept sending
    assert rss_growth < 64 * 1024 * 1024, rss_growth
    # Everything was acked in the end, and every acked seq is in Kafka.
    for a in agents:
        assert sorted(a.acked_at) == list(range(1, a.total + 1)), a.agent_id
    assert any(a.nacks for a in agents), "the pause produced no retriable nack: test did not bite"
    assert server.metrics.producer_rebuilds._value.get() >= 1  # the wedged producer was replaced
    records = await read_topic(own_broker.bootstrap, topic, sum(a.total for a in agents), 60)
    stored = {(dict(r.headers)["agent_id"].decode(), int(dict(r.headers)["seq"])) for r in records}
    missing = [(a.agent_id, s) for a in agents for s in a.acked_at if (a.agent_id, s) not in stored]
    assert missing == []
    # duplicates (a timed-out produce that landed later) carry the same bytes
    by_key: dict[tuple[str, int], set[bytes]] = {}
    for r in records:
        h = dict(r.headers)
        by_key.setdefault((h["agent_id"].decode(), int(h["seq"])), set()).add(r.value)
    assert all(len(v) == 1 for v in by_key.values())
