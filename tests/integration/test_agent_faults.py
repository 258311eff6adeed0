"""Agent under faults, against the real ingest service and the real Tansu broker over TLS.

* the ingest process is SIGKILLed and restarted, and the network (a TCP proxy) hangs and
  resets, while the agent streams: nothing is missing, duplicates carry the same bytes;
* the agent process is SIGKILLed mid-stream and restarted: every spooled batch is
  delivered and no seq is ever reused;
* a full spool and a corrupt segment: drops are counted by reason and the agent keeps going;
* Kafka paused behind the ingest: retriable acks are retried until everything is delivered.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from collector.agent.batch import BatchBuilder
from collector.agent.config import AgentSettings, LinkSourceSettings
from collector.agent.pipeline import AgentPipeline
from collector.agent.sources import collect_once
from collector.agent.sources.link import LinkSource
from collector.agent.spool.records import encode_record
from collector.agent.spool.seq_file import seq_file_body
from collector.broker import EmbeddedBroker, free_port
from collector.devcerts import DevCerts
from tests.agent_support import (
    SITE,
    TopicBatch,
    agent_tls,
    fill,
    ingest_config,
    metric_value,
    scrape,
    settled_topic,
    site_section,
    spooled_seqs,
    write_yaml,
)
from tests.ingest_support import TOKENS, ingest_settings, started, token_for
from tests.procs import collector_process
from tests.tcpproxy import TcpProxy
from tests.waiting import eventually

WINDOW = 8


def _one_payload_per_seq(batches: list[TopicBatch], agent_id: str) -> dict[int, int]:
    """seq -> copies in the topic; asserts every copy of a seq is the same batch (bytes)."""
    by_seq: dict[int, set[bytes]] = defaultdict(set)
    copies: dict[int, int] = defaultdict(int)
    for b in batches:
        if b.agent_id == agent_id:
            by_seq[b.seq].add(b.value)
            copies[b.seq] += 1
    reused = [s for s, v in by_seq.items() if len(v) > 1]
    assert not reused, f"seq reused for different batches: {reused[:5]}"
    return dict(copies)


async def test_ingest_killed_and_network_cut_nothing_missing(
    broker: EmbeddedBroker, topic: str, certs: DevCerts, tmp_path: Path
) -> None:
    ingest_port = free_port()
    cfg = ingest_config(tmp_path, certs, broker.bootstrap, topic, ingest_port, TOKENS)
    ingest = collector_process(["ingest", "--config", str(cfg)], tmp_path / "ingest.log")
    await ingest.start()
    proxy = TcpProxy("127.0.0.1", ingest_port)
    await proxy.start()
    spool = tmp_path / "spool"
    settings = AgentSettings.model_validate(
        {
            "ingest": agent_tls(
                certs,
                f"127.0.0.1:{proxy.port}",
                token_for(SITE.site_id),
                server_name="localhost",
                window=WINDOW,
            ),
            "spool": {"dir": str(spool)},
        }
    )
    agent_id = "agent-faults"
    link = LinkSource(LinkSourceSettings(adapter="synthetic", options={"links": 10}))
    total = 0
    sends: Counter[int] = Counter()  # seq -> times the sender wrote it on a stream

    async def produce(n: int, p: AgentPipeline) -> None:
        nonlocal total
        for _ in range(n):
            assert await collect_once(link, p) is not None
            total += 1
            await asyncio.sleep(0.01)

    try:
        async with AgentPipeline(
            settings, agent_id=agent_id, site=SITE, boot_id="boot-1", spool_dir=spool
        ) as p:
            take_next = p.spool.take_next

            def counting_take_next() -> tuple[int, bytes] | None:
                item = take_next()
                if item is not None:
                    sends[item[0]] += 1
                return item

            p.spool.take_next = counting_take_next  # type: ignore[method-assign]

            def streaming() -> bool:
                return p.stats.connected and p.stats.acked >= total - WINDOW

            await produce(40, p)
            assert await eventually(streaming)
            ingest_kill = asyncio.create_task(ingest.kill())  # SIGKILL while batches fly
            await produce(20, p)  # the agent keeps spooling while the ingest is away
            await ingest_kill
            ingest = collector_process(["ingest", "--config", str(cfg)], tmp_path / "ingest.log")
            await ingest.start()
            await produce(30, p)
            assert await eventually(streaming, 20.0), p.stats
            proxy.pause()  # the network hangs: bytes stop, connections stay open
            await produce(20, p)
            assert await eventually(lambda: p.stats.in_flight > 0, 10.0), p.stats  # sent into the hang
            sent_before_reset = p.stats.sent
            await proxy.reset()  # ... then the connection is reset
            proxy.resume()
            await produce(30, p)
            assert await eventually(streaming, 20.0), p.stats
            await proxy.reset()  # a reset while flowing
            await produce(20, p)
            assert await p.wait_drained(45.0), p.stats
            st = p.stats
            assert st.stream_failures >= 3
            assert st.sent > sent_before_reset + 50  # the hung batches were sent again
            assert (st.rejected, st.dropped_total) == (0, 0)
    finally:
        await proxy.stop()
        await ingest.kill()
    got = await settled_topic(broker.bootstrap, topic, at_least=total)
    copies = _one_payload_per_seq(got, agent_id)
    assert sorted(copies) == list(range(1, total + 1)), "a batch is missing from the topic"
    dups = sum(n - 1 for n in copies.values())
    # only batches in flight when a fault struck can be resent: at most a window per fault
    assert dups <= 4 * WINDOW + 2 * WINDOW
    # A repeat in the topic is a batch whose ack was lost: the agent sent it again (same
    # agent_id, seq and bytes, checked above), never a batch it sent once.
    for seq, n in copies.items():
        assert n <= sends[seq], f"seq {seq}: {n} copies in the topic, sent {sends[seq]} times"
    assert any(n > 1 for n in sends.values())  # the faults did force resends
    assert not spooled_seqs(spool)


def _agent_yaml(
    tmp: Path,
    certs: DevCerts,
    target: str,
    spool: Path,
    *,
    link: dict[str, Any],
    spool_over: dict[str, Any] | None = None,
) -> Path:
    return write_yaml(
        tmp / "agent.yaml",
        {
            "agent": {
                "agent_id": "agent-proc",
                "site": site_section(),
                "ingest": agent_tls(
                    certs, target, token_for(SITE.site_id), server_name="localhost", window=WINDOW
                ),
                "spool": {"dir": str(spool), **(spool_over or {})},
                "metrics_listen": "127.0.0.1:0",
                "shutdown_grace_s": 8.0,
                "sources": {
                    "server": {"enabled": False},
                    "cell": {"enabled": False},
                    "link": {"adapter": "synthetic", **link},
                },
            }
        },
    )


async def test_agent_killed_mid_stream_delivers_spool_and_never_reuses_seq(
    broker: EmbeddedBroker, topic: str, certs: DevCerts, tmp_path: Path
) -> None:
    server = await started(ingest_settings(tmp_path, certs, broker.bootstrap, topic))
    proxy = TcpProxy("127.0.0.1", server.port)
    await proxy.start()
    spool = tmp_path / "spool"
    cfg = _agent_yaml(
        tmp_path, certs, f"127.0.0.1:{proxy.port}", spool, link={"interval_s": 0.05, "options": {"links": 5}}
    )
    agent = collector_process(["agent", "--config", str(cfg)], tmp_path / "agent.log")
    try:
        await agent.start()
        accepted = server.metrics.totals
        assert await eventually(lambda: accepted.batches_accepted >= 5, within=30.0), (
            "the agent never streamed normally"
        )
        proxy.pause()  # acks stop: batches pile up in the spool
        assert await eventually(lambda: len(spooled_seqs(spool)) >= 5, within=30.0), (
            "the pause should have left batches in the spool"
        )
        await agent.kill()  # SIGKILL mid-stream
        spooled = spooled_seqs(spool)
        await proxy.reset()
        proxy.resume()
        agent = collector_process(["agent", "--config", str(cfg)], tmp_path / "agent.log")
        await agent.start()
        assert int(agent.field("spooled")) >= len(spooled) - 1  # (one may have been acked)
        before = accepted.batches_accepted
        # the restarted agent delivers its spool and goes on streaming
        assert await eventually(
            lambda: accepted.batches_accepted >= before + len(spooled) + 5, within=30.0
        ), agent.log()
        assert await agent.terminate() == 0, agent.log()
    finally:
        await agent.kill()
        await proxy.stop()
        await server.stop()
    got = await settled_topic(broker.bootstrap, topic, at_least=len(spooled))
    copies = _one_payload_per_seq(got, "agent-proc")
    boots: dict[str, set[int]] = defaultdict(set)
    for b in got:
        boots[b.boot_id].add(b.seq)
    assert len(boots) == 2
    first, second = sorted(boots.values(), key=min)
    assert spooled <= first, f"spooled but never delivered: {sorted(spooled - first)[:5]}"
    top = max(first | spooled)
    assert first == set(range(1, top + 1))  # every batch written before the kill arrived
    assert min(second) > top  # the restarted agent never reuses a seq
    assert sum(copies.values()) - len(copies) <= 2 * WINDOW
    assert not spooled_seqs(spool)  # the clean stop drained everything


async def test_full_spool_and_corrupt_segment_are_counted_and_agent_keeps_running(
    broker: EmbeddedBroker, topic: str, certs: DevCerts, tmp_path: Path
) -> None:
    server = await started(ingest_settings(tmp_path, certs, broker.bootstrap, topic))
    proxy = TcpProxy("127.0.0.1", server.port)
    proxy.refuse = True  # the collector is unreachable at first
    await proxy.start()
    spool = tmp_path / "spool"
    spool.mkdir()
    # A segment from a previous run: a valid high-priority batch, garbage, another valid
    # batch and a torn tail; plus a segment that is garbage from start to end.
    now = time.time_ns()
    recs = []
    for seq in (1, 2):
        b = fill(BatchBuilder("agent-proc", SITE, "old-boot"), now)
        recs.append(encode_record(seq, 9, now, b.build(seq, now).SerializeToString()))
    (spool / f"9-{1:020d}.seg").write_bytes(recs[0] + b"\x00garbage" * 12 + recs[1] + recs[1][:30])
    (spool / f"0-{3:020d}.seg").write_bytes(b"\xa7S" + bytes(range(256)) * 2)
    (spool / "seq").write_bytes(seq_file_body(2))  # that run had reserved seqs up to 2
    cfg = _agent_yaml(
        tmp_path,
        certs,
        f"127.0.0.1:{proxy.port}",
        spool,
        link={"interval_s": 0.05, "options": {"links": 20}},
        spool_over={"max_bytes": 65536, "segment_bytes": 8192},
    )
    agent = collector_process(["agent", "--config", str(cfg)], tmp_path / "agent.log")
    try:
        await agent.start()
        port = int(agent.field("port"))
        lab = {"agent_id": "agent-proc"}

        async def dropped(reason: str) -> float:
            return (
                metric_value(
                    await scrape(port), "collector_agent_batches_dropped_total", reason=reason, **lab
                )
                or 0.0
            )

        assert await eventually(lambda: dropped("spool_full"), within=10.0, step=0.1), agent.log()
        assert await dropped("corrupt") >= 1
        assert await dropped("torn") >= 2  # the torn tail and the all-garbage segment
        text = await scrape(port)
        assert (metric_value(text, "collector_agent_spool_bytes", **lab) or 1e9) <= 65536
        assert agent.alive()
        proxy.refuse = False  # the collector is back

        async def acked_five() -> bool:
            text = await scrape(port)
            return (metric_value(text, "collector_agent_batches_acked_total", **lab) or 0) >= 5

        assert await eventually(acked_five, within=15.0, step=0.1), agent.log()
        assert agent.alive()
        assert await agent.terminate() == 0, agent.log()
    finally:
        await agent.kill()
        await proxy.stop()
        await server.stop()
    got = await settled_topic(broker.bootstrap, topic, at_least=5)
    old = sorted(b.seq for b in got if b.boot_id == "old-boot")
    assert old == [1, 2]  # the valid records around the damage survived (priority 9)
    _one_payload_per_seq(got, "agent-proc")


async def test_eventually_helper_times_out() -> None:
    assert not await eventually(lambda: False, within=0.05)


async def test_kafka_paused_retriable_acks_are_retried_until_delivered(
    own_broker: EmbeddedBroker, certs: DevCerts, tmp_path: Path
) -> None:
    from tests.conftest import make_topic

    topic = await make_topic(own_broker, partitions=2)
    settings = ingest_settings(
        tmp_path,
        certs,
        own_broker.bootstrap,
        topic,
        kafka={"produce_timeout_s": 1.0, "producer_rebuild_after": 2, "request_timeout_ms": 3000},
    )
    server = await started(settings)
    spool = tmp_path / "spool"
    agent = AgentSettings.model_validate(
        {
            "ingest": agent_tls(
                certs,
                f"127.0.0.1:{server.port}",
                token_for(SITE.site_id),
                server_name="localhost",
                window=4,
                backoff_max_s=1.0,
            ),
            "spool": {"dir": str(spool)},
        }
    )
    link = LinkSource(LinkSourceSettings(adapter="synthetic", options={"links": 5}))
    try:
        async with AgentPipeline(
            agent, agent_id="agent-kpause", site=SITE, boot_id="b", spool_dir=spool
        ) as p:
            for _ in range(5):
                await collect_once(link, p)
            assert await p.wait_drained(20.0)
            own_broker.pause()  # Kafka stops answering: the ingest cannot store, so no OK
            try:
                for _ in range(5):
                    await collect_once(link, p)
                    await asyncio.sleep(0.2)
                assert await eventually(
                    lambda: p.stats.retriable_acks > 0 or p.stats.stream_failures > 0, 15.0
                ), p.stats
                assert p.stats.acked == 5  # nothing acknowledged while Kafka was away
                assert len(p.spool) == 5
            finally:
                own_broker.resume()
            assert await p.wait_drained(45.0), p.stats
            assert p.stats.sent > 10  # what was refused while Kafka was away went again
            assert p.stats.rejected == 0
    finally:
        own_broker.resume()
        await server.stop()
    got = await settled_topic(own_broker.bootstrap, topic, at_least=10)
    copies = _one_payload_per_seq(got, "agent-kpause")
    assert sorted(copies) == list(range(1, 11))
