"""KafkaWriter against the real Tansu broker: records gathered into per-partition batches.

The ingest hands records to aiokafka as whole batches (`send_batch`), so these check what
that must not change: the partition is the one aiokafka's own `send()` picks for the key,
order per key is kept across batch roll-overs, every record's delivery resolves (stored,
or failed with a reason) and nothing is left waiting at stop.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from collector.broker import EmbeddedBroker
from collector.config import KafkaSettings
from collector.errors import BrokerError
from collector.ingest.producer import KafkaWriter
from tests.conftest import make_topic
from tests.kafka_support import read_topic

KEYS = [f"site-{i:02d}".encode() for i in range(12)]


def _settings(topic: str, **kw: object) -> KafkaSettings:
    return KafkaSettings(topic=topic, **kw)  # type: ignore[arg-type]


async def test_partitions_match_aiokafka_and_order_survives_batch_rollover(broker: EmbeddedBroker) -> None:
    topic = await make_topic(broker, 5)
    # the smallest batch size: most batches roll over after one or two records
    w = KafkaWriter(_settings(topic, max_batch_size=16_384, linger_ms=1), broker.bootstrap)
    await w.start()
    try:
        deliveries = []
        for n in range(40):
            for k in KEYS:
                value = k + b":" + str(n).encode() + b":" + bytes(9000 if n % 3 else 10)
                deliveries.append(await w.send(k, value, "agent-" + k.decode(), n + 1))
        await asyncio.gather(*(w.wait(d) for d in deliveries))
    finally:
        await w.stop()
    records = await read_topic(broker.bootstrap, topic, 40 * len(KEYS))
    assert len(records) == 40 * len(KEYS)

    # the partition aiokafka's default partitioner gives each key
    ref_topic = await make_topic(broker, 5)
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await p.start()
    try:
        expected = {k: (await (await p.send(ref_topic, b"x", key=k))).partition for k in KEYS}
    finally:
        await p.stop()

    seen: dict[bytes, list[int]] = {k: [] for k in KEYS}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert r.partition == expected[r.key], r.key
        seen[r.key].append(int(r.value.split(b":")[1]))
        assert dict(r.headers)["seq"] == str(seen[r.key][-1] + 1).encode()
    assert all(v == list(range(40)) for v in seen.values())


async def test_record_over_max_request_size_fails_at_once(broker: EmbeddedBroker) -> None:
    topic = await make_topic(broker, 1)
    w = KafkaWriter(_settings(topic, max_request_size=1_048_576), broker.bootstrap)
    await w.start()
    try:
        with pytest.raises(BrokerError, match="max_request_size"):
            await w.send(b"k", bytes(1_048_576), "a", 1)
        ok = await w.send(b"k", b"small", "a", 2)  # the writer goes on
        await w.wait(ok)
    finally:
        await w.stop()


async def test_stop_hands_over_gathered_records(broker: EmbeddedBroker) -> None:
    topic = await make_topic(broker, 2)
    # a long linger: the records are still gathered when stop() begins
    w = KafkaWriter(_settings(topic, linger_ms=1_000), broker.bootstrap)
    await w.start()
    deliveries = [await w.send(k, b"v", "a", i + 1) for i, k in enumerate(KEYS)]
    assert not any(d.future.done() for d in deliveries)
    await w.stop()
    assert all(d.future.done() for d in deliveries), "a delivery was left waiting"
    stored = [d for d in deliveries if d.future.exception() is None]
    records = await read_topic(broker.bootstrap, topic, len(stored), timeout_s=10)
    assert len(records) == len(stored) == len(KEYS)
