"""Every Kafka client of the product connects with `kafka.security_protocol: SSL` (mutual TLS).

Tansu speaks plaintext only, so socat terminates TLS in front of it (and asks the client for a
certificate signed by the test CA), and the broker advertises the TLS address: bootstrap and
every later connection (metadata, partition leader, group coordinator) go through the
handshake. The clients are built by collector/kafka.py alone: `collector run`'s topic
set-up (admin), the ingest's KafkaWriter (producer), the aggregator (admin, producer,
consumers). A client without its certificate is refused, so the TLS settings are in effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from collector import kafka
from collector.aggregate.service import Aggregator
from collector.broker import find_tansu, free_port
from collector.config import Settings
from collector.devcerts import DevCerts
from collector.errors import BrokerError
from collector.ingest.producer import KafkaWriter
from collector.run import ensure_topics
from tests.aggregate_support import NS, SeriesDef, aggregator_settings, make_batch
from tests.waiting import eventually

T0 = 1_764_000_000 * NS


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL, to the process group of a child we started (socat forks one
    child per connection)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


@pytest_asyncio.fixture
async def tls_bootstrap(certs: DevCerts, tmp_path: Path) -> AsyncIterator[str]:
    """127.0.0.1:<port> of a Tansu broker reachable only through mutual TLS."""
    plain, tls = free_port(), free_port()
    log = (tmp_path / "tls-broker.log").open("ab")
    procs = [
        subprocess.Popen(
            [
                str(find_tansu()),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{plain}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{tls}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        ),
        subprocess.Popen(
            [
                "socat",
                f"OPENSSL-LISTEN:{tls},bind=127.0.0.1,reuseaddr,fork,cert={certs.server_cert},"
                f"key={certs.server_key},cafile={certs.ca},verify=1",
                f"TCP:127.0.0.1:{plain}",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        ),
    ]
    try:
        ready = await eventually(lambda: _listening(plain) and _listening(tls), 30)
        assert ready, f"broker or TLS proxy not listening (see {tmp_path / 'tls-broker.log'})"
        yield f"127.0.0.1:{tls}"
    finally:
        for p in procs:
            _stop(p)
        log.close()


def _settings(certs: DevCerts, topic: str, **tls: object) -> Settings:
    kafka_tls = {
        "security_protocol": "SSL",
        "ssl_cafile": str(certs.ca),
        "ssl_certfile": str(certs.client_cert),
        "ssl_keyfile": str(certs.client_key),
        **tls,
    }
    return aggregator_settings(
        topic,
        f"{topic}.dlq",
        kafka={
            "request_timeout_ms": 15_000,
            "produce_timeout_s": 30,  # roomy: the gate runs on a loaded machine
            **kafka_tls,
        },
        broker={"partitions": 2},
        metrics_listen="",
    )


def _batch(seq: int) -> bytes:
    series = [SeriesDef("link_in_octets", {"link": f"et-{i}", "media": "optical"}) for i in range(4)]
    return make_batch(
        agent="agent-tls",
        seq=seq,
        site="jp-tokyo-01",
        series=series,
        counters=[(i, T0 + seq * 10 * NS, seq * 10**12 + i) for i in range(4)],
    )


async def test_every_client_works_over_mutual_tls(certs: DevCerts, tls_bootstrap: str) -> None:
    settings = _settings(certs, "tls-telemetry")
    created = await ensure_topics(settings, tls_bootstrap)  # collector run's admin client
    assert set(created) == {"tls-telemetry", "tls-telemetry.dlq"}

    writer = KafkaWriter(settings.kafka, tls_bootstrap)  # the ingest's producer
    await writer.start()
    try:
        for seq in range(1, 7):
            await writer.write(b"jp-tokyo-01", _batch(seq), "agent-tls", seq)
    finally:
        await writer.stop()

    consumer = AIOKafkaConsumer(
        **kafka.client_kwargs(settings.kafka, tls_bootstrap), enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition("tls-telemetry", p) for p in (0, 1)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list = []
        for _ in range(120):
            for recs in (await consumer.getmany(*tps, timeout_ms=500)).values():
                records.extend(recs)
            if len(records) >= 6:
                break
    finally:
        await consumer.stop()
    assert sorted(r.value for r in records) == sorted(_batch(seq) for seq in range(1, 7))
    for r in records:
        seq = int(dict(r.headers)["seq"])
        assert list(r.headers) == kafka.record_headers("agent-tls", seq)

    # the aggregator: admin (state topic), consumer group, checkpoint producer and pointer
    registry = CollectorRegistry()
    async with Aggregator(settings, bootstrap=tls_bootstrap, registry=registry) as agg:

        def consumed() -> float:
            return sum(
                registry.get_sample_value("collector_aggregate_records_total", {"partition": str(p)}) or 0
                for p in (0, 1)
            )

        assert await eventually(lambda: consumed() == 6, within=60), consumed()
        assert await eventually(
            lambda: (registry.get_sample_value("collector_aggregate_checkpoints_total") or 0) > 0, within=60
        )
        assert not agg.failed.is_set()


async def test_a_client_without_its_certificate_or_without_tls_is_refused(
    certs: DevCerts, tls_bootstrap: str
) -> None:
    settings = _settings(certs, "tls-refused")
    await ensure_topics(settings, tls_bootstrap)
    for k in (
        _settings(certs, "tls-refused", ssl_certfile=None, ssl_keyfile=None).kafka,  # no client certificate
        settings.kafka.model_copy(update={"security_protocol": "PLAINTEXT"}),
    ):
        writer = KafkaWriter(k, tls_bootstrap)
        with pytest.raises(BrokerError, match="cannot reach Kafka"):
            await writer.start()
        admin = AIOKafkaAdminClient(**kafka.client_kwargs(k, tls_bootstrap))
        with pytest.raises((KafkaError, OSError, TimeoutError)):
            await asyncio.wait_for(admin.start(), 10)
        await admin.close()
