"""Agent failure paths that used to be silent: a seq reservation failing (disk full) killed the
source task, a rejected/ write failure forgot the batch, a scrape could skip a pipeline, and
only the first failure of a kind was logged."""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from collector.agent.batch import BatchBuilder
from collector.agent.pipeline import AgentPipeline
from collector.agent.sender import idle_close_after
from collector.agent.sources import Source, collect_once, run_source
from collector.exposition.http import MetricsServer
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.agent_support import SITE, ScriptedIngest, agent_settings, fill
from tests.waiting import eventually


class Ticker(Source):
    name = "ticker"
    interval_s = 0.05

    async def collect(self, builder: BatchBuilder, now_unix_nano: int) -> None:
        fill(builder, now_unix_nano)


def _no_space(*_a: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


async def test_seq_reservation_on_a_full_disk_is_counted_and_the_source_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = agent_settings(tmp_path, "127.0.0.1:9", spool={"seq_block": 1})
    src = Ticker()
    async with AgentPipeline(s, agent_id="a1", site=SITE, boot_id="b", spool_dir=tmp_path) as p:
        assert await collect_once(src, p) == 1
        monkeypatch.setattr(p.spool.seq_file, "write", _no_space)
        assert await collect_once(src, p) is None
        assert src.stats.errors == 1
        assert p.stats.dropped == {"io_error": 1}
        assert not p.stats.spool_writable
        stop = asyncio.Event()
        task = asyncio.create_task(run_source(src, p, stop))
        assert await eventually(lambda: src.stats.errors >= 3, within=10)
        assert not task.done()  # the source task did not die
        monkeypatch.undo()
        assert await eventually(lambda: p.stats.last_seq >= 2, within=10)  # and recovers
        stop.set()
        await task
        assert p.stats.dropped["io_error"] >= 3


async def test_rejected_write_failure_keeps_the_batch_and_retries(tmp_path: Path) -> None:
    ing = ScriptedIngest(policy=lambda b, n: pb.Ack(seq=b.seq, code=pb.INVALID_ARGUMENT, reason="bad"))
    await ing.start()
    try:
        s = agent_settings(tmp_path / "sp", f"127.0.0.1:{ing.port}")
        async with AgentPipeline(s, agent_id="a1", site=SITE, boot_id="b", spool_dir=tmp_path / "sp") as p:
            real = p.spool.rejected.dir
            p.spool.rejected.dir = tmp_path / "not-a-dir" / "rejected"
            (tmp_path / "not-a-dir").write_text("a file where a directory should be")
            await p.submit(fill(p.new_builder(), time.time_ns()))
            assert await eventually(lambda: p.stats.rejects_pending == 1)
            assert len(p.spool) == 1  # kept, not forgotten
            assert p.stats.rejected == 0
            assert len(ing.received) == 1  # and not sent again
            p.spool.rejected.dir = real
            assert p.spool.retry_rejected() == 1
            assert p.stats.rejected == 1
            assert len(p.spool) == 0
            assert (real / f"{1:020d}.batch").exists()
    finally:
        await ing.stop()


async def test_scrapes_read_every_pipeline_on_the_loop_while_spools_change(tmp_path: Path) -> None:
    """The agent's endpoint serves the registry on the pipelines' loop: a scraper on another
    thread (a real HTTP client) sees every pipeline in every body while the spools change."""
    reg = CollectorRegistry()
    s = agent_settings(tmp_path, "127.0.0.1:9")
    pipes = [
        AgentPipeline(s, agent_id=f"a{i}", site=SITE, boot_id="b", spool_dir=tmp_path / str(i), registry=reg)
        for i in range(5)
    ]
    for p in pipes:
        await p.start()
    try:
        async with MetricsServer("127.0.0.1", 0, reg) as http:
            url = f"http://127.0.0.1:{http.bound_port}/metrics"
            stop = threading.Event()
            texts: list[str] = []

            def scrape() -> None:
                while not stop.is_set() and len(texts) < 50:
                    with urllib.request.urlopen(url, timeout=30) as r:
                        texts.append(r.read().decode())

            t = threading.Thread(target=scrape)
            t.start()
            for k in range(3000):  # mutate the spools while the other thread scrapes
                p = pipes[k % 5]
                await p.submit(fill(p.new_builder(), time.time_ns()))
                await asyncio.sleep(0)
                if k >= 300 and len(texts) >= 5:
                    break
            assert await eventually(lambda: len(texts) >= 5, within=60)
            stop.set()
            await asyncio.to_thread(t.join)
        assert texts
        for text in texts:
            for i in range(5):
                assert f'collector_agent_spool_batches{{agent_id="a{i}"}}' in text
        assert generate_latest(reg)  # and a scrape on the loop itself works too
    finally:
        for p in pipes:
            await p.stop(0)


async def test_each_failure_streak_and_recovery_is_logged_once_with_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = {"on": True}

    def policy(b: pb.Batch, n: int) -> pb.Ack:
        if down["on"]:
            return pb.Ack(seq=b.seq, code=pb.UNAVAILABLE, reason="broker down")
        return pb.Ack(seq=b.seq, code=pb.OK)

    ing = ScriptedIngest(policy=policy)
    await ing.start()
    caplog.set_level(logging.INFO, logger="collector.agent.sender")
    try:
        s = agent_settings(
            tmp_path, f"127.0.0.1:{ing.port}", ingest={"backoff_initial_s": 0.01, "backoff_max_s": 0.05}
        )
        async with AgentPipeline(s, agent_id="a1", site=SITE, boot_id="b", spool_dir=tmp_path) as p:
            for streak in range(2):
                down["on"] = True
                await p.submit(fill(p.new_builder(), time.time_ns()))
                want = 5 * (streak + 1)
                assert await eventually(lambda w=want: p.stats.retriable_acks >= w)
                down["on"] = False
                assert await eventually(lambda: len(p.spool) == 0)
        msgs = [r.getMessage() for r in caplog.records]
        failed = [m for m in msgs if "not stored" in m]
        recovered = [m for m in msgs if "recovered" in m]
        assert len(failed) == 2, msgs  # one per streak, not one per retry
        assert len(recovered) == 2, msgs
        assert all("retriable ack(s)" in m and "UNAVAILABLE" in m for m in recovered)
    finally:
        await ing.stop()


@given(st.integers(min_value=1, max_value=10**9))
def test_the_agent_ends_an_idle_stream_a_margin_before_the_ingests_stated_timeout(ms: int) -> None:
    """Read from the ingest's initial metadata (`stream-idle-timeout-ms`): the agent's own idle
    close comes before the ingest's, by a tenth of it but at least 1 s, and never earlier than
    half of it."""
    timeout = ms / 1000
    after = idle_close_after((("other", "x"), ("stream-idle-timeout-ms", str(ms))))
    assert after is not None
    assert timeout / 2 <= after < timeout
    assert timeout - after >= min(1.0, timeout / 2) * (1 - 1e-12)
    assert timeout - after <= max(1.0, timeout / 10) * (1 + 1e-12)


@pytest.mark.parametrize(
    "metadata", [None, (), (("stream-idle-timeout-ms", "soon"),), (("stream-idle-timeout-ms", "0"),)]
)
def test_an_ingest_that_states_no_usable_idle_timeout_ends_idle_streams_itself(metadata: Any) -> None:
    assert idle_close_after(metadata) is None
