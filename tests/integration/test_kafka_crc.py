"""Record batch CRCs checked in hardware (collector/kafka_crc.py), against the real broker: a
fetch whose bytes were flipped on the way is refused as aiokafka refuses it, nothing of it
reaches the caller, and the next fetch after the damage stops brings the records intact."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CorruptRecordException

from collector import kafka_crc
from collector.broker import EmbeddedBroker, TopicSpec, free_port
from tests.aggregate_support import aggregator_settings
from tests.conftest import make_topic
from tests.tcpproxy import TcpProxy
from tests.waiting import eventually

MARK = b"counter-values:" + bytes(range(256)) * 8


@pytest.fixture
def hardware_crc():  # type: ignore[no-untyped-def]
    was = kafka_crc._original is not None
    assert kafka_crc.install()
    yield
    if not was:
        kafka_crc.uninstall()


async def test_a_flipped_bit_on_the_wire_is_refused_and_the_refetch_is_intact(hardware_crc: None) -> None:
    port = free_port("127.0.0.1")
    async with (
        TcpProxy("127.0.0.1", port) as proxy,
        EmbeddedBroker(port=port, advertised_port=proxy.port, topics=(TopicSpec("crc", 1, 3_600_000),)),
    ):
        bootstrap = f"127.0.0.1:{proxy.port}"
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(5):
                await producer.send_and_wait("crc", MARK + bytes([i]), key=b"site")
        finally:
            await producer.stop()
        flipped = 0

        def flip_one_value_byte(chunk: bytes) -> bytes:
            nonlocal flipped
            at = chunk.find(MARK[:32])
            if at < 0 or at + 100 >= len(chunk):
                return chunk
            flipped += 1
            out = bytearray(chunk)
            out[at + 100] ^= 0x10  # inside a record value: only the batch CRC can tell
            return bytes(out)

        proxy.corrupt = flip_one_value_byte
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            tp = TopicPartition("crc", 0)
            consumer.assign([tp])
            got: list[bytes] = []
            refused = 0
            for _ in range(20):  # bounded: a few fetches, each refused
                try:
                    batch = await consumer.getmany(tp, timeout_ms=500)
                except CorruptRecordException:
                    refused += 1
                    if refused >= 2:
                        break
                    continue
                got.extend(r.value for r in batch.get(tp, []))
            assert refused >= 2
            assert flipped >= 2
            assert got == []  # nothing of a refused fetch came through
            proxy.corrupt = None

            async def intact() -> bool:
                batch = await consumer.getmany(tp, timeout_ms=200)
                got.extend(r.value for r in batch.get(tp, []))
                return len(got) >= 5

            assert await eventually(intact, within=20)
            assert got == [MARK + bytes([i]) for i in range(5)]
        finally:
            await consumer.stop()


async def test_the_aggregator_checks_crcs_in_hardware_once_started(broker: EmbeddedBroker) -> None:
    from prometheus_client import CollectorRegistry

    from collector.aggregate.service import Aggregator

    topic = await make_topic(broker, 1)
    was = kafka_crc._original is not None
    kafka_crc.uninstall()
    try:
        settings = aggregator_settings(topic, topic + ".dlq", metrics_listen="")
        async with Aggregator(settings, bootstrap=broker.bootstrap, registry=CollectorRegistry()) as agg:
            assert kafka_crc._original is not None
            assert await eventually(lambda: 0 in agg.states, within=30)
    finally:
        if not was:
            kafka_crc.uninstall()


async def test_the_aggregator_counts_a_corrupt_fetch_processes_nothing_of_it_and_goes_on() -> None:
    from prometheus_client import CollectorRegistry

    from collector.aggregate.service import Aggregator
    from tests.aggregate_support import make_fleet, produce

    fleet = make_fleet(n_batches=20)
    sites = dict.fromkeys({site for site, _ in fleet.records}, 0)
    port = free_port("127.0.0.1")
    async with TcpProxy("127.0.0.1", port) as proxy:
        topics = tuple(TopicSpec(t, 1, 3_600_000) for t in ("agg", "agg.dlq"))
        async with EmbeddedBroker(port=port, advertised_port=proxy.port, topics=topics):
            bootstrap = f"127.0.0.1:{proxy.port}"
            end = (await produce(bootstrap, "agg", fleet.records, sites))[0]
            site = next(iter(sites)).encode()

            def flip_in_a_record(chunk: bytes) -> bytes:
                at = chunk.find(site)  # a record key or value: inside a batch's CRC
                if at < 0:
                    return chunk
                out = bytearray(chunk)
                out[at] ^= 0x01
                return bytes(out)

            proxy.corrupt = flip_in_a_record
            registry = CollectorRegistry()
            settings = aggregator_settings("agg", "agg.dlq", metrics_listen="")
            async with Aggregator(settings, bootstrap=bootstrap, registry=registry) as agg:

                def corrupt_batches() -> float:
                    v = registry.get_sample_value(
                        "collector_aggregate_consumer_errors_total", {"reason": "corrupt_batch"}
                    )
                    return v or 0.0

                assert await eventually(lambda: corrupt_batches() >= 2, within=30)
                assert agg.states[0].records == 0  # nothing of a refused fetch was processed
                proxy.corrupt = None
                assert await eventually(lambda: agg.states[0].next_offset == end, within=30)
                assert agg.states[0].records == end
                refused = [
                    s.value
                    for m in registry.collect()
                    if m.name == "collector_aggregate_decode_errors"
                    for s in m.samples
                    if s.name.endswith("_total")
                ]
                assert sum(refused) == 0  # no damaged record reached the decoder
                assert sum(s.samples for s in agg.states[0].sites) == sum(
                    len(v) for v in fleet.counted.values()
                )
