"""Fairness and limits of the ingest service: per-site and global stream limits refused with
RESOURCE_EXHAUSTED and a retry hint, the per-site in-flight budget, the idle-stream timeout,
oversized messages (compressed ones: test_ingest_compression.py), and every refusal
counted by reason.

Real gRPC with TLS on loopback, a real Tansu broker (paused with SIGSTOP where a test needs
batches to stay in flight).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from collector.broker import EmbeddedBroker
from collector.devcerts import DevCerts
from collector.ingest.server import IngestServer
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.conftest import make_topic
from tests.ingest_support import (
    channel,
    ingest_settings,
    make_batch,
    send_all,
    started,
    stream_call,
    token_for,
)
from tests.waiting import eventually

A, B = "jp-tokyo-01", "us-dallas-01"


def _value(s: IngestServer, name: str, **labels: str) -> float:
    return s.registry.get_sample_value(name, labels) or 0.0


def _trailer(err: grpc.aio.AioRpcError, key: str) -> str | None:
    return dict(err.trailing_metadata() or ()).get(key)  # type: ignore[arg-type]


def _agent(
    s: IngestServer, certs: DevCerts, tmp_path: Path, agent_id: str, token: str | None = None, **ingest: Any
) -> Any:
    """An AgentPipeline of tests.agent_support.SITE sending to `s` with the site's token (or
    `token`), spooling under tmp_path; `ingest`: more agent.ingest settings."""
    from collector.agent.config import AgentSettings
    from collector.agent.pipeline import AgentPipeline
    from tests.agent_support import SITE, agent_tls

    spool = tmp_path / "spool"
    target = f"127.0.0.1:{s.port}"
    agent = AgentSettings.model_validate(
        {
            "ingest": agent_tls(
                certs, target, token or token_for(SITE.site_id), server_name="localhost", **ingest
            ),
            "spool": {"dir": str(spool)},
        }
    )
    return AgentPipeline(agent, agent_id=agent_id, site=SITE, boot_id="b", spool_dir=spool)


def _links(n: int) -> Any:
    """A synthetic link source of n links."""
    from collector.agent.config import LinkSourceSettings
    from collector.agent.sources.link import LinkSource

    return LinkSource(LinkSourceSettings(adapter="synthetic", options={"links": n}))


async def _open(ch: aio.Channel, site: str, seq: int) -> aio.StreamStreamCall:
    call = stream_call(ch, token_for(site))
    await call.write(make_batch(site, seq).SerializeToString())
    ack = await call.read()
    assert ack.code == pb.OK
    return call


async def test_one_site_cannot_take_every_stream_and_is_told_when_to_retry(
    broker: EmbeddedBroker,
    certs: DevCerts,
    tmp_path: Path,
) -> None:
    s = await started(
        ingest_settings(
            tmp_path,
            certs,
            broker.bootstrap,
            await make_topic(broker),
            max_streams_per_site=2,
            max_concurrent_streams=4,
            retry_after_ms=1500,
        )
    )
    try:
        async with channel(s.port, certs) as ch:
            a_calls = [await _open(ch, A, i) for i in (1, 2)]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await send_all(ch, token_for(A), [make_batch(A, 3).SerializeToString()])
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_streams_per_site" in (err.value.details() or "")
            assert _trailer(err.value, "retry-after-ms") == "1500"
            # another site is not affected by A's streams
            b_calls = [await _open(ch, B, 1)]
            res = await send_all(ch, token_for(B), [make_batch(B, 2).SerializeToString()])
            assert res.ok_seqs() == [2]
            # the global limit (4): A holds 2, B holds 1, one more fits, then refused
            b_calls.append(await _open(ch, B, 3))
            with pytest.raises(grpc.aio.AioRpcError) as err2:
                await send_all(
                    ch, token_for("us-seattle-01"), [make_batch("us-seattle-01", 1).SerializeToString()]
                )
            assert err2.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert _trailer(err2.value, "retry-after-ms") == "1500"
            for call in a_calls + b_calls:
                await call.done_writing()
                assert await call.code() == grpc.StatusCode.OK
            # slots come back once streams end
            res = await send_all(ch, token_for(A), [make_batch(A, 4).SerializeToString()])
            assert res.ok_seqs() == [4]
        assert _value(s, "collector_ingest_streams_refused_total", reason="too_many_streams_site") == 1
        assert _value(s, "collector_ingest_streams_refused_total", reason="too_many_streams") == 1
        assert _value(s, "collector_ingest_streams_ended_total", reason="completed") == 6
    finally:
        await s.stop()


async def test_a_site_with_a_backlog_cannot_take_the_global_in_flight_budget(
    own_broker: EmbeddedBroker,
    certs: DevCerts,
    tmp_path: Path,
) -> None:
    topic = await make_topic(own_broker, partitions=1)
    settings = ingest_settings(
        tmp_path,
        certs,
        own_broker.bootstrap,
        topic,
        max_inflight_per_site=4,
        max_inflight_total=64,
        kafka={"produce_timeout_s": 120.0},
    )
    s = await started(settings)
    try:
        async with channel(s.port, certs) as ch:
            for site in (A, B):  # partition metadata known before the broker stops
                assert (
                    await send_all(ch, token_for(site), [make_batch(site, 1).SerializeToString()])
                ).ok_seqs() == [1]
            own_broker.pause()
            try:
                flood = [
                    asyncio.create_task(
                        send_all(
                            ch,
                            token_for(A),
                            [make_batch(A, 100 * k + i).SerializeToString() for i in range(1, 21)],
                            timeout_s=120,
                        )
                    )
                    for k in (1, 2)
                ]
                # A's two streams stop being read at its budget, far below the global one
                assert await eventually(lambda: s._inflight_count == 4, within=30)
                other = asyncio.create_task(
                    send_all(ch, token_for(B), [make_batch(B, 2).SerializeToString()], timeout_s=120)
                )
                assert await eventually(lambda: s._inflight_count == 5, within=30)  # B got in
            finally:
                own_broker.resume()
            results = await asyncio.gather(*flood, other)
        assert sorted(results[0].ok_seqs() + results[1].ok_seqs()) == sorted(
            [100 + i for i in range(1, 21)] + [200 + i for i in range(1, 21)]
        )
        assert results[2].ok_seqs() == [2]
    finally:
        await s.stop()


async def test_a_silent_stream_is_closed_after_the_idle_timeout_and_frees_its_slot(
    broker: EmbeddedBroker,
    certs: DevCerts,
    tmp_path: Path,
) -> None:
    s = await started(
        ingest_settings(
            tmp_path,
            certs,
            broker.bootstrap,
            await make_topic(broker),
            stream_idle_timeout_s=0.5,
            max_streams_per_site=1,
        )
    )
    try:
        async with channel(s.port, certs) as ch:
            call = await _open(ch, A, 1)  # one batch, acked, then silence
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "no batch for 0.5s" in (err.value.details() or "")
            assert _trailer(err.value, "stream-end-reason") == "idle_timeout"
            # the site's only slot is free again
            assert (await send_all(ch, token_for(A), [make_batch(A, 2).SerializeToString()])).ok_seqs() == [2]
        assert _value(s, "collector_ingest_streams_ended_total", reason="idle_timeout") >= 1
    finally:
        await s.stop()


async def test_oversized_batches_are_answered_and_counted_far_oversized_end_the_stream(
    broker: EmbeddedBroker,
    certs: DevCerts,
    tmp_path: Path,
) -> None:
    s = await started(
        ingest_settings(tmp_path, certs, broker.bootstrap, await make_topic(broker), max_message_bytes=8192)
    )
    big = make_batch(A, 2, series=40, points=8).SerializeToString()  # 8 KiB < size <= 16 KiB
    assert 8192 < len(big) <= 16384
    huge = make_batch(A, 9, series=40, points=40).SerializeToString()  # > 16 KiB
    try:
        async with channel(s.port, certs) as ch:
            res = await send_all(
                ch,
                token_for(A),
                [make_batch(A, 1).SerializeToString(), big, make_batch(A, 3).SerializeToString()],
            )
            by = res.by_seq()
            assert (by[1].code, by[2].code, by[3].code) == (pb.OK, pb.INVALID_ARGUMENT, pb.OK)
            assert "exceeds ingest.max_message_bytes (8192)" in by[2].reason
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await send_all(ch, token_for(A), [huge])
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _value(s, "collector_ingest_batches_rejected_total", reason="oversize") == 1
        # gRPC refuses the far-oversized message itself and the service's read ends as if the
        # client had half-closed: the stream's end is counted once, as completed or (when gRPC
        # cancels the handler first) cancelled; grpcio does not say which it was
        reasons = ("cancelled", "completed", "internal", "idle_timeout", "shutdown")

        def ended() -> dict[str, float]:
            return {r: _value(s, "collector_ingest_streams_ended_total", reason=r) for r in reasons}

        assert await eventually(lambda: sum(ended().values()) == 2, within=60), ended()
        assert ended()["cancelled"] + ended()["completed"] == 2, ended()
        assert _value(s, "collector_ingest_batches_rejected_total", reason="oversize") == 1
    finally:
        await s.stop()


async def test_unauthenticated_streams_are_counted_by_reason(
    broker: EmbeddedBroker,
    certs: DevCerts,
    tmp_path: Path,
) -> None:
    s = await started(ingest_settings(tmp_path, certs, broker.bootstrap, await make_topic(broker)))
    try:
        async with channel(s.port, certs) as ch:
            for token in (None, "not-a-token-0123456789"):
                # The refusal comes at stream open, from the metadata: read it without writing
                # first (a write racing the refusal fails in the client as INTERNAL "Failed
                # execute_batch" before the status is read).
                call = stream_call(ch, token)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await asyncio.wait_for(call.read(), 30)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _value(s, "collector_ingest_streams_refused_total", reason="unauthenticated") == 2
    finally:
        await s.stop()


async def test_the_agent_waits_out_a_refused_stream_and_delivers_when_a_slot_frees(
    broker: EmbeddedBroker,
    certs: DevCerts,
    tmp_path: Path,
) -> None:
    from collector.agent.sources import collect_once
    from tests.agent_support import SITE

    s = await started(
        ingest_settings(
            tmp_path,
            certs,
            broker.bootstrap,
            await make_topic(broker),
            max_streams_per_site=1,
            retry_after_ms=200,
        )
    )
    link = _links(3)
    try:
        async with channel(s.port, certs) as ch:
            holder = await _open(ch, SITE.site_id, 10**6)  # another client holds the one slot
            async with _agent(s, certs, tmp_path, "agent-refused") as p:
                await collect_once(link, p)
                assert await eventually(
                    lambda: "max_streams_per_site" in (p.sender.last_error or ""), within=30
                ), p.stats
                assert p.stats.acked == 0
                assert len(p.spool) == 1
                await holder.done_writing()
                assert await holder.code() == grpc.StatusCode.OK
                assert await p.wait_drained(30.0), p.stats
        assert _value(s, "collector_ingest_streams_refused_total", reason="too_many_streams_site") >= 1
    finally:
        await s.stop()


async def test_the_agent_writes_nothing_on_a_refused_stream_and_reads_its_status(
    broker: EmbeddedBroker,
    certs: DevCerts,
    tmp_path: Path,
) -> None:
    from collector.agent.sources import collect_once

    s = await started(ingest_settings(tmp_path, certs, broker.bootstrap, await make_topic(broker)))
    link = _links(2)
    try:
        async with _agent(s, certs, tmp_path, "agent-bad-token", token="not-a-token-0123456789") as p:
            await collect_once(link, p)
            assert await eventually(lambda: p.stats.stream_failures >= 3, within=30), p.stats
            # the agent waited for the ingest to take each stream: nothing was written on
            # the refused ones, and the refusal's own status (not a write error) is what it read
            assert p.stats.sent == 0, p.stats
            assert (p.sender.last_error or "").startswith("UNAUTHENTICATED"), p.sender.last_error
            assert len(p.spool) == 1
    finally:
        await s.stop()


async def test_the_agent_delivers_to_an_ingest_that_says_nothing_before_its_first_ack(
    broker: EmbeddedBroker,
    certs: DevCerts,
    tmp_path: Path,
) -> None:
    """An ingest of a release before admission metadata: the agent writes once
    agent.ingest.admission_wait_s is over."""
    from collector.agent.sources import collect_once

    class SilentIngest(IngestServer):
        async def _admitted(self, context: grpc.aio.ServicerContext) -> None:
            pass

    s = SilentIngest(ingest_settings(tmp_path, certs, broker.bootstrap, await make_topic(broker)))
    await s.start()
    link = _links(2)
    try:
        async with _agent(s, certs, tmp_path, "agent-old-ingest", admission_wait_s=0.2) as p:
            await collect_once(link, p)
            assert await p.wait_drained(30.0), p.stats
            assert (p.stats.acked, p.stats.stream_failures) == (1, 0), p.stats
    finally:
        await s.stop()


async def test_a_stream_cancelled_while_waiting_for_budget_returns_its_site_slot(
    own_broker: EmbeddedBroker,
    certs: DevCerts,
    tmp_path: Path,
) -> None:
    topic = await make_topic(own_broker, partitions=1)
    settings = ingest_settings(
        tmp_path,
        certs,
        own_broker.bootstrap,
        topic,
        max_inflight_per_site=3,
        max_inflight_total=2,
        kafka={"produce_timeout_s": 120.0},
    )
    s = await started(settings)
    try:
        async with channel(s.port, certs) as ch:
            keeper = await _open(ch, A, 1)  # keeps the site's budget object alive throughout
            own_broker.pause()
            try:
                x = stream_call(ch, token_for(A))
                for seq in (2, 3, 4):  # 2 fill the global budget, the 3rd waits for it
                    await x.write(make_batch(A, seq).SerializeToString())
                slots = s._site_inflight[A]
                # generous: under a loaded parallel suite the three reads can take a while
                assert await eventually(lambda: s._inflight_count == 2 and slots._value == 0, within=90), (
                    f"in flight {s._inflight_count} (want 2), site slots left {slots._value} "
                    f"(want 0), received {s.metrics.totals.batches_received} (want 4)"
                )
                x.cancel()  # the client leaves while its 3rd batch holds a site slot
            finally:
                own_broker.resume()
            assert await eventually(lambda: s._inflight_count == 0 and slots._value == 3, within=60)
            await keeper.done_writing()
            assert await keeper.code() == grpc.StatusCode.OK
    finally:
        await s.stop()


async def _delivers_across_idle_closes(s: IngestServer, certs: DevCerts, tmp_path: Path, ended: str) -> None:
    """An agent sends a batch, stays silent while its stream is ended and reopened twice (the
    ingest counts the ends as `ended`), sends another: both delivered, no stream failure."""
    from collector.agent.sources import collect_once

    link = _links(2)
    async with _agent(s, certs, tmp_path, f"agent-idle-{ended}") as p:
        await collect_once(link, p)
        assert await p.wait_drained(30.0), p.stats
        assert await eventually(
            lambda: _value(s, "collector_ingest_streams_ended_total", reason=ended) >= 2, within=30
        )
        await collect_once(link, p)
        assert await p.wait_drained(30.0), p.stats
        assert p.stats.stream_failures == 0  # an idle close is not a failure
        assert p.stats.acked == 2


async def test_the_agent_ends_an_idle_stream_before_the_ingest_does_and_keeps_delivering(
    broker: EmbeddedBroker,
    certs: DevCerts,
    tmp_path: Path,
) -> None:
    """The ingest states its idle timeout in the initial metadata; the agent half-closes an idle
    stream before it (0.5 s after the last ack here; the stream ends OK, "completed"), so the
    ingest never ends one itself and no batch can be written while it does."""
    s = await started(
        ingest_settings(
            tmp_path, certs, broker.bootstrap, await make_topic(broker), stream_idle_timeout_s=1.0
        )
    )
    try:
        await _delivers_across_idle_closes(s, certs, tmp_path, "completed")
        assert _value(s, "collector_ingest_streams_ended_total", reason="idle_timeout") == 0
    finally:
        await s.stop()


async def test_the_agent_reopens_a_stream_an_older_ingest_closed_for_idleness_quietly(
    broker: EmbeddedBroker,
    certs: DevCerts,
    tmp_path: Path,
) -> None:
    """An ingest that does not state its idle timeout (releases before it did) ends idle
    streams itself; the agent reopens them at once and keeps delivering, with no failure.

    The second batch is written just after the agent reopened its stream, a whole idle
    timeout before the ingest would end that one (a batch written while such an ingest ends
    a stream can meet gRPC's INTERNAL, which is what stating the timeout avoids)."""

    class UnstatedTimeoutIngest(IngestServer):
        async def _admitted(self, context: grpc.aio.ServicerContext) -> None:
            await context.send_initial_metadata(())

    s = UnstatedTimeoutIngest(
        ingest_settings(
            tmp_path, certs, broker.bootstrap, await make_topic(broker), stream_idle_timeout_s=1.0
        )
    )
    await s.start()
    try:
        await _delivers_across_idle_closes(s, certs, tmp_path, "idle_timeout")
    finally:
        await s.stop()
