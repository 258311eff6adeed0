"""Conformance of the ingest service to the contract's rules (protos/telemetry/v1/telemetry.proto).

Real gRPC (TLS where the product uses it) on loopback and a real Tansu broker. One test per
rule of the Ack contract, plus forward compatibility: unknown fields at every level are
accepted and stored byte for byte.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from collector.aggregate.decode import decode
from collector.broker import EmbeddedBroker
from collector.devcerts import DevCerts
from collector.ingest.server import IngestServer
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.conftest import make_topic
from tests.ingest_support import (
    LEVELS,
    channel,
    ingest_settings,
    link_site_batch,
    make_batch,
    read_topic,
    send_all,
    started,
    stored_batches,
    token_for,
    unknown_field,
    with_unknown,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")
SITE = "jp-osaka-01"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(
    broker: EmbeddedBroker, certs: DevCerts, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[IngestServer]:
    s = await started(
        ingest_settings(
            tmp_path_factory.mktemp("ct"), certs, broker.bootstrap, await make_topic(broker, partitions=1)
        )
    )
    yield s
    await s.stop()


def _rejected(server: IngestServer, reason: str) -> float:
    v = server.registry.get_sample_value("collector_ingest_batches_rejected_total", {"reason": reason})
    return v or 0.0


async def test_unknown_fields_at_every_level_are_acked_ok_and_stored_byte_for_byte(
    server: IngestServer,
    certs: DevCerts,
) -> None:
    agent = "agent-unknown-fields"
    payloads: list[bytes] = []
    seq = 0
    for level in LEVELS:
        for wt in (0, 1, 2, 3, 5):
            seq += 1
            b = make_batch(SITE, seq, agent_id=agent, series=4, points=3)
            payloads.append(with_unknown(b, level, unknown_field(900 + wt, wt, b"telemetry.v2?")))
    seq += 1
    every = make_batch(SITE, seq, agent_id=agent, series=4, points=3)
    for level in LEVELS:  # all levels in one batch
        every.ParseFromString(with_unknown(every, level, unknown_field(77, 2, level.encode())))
    payloads.append(every.SerializeToString())
    async with channel(server.port, certs) as ch:
        res = await send_all(ch, token_for(SITE), payloads)
    assert sorted(res.ok_seqs()) == list(range(1, seq + 1))
    assert all(a.code == pb.OK for a in res.acks)
    records = [
        r
        for r in await read_topic(server.bootstrap, server._writer.topic, seq)  # type: ignore[union-attr]
        if dict(r.headers).get("agent_id") == agent.encode()
    ]
    assert sorted(r.value for r in records) == sorted(payloads)  # the bytes the agent sent
    for r in records:  # and the aggregator's decoder reads every one of them
        assert decode(r.value, dict(r.headers)).n_samples == 12


async def test_a_batch_that_does_not_parse_is_nacked_with_the_seq_when_it_can_be_read(
    server: IngestServer,
    certs: DevCerts,
) -> None:
    agent = "agent-peek"
    good = [make_batch(SITE, s, agent_id=agent).SerializeToString() for s in (1, 3)]
    whole = make_batch(SITE, 2, agent_id=agent).SerializeToString()
    broken = whole[: len(whole) // 2]  # cut inside the series table
    before = _rejected(server, "decode")
    async with channel(server.port, certs) as ch:
        res = await send_all(ch, token_for(SITE), [good[0], broken, b"\x0f\x0f", good[1]])
    codes = [(a.seq, a.seq_last, pb.Code.Name(a.code)) for a in res.acks]
    # positional: one ack per batch in arrival order; the unreadable one carries seq 0
    assert codes == [(1, 1, "OK"), (2, 2, "INVALID_ARGUMENT"), (0, 0, "INVALID_ARGUMENT"), (3, 3, "OK")]
    assert all(a.reason for a in res.acks if a.code != pb.OK)
    assert _rejected(server, "decode") == before + 2


async def test_repeated_and_backwards_seqs_are_stored_and_acked_alone_ranges_never_overlap(
    server: IngestServer,
    certs: DevCerts,
) -> None:
    agent = "agent-repeat"
    seqs = [1, 2, 3, 2, 3, 4, 1, 5, 6]
    payload = {s: make_batch(SITE, s, agent_id=agent).SerializeToString() for s in set(seqs)}
    async with channel(server.port, certs) as ch:
        # one write at a time, each after the previous batch is in Kafka, so coalescing is
        # deterministic: a range may only form from fresh consecutive seqs
        call_res = await send_all(ch, token_for(SITE), [payload[s] for s in seqs])
    acks = call_res.acks
    assert all(a.code == pb.OK for a in acks)
    covered_n = sum(a.seq_last - a.seq + 1 if a.seq_last else 1 for a in acks)
    assert covered_n == len(seqs)  # exactly one answer per batch read
    # ranges of fresh seqs are disjoint and increasing; repeats are single-seq acks
    ranges = [(a.seq, a.seq_last or a.seq) for a in acks]
    fresh = [r for r in ranges if r[1] > r[0]]
    assert all(b[0] > a[1] for a, b in itertools.pairwise(fresh))
    singles_for_repeats = [r for r in ranges if r[0] == r[1] and r[0] in (1, 2, 3)]
    assert len(singles_for_repeats) >= 3  # 2, 3, 1 sent again, each answered on its own
    assert server.registry.get_sample_value("collector_ingest_batches_repeated_total") >= 3
    records = [
        r
        for r in await read_topic(server.bootstrap, server._writer.topic, 1)  # type: ignore[union-attr]
        if dict(r.headers).get("agent_id") == agent.encode()
    ]
    assert len(records) == len(seqs)  # stored again: the aggregator drops (agent_id, seq) repeats


async def test_an_internal_error_is_answered_per_batch_and_counted(
    server: IngestServer,
    certs: DevCerts,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import collector.ingest.server as srv

    calls = 0
    real = srv.validate

    def flaky(*args: object, **kw: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("bug injected by the test")
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(srv, "validate", flaky)
    before = _rejected(server, "internal")
    agent = "agent-internal"
    async with channel(server.port, certs) as ch:
        res = await send_all(
            ch, token_for(SITE), [make_batch(SITE, s, agent_id=agent).SerializeToString() for s in (1, 2, 3)]
        )
    by = res.by_seq()
    assert (by[1].code, by[2].code, by[3].code) == (pb.OK, pb.INTERNAL, pb.OK)
    assert by[2].retry_after_ms > 0
    assert "internal error" in by[2].reason
    assert _rejected(server, "internal") == before + 1


async def test_good_stream_is_unaffected_by_a_stream_of_bad_batches(
    server: IngestServer,
    certs: DevCerts,
) -> None:
    bad = [with_unknown(make_batch(SITE, s), "counters", unknown_field(3, 0))[:-1] for s in range(1, 30)]
    good = [make_batch("us-dallas-01", s).SerializeToString() for s in range(1, 30)]
    async with channel(server.port, certs) as ch:
        rb, rg = await asyncio.gather(
            send_all(ch, token_for(SITE), bad), send_all(ch, token_for("us-dallas-01"), good)
        )
    assert len(rb.acks) == len(bad)
    assert all(a.code == pb.INVALID_ARGUMENT for a in rb.acks)
    assert sorted(rg.ok_seqs()) == list(range(1, 30))


async def test_kafka_keeps_zstd_record_batches_that_decode_to_the_exact_bytes(
    broker: EmbeddedBroker,
    certs: DevCerts,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # the default kafka.compression_type, against the real broker: Tansu stores and serves
    # the compressed batches, any consumer gets the agent's bytes back
    topic = await make_topic(broker, partitions=1)
    s = await started(ingest_settings(tmp_path_factory.mktemp("z"), certs, broker.bootstrap, topic))
    assert s.settings.kafka.compression_type == "zstd"
    t0 = time.time_ns() - 600 * 10**9
    sent = [link_site_batch(SITE, seq, t0 + seq * 10**10) for seq in range(1, 21)]
    try:
        async with channel(s.port, certs) as ch:
            for raw in sent:  # one at a time, like a site every 10 s: ~one record per batch
                assert (await send_all(ch, token_for(SITE), [raw])).acks[0].code == pb.OK
    finally:
        await s.stop()
    stored = await stored_batches(broker.bootstrap, topic)
    assert stored.records == 20
    assert set(stored.codecs) == {"zstd"}
    # the target for this site shape: at most 16 bytes per counter value in Kafka
    assert stored.bytes / (20 * 100) <= 16.0, stored
    assert [r.value for r in await read_topic(broker.bootstrap, topic, 20)] == sent
