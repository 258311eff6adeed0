"""AgentPipeline against a scripted in-process IngestService (real gRPC on loopback)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from collector.agent.pipeline import AgentPipeline
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.agent_support import SITE, ScriptedIngest, agent_settings, fill
from tests.waiting import eventually


async def test_submitted_batches_are_acked_and_spool_empties(tmp_path: Path) -> None:
    ing = ScriptedIngest()
    await ing.start()
    try:
        reg = CollectorRegistry()
        s = agent_settings(tmp_path, f"127.0.0.1:{ing.port}", ingest={"token": "tok-1"})
        async with AgentPipeline(
            s, agent_id="a1", site=SITE, boot_id="b1", spool_dir=tmp_path, registry=reg
        ) as p:
            seqs = [await p.submit(fill(p.new_builder(), time.time_ns()), priority=i % 3) for i in range(40)]
            assert seqs == list(range(1, 41))
            assert await p.wait_drained(10.0)
            st = p.stats
            assert (st.acked, st.rejected, st.dropped_total, st.spool_batches) == (40, 0, 0, 0)
            text = generate_latest(reg).decode()
            assert 'collector_agent_batches_acked_total{agent_id="a1"} 40.0' in text
        assert sorted(set(ing.seqs())) == seqs
        assert ing.metadata[0]["authorization"] == "Bearer tok-1"
        assert ing.received[0].agent_id == "a1"
        assert ing.received[0].boot_id == "b1"
        assert not list(tmp_path.glob("*.seg"))
        # stop is idempotent and the collector forgets the pipeline
        await p.stop()
        assert "a1" not in generate_latest(reg).decode()
    finally:
        await ing.stop()


async def test_seq_continues_after_restart(tmp_path: Path) -> None:
    s = agent_settings(tmp_path, "127.0.0.1:9", spool={"seq_block": 4})
    p = AgentPipeline(s, agent_id="a1", site=SITE, boot_id="b1", spool_dir=tmp_path)
    async with p:
        first = [await p.submit(fill(p.new_builder(), time.time_ns())) for _ in range(6)]
    async with AgentPipeline(s, agent_id="a1", site=SITE, boot_id="b2", spool_dir=tmp_path) as q:
        assert len(q.spool) == 6  # nothing acked: everything still spooled
        nxt = await q.submit(fill(q.new_builder(), time.time_ns()))
    assert first == [1, 2, 3, 4, 5, 6]
    assert nxt > 6


async def test_invalid_argument_moves_batch_aside_and_others_flow(tmp_path: Path) -> None:
    def policy(b: pb.Batch, attempt: int) -> pb.Ack:
        if b.seq == 3:
            return pb.Ack(seq=3, code=pb.INVALID_ARGUMENT, reason="series[0]: bad name")
        return pb.Ack(seq=b.seq, code=pb.OK)

    ing = ScriptedIngest(policy=policy)
    await ing.start()
    try:
        s = agent_settings(tmp_path, f"127.0.0.1:{ing.port}")
        async with AgentPipeline(s, agent_id="a1", site=SITE, boot_id="b", spool_dir=tmp_path) as p:
            for _ in range(5):
                await p.submit(fill(p.new_builder(), time.time_ns()))
            assert await p.wait_drained(10.0)
            assert (p.stats.acked, p.stats.rejected) == (4, 1)
        assert ing.attempts[3] == 1  # never retried
        assert (tmp_path / "rejected" / f"{3:020d}.batch").exists()
        assert "bad name" in (tmp_path / "rejected" / f"{3:020d}.json").read_text()
    finally:
        await ing.stop()


async def test_retriable_ack_is_retried_after_backoff(tmp_path: Path) -> None:
    def policy(b: pb.Batch, attempt: int) -> pb.Ack:
        if b.seq == 2 and attempt < 3:
            return pb.Ack(seq=2, code=pb.RESOURCE_EXHAUSTED, retry_after_ms=50)
        return pb.Ack(seq=b.seq, code=pb.OK)

    ing = ScriptedIngest(policy=policy)
    await ing.start()
    try:
        s = agent_settings(tmp_path, f"127.0.0.1:{ing.port}")
        async with AgentPipeline(s, agent_id="a1", site=SITE, boot_id="b", spool_dir=tmp_path) as p:
            for _ in range(4):
                await p.submit(fill(p.new_builder(), time.time_ns()))
            assert await p.wait_drained(10.0)
            assert p.stats.retriable_acks == 2
            assert p.stats.acked == 4
        assert ing.attempts[2] == 3
    finally:
        await ing.stop()


async def test_range_ack_covers_every_batch_in_range(tmp_path: Path) -> None:
    held: list[int] = []

    def policy(b: pb.Batch, attempt: int) -> pb.Ack | None:
        held.append(b.seq)
        if len(held) < 4:
            return None
        ack = pb.Ack(seq=held[0], seq_last=held[-1], code=pb.OK)
        held.clear()
        return ack

    ing = ScriptedIngest(policy=policy)
    await ing.start()
    try:
        s = agent_settings(tmp_path, f"127.0.0.1:{ing.port}")
        async with AgentPipeline(s, agent_id="a1", site=SITE, boot_id="b", spool_dir=tmp_path) as p:
            for _ in range(8):
                await p.submit(fill(p.new_builder(), time.time_ns()))
            assert await p.wait_drained(10.0)
            assert p.stats.acked == 8
    finally:
        await ing.stop()


async def test_reconnects_after_server_restart_and_delivers_all(tmp_path: Path) -> None:
    ing = ScriptedIngest()
    await ing.start()
    port = ing.port
    s = agent_settings(tmp_path, f"127.0.0.1:{port}")
    async with AgentPipeline(s, agent_id="a1", site=SITE, boot_id="b", spool_dir=tmp_path) as p:
        for _ in range(3):
            await p.submit(fill(p.new_builder(), time.time_ns()))
        assert await p.wait_drained(10.0)
        await ing.stop()
        assert await eventually(lambda: not p.stats.connected, 5.0)
        for _ in range(3):
            await p.submit(fill(p.new_builder(), time.time_ns()))
        assert not await p.wait_drained(0.3)
        ing2 = ScriptedIngest()
        ing2.server = None
        import grpc

        from collector.proto.telemetry.v1 import telemetry_pb2_grpc as pb_grpc

        ing2.server = grpc.aio.server()
        pb_grpc.add_IngestServiceServicer_to_server(ing2, ing2.server)
        assert ing2.server.add_insecure_port(f"127.0.0.1:{port}") == port
        await ing2.server.start()
        try:
            assert await p.wait_drained(10.0)
            assert sorted(set(ing2.seqs())) == [4, 5, 6]
            assert p.stats.stream_failures >= 1
        finally:
            await ing2.stop()


async def test_stop_during_backoff_returns_at_once(tmp_path: Path) -> None:
    # an hour of backoff: a stop that waited it out would never get past the bound below
    s = agent_settings(tmp_path, "127.0.0.1:9", ingest={"backoff_initial_s": 3600.0, "backoff_max_s": 3600.0})
    p = AgentPipeline(s, agent_id="a1", site=SITE, boot_id="b", spool_dir=tmp_path)
    await p.start()
    await p.submit(fill(p.new_builder(), time.time_ns()))
    assert await eventually(lambda: p.stats.stream_failures >= 1, 5.0)
    async with asyncio.timeout(120):  # a bound, far below the backoff, not a speed target
        await p.stop()
    assert len(list(tmp_path.glob("*.seg"))) == 1  # unsent batch kept for the next start


async def test_missing_acks_reopen_the_stream_and_resend(tmp_path: Path) -> None:
    def policy(b: pb.Batch, attempt: int) -> pb.Ack | None:
        return pb.Ack(seq=b.seq, code=pb.OK) if attempt >= 2 else None  # first ack "lost"

    ing = ScriptedIngest(policy=policy)
    await ing.start()
    try:
        s = agent_settings(tmp_path, f"127.0.0.1:{ing.port}", ingest={"ack_timeout_s": 0.5})
        async with AgentPipeline(s, agent_id="a1", site=SITE, boot_id="b", spool_dir=tmp_path) as p:
            for _ in range(3):
                await p.submit(fill(p.new_builder(), time.time_ns()))
            assert await p.wait_drained(10.0)
            assert p.stats.stream_failures >= 1
            assert p.stats.sent >= 6
        assert all(n == 2 for n in ing.attempts.values())
        assert len(ing.metadata) >= 2  # a second stream
    finally:
        await ing.stop()


async def test_batch_over_max_batch_bytes_is_dropped_not_retried(tmp_path: Path) -> None:
    from collector.agent.batch import counter_def

    s = agent_settings(tmp_path, "127.0.0.1:9", ingest={"max_batch_bytes": 65536})
    async with AgentPipeline(s, agent_id="a1", site=SITE, boot_id="b", spool_dir=tmp_path) as p:
        b = p.new_builder()
        for i in range(2000):
            b.counter(
                counter_def("link_in_octets", {"link": f"et-{i}", "media": "copper"}, unit="bytes"),
                time.time_ns(),
                i,
            )
        seq = await p.submit(b)
        assert p.stats.dropped == {"too_large": 1}
        assert len(p.spool) == 0
        assert await p.submit(fill(p.new_builder(), time.time_ns())) == seq + 1


async def test_self_metrics_pass_promtool_check_metrics(tmp_path: Path) -> None:
    import asyncio
    import shutil

    from collector.agent.metrics import SourceStats, collector_for

    reg = CollectorRegistry()
    s = agent_settings(tmp_path, "127.0.0.1:9")
    async with AgentPipeline(s, agent_id="a1", site=SITE, boot_id="b", spool_dir=tmp_path, registry=reg) as p:
        collector_for(reg).add_source("a1", "link", SourceStats(collections=1, samples=5))
        p.spool.counters.dropped["spool_full"] += 1
        await p.submit(fill(p.new_builder(), time.time_ns()))
        text = generate_latest(reg)
    assert b'collector_agent_batches_dropped_total{agent_id="a1",reason="spool_full"} 1.0' in text
    assert b'collector_agent_source_samples_total{agent_id="a1",source="link"} 5.0' in text
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool (Debian package prometheus) is needed for this check"
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(text), 60)
    assert proc.returncode == 0, out
