"""Ingest into the real Tansu broker over TLS: bytes, keys, order, acks."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

from collector.broker import EmbeddedBroker
from collector.devcerts import DevCerts
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.ingest_support import (
    SITES,
    channel,
    ingest_settings,
    make_batch,
    read_topic,
    send_all,
    started,
    token_for,
)

STREAMS = 8
PER_STREAM = 1250  # 10,000 batches in all


async def test_10000_batches_over_tls_land_once_in_order_keyed_by_site(
    broker: EmbeddedBroker, topic: str, certs: DevCerts, tmp_path: Path
) -> None:
    settings = ingest_settings(tmp_path, certs, broker.bootstrap, topic)
    server = await started(settings)
    sites = list(SITES)
    # two agents per site, each its own stream; small batches so 10k stay quick
    plan = {f"agent-{i}": sites[i % len(sites)] for i in range(STREAMS)}
    payloads = {
        agent: [
            make_batch(site, seq, agent_id=agent, series=4, points=2).SerializeToString()
            for seq in range(1, PER_STREAM + 1)
        ]
        for agent, site in plan.items()
    }
    try:
        async with channel(server.port, certs) as ch:
            results = await asyncio.gather(
                *(send_all(ch, token_for(plan[agent]), payloads[agent], timeout_s=120) for agent in plan)
            )
    finally:
        await server.stop()

    for agent, res in zip(plan, results, strict=True):
        ok = res.ok_seqs()
        assert sorted(ok) == list(range(1, PER_STREAM + 1)), f"{agent}: acks not exactly once"
        assert len(ok) == len(set(ok))
        assert all(a.code == pb.OK for a in res.acks)

    records = await read_topic(broker.bootstrap, topic, STREAMS * PER_STREAM)
    assert len(records) == STREAMS * PER_STREAM
    sent = {p for ps in payloads.values() for p in ps}
    assert {r.value for r in records} == sent  # same bytes as sent
    per_agent: dict[str, list[int]] = defaultdict(list)
    partition_of_site: dict[bytes, set[int]] = defaultdict(set)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        headers = dict(r.headers)
        agent = headers["agent_id"].decode()
        assert headers["schema"] == b"telemetry.v1.Batch"
        assert r.key == plan[agent].encode()  # key = site
        per_agent[agent].append(int(headers["seq"]))
        partition_of_site[r.key].add(r.partition)
    assert all(len(p) == 1 for p in partition_of_site.values())  # a site stays in one partition
    for agent, seqs in per_agent.items():
        assert seqs == sorted(seqs), f"{agent}: order not kept within the site's partition"
