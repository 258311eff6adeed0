"""Cases 2, 3 and 6 of the fault suite (run concurrently by test_suite.py): the broker paused
behind the ingest, the ingest stopped while the broker is paused, and the network between
agents and ingest cut, slowed and reset. See docs/reliability.md."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.faults.harness import Stack, scaled

WINDOW = 32
PRODUCE_TIMEOUT_S = 5.0  # kafka.produce_timeout_s of the harness's ingest


async def _spooled(s: Stack) -> float:
    total = 0.0
    for a in s.agents:
        v = s.value(await s.scrape_agent(a), "collector_agent_spool_batches", agent_id=a.agent_id)
        total += v or 0.0
    return total


async def case2_broker_paused_then_resumed(tmp_path: Path) -> None:
    # the idle timeout is above the pauses: windows then close by records only, and equal
    # the truth (a longer silence would close them by the wall clock and make the backlog late)
    # the allowed lateness covers the pause: retried batches may land in Kafka behind newer
    # ones of the same site by up to the pause (a sample later than the lateness is dropped
    # and counted as late by design, which the truth comparison would flag)
    async with Stack(
        tmp_path, allowed_lateness_s=scaled(30.0, 150.0), aggregate={"idle_timeout_s": scaled(120.0, 300.0)}
    ) as s:
        await s.start_ingest()
        await s.start_aggregator()
        await s.start_agents()
        assert await s.wait_acked(20)
        assert s.ingest is not None
        rss0 = s.ingest.rss_bytes()
        figures = []
        for pause_s in (scaled(8.0, 30.0), scaled(16.0, 120.0)):
            s.broker.pause()  # SIGSTOP
            t_stop = time.monotonic()
            # acks stop within the produce deadline: after it, the acked count stands still
            await asyncio.sleep(PRODUCE_TIMEOUT_S + 2.0)
            frozen = s.acked_total()
            spool_a = await _spooled(s)
            await asyncio.sleep(max(0.0, pause_s - (time.monotonic() - t_stop)))
            assert s.acked_total() == frozen, "the ingest acknowledged while Kafka was paused"
            spool_b = await _spooled(s)
            assert spool_b > spool_a, "agents' spools should grow while nothing is acknowledged"
            rss = s.ingest.rss_bytes()
            s.broker.resume()  # SIGCONT
            t_resume = time.monotonic()
            issued = sum(len(i) for i, _ in s.ledgers().values())
            assert await s.wait_acked(issued - 1, within=60), "not drained within 60 s of resume"
            figures.append((pause_s, spool_b, time.monotonic() - t_resume, rss))
        # memory bounded: what the ingest holds during a pause is its in-flight window, not the
        # agents' backlog
        assert max(f[3] for f in figures) - rss0 < 150 * 2**20, figures
        await s.drain()
        await s.wait_published(within=200)
        rep = await s.check()
    print("case2", rep.summary(), "pauses (s, spooled, drain_s, ingest_rss):", figures)
    rep.assert_ok(max_duplicates=4 * WINDOW * len(s.agents), windows=True)


def _log_time(log: str, marker: str) -> float:
    """Seconds since midnight of the last log line containing `marker`."""
    lines = [ln for ln in log.splitlines() if marker in ln]
    assert lines, f"no {marker!r} line in the log"
    hms = lines[-1].split()[1]  # "2026-12-01 09:54:15,162 INFO ..."
    h, m, rest = hms.split(":")
    return int(h) * 3600 + int(m) * 60 + float(rest.replace(",", "."))


async def case3_sigterm_to_ingest_while_broker_paused(tmp_path: Path) -> None:
    grace = 2.0
    async with Stack(
        tmp_path, ingest={"grace_period_s": grace}, proxy=True, aggregate={"idle_timeout_s": 120.0}
    ) as s:
        await s.start_ingest()
        await s.start_aggregator()
        await s.start_agents()
        assert await s.wait_acked(20)
        s.broker.pause()
        await asyncio.sleep(2.0)  # batches are in flight inside the ingest, not yet in Kafka
        assert s.ingest is not None
        acked_at_term = s.acked_total()
        # the outer bound only keeps a hung ingest from hanging the case: the grace period is
        # checked from the ingest's own log below (the scheduler of a loaded CI machine adds
        # to the wall time of a process exit, not to what the ingest waits for)
        rc = await s.ingest.terminate(within=grace + 30.0)
        took = s.ingest.stop_took_s
        assert rc not in (-9, 137), f"the ingest did not exit ({took:.1f}s): SIGKILLed"
        stopping = _log_time(s.ingest.log(), "stopping: answering in-flight")
        stopped = _log_time(s.ingest.log(), "ingest stopped")
        assert stopped - stopping <= grace + 1.5, (
            f"the ingest overstayed its grace period ({grace}s): {stopped - stopping:.1f}s"
        )
        acked_after = s.acked_total()
        s.broker.resume()
        await s.start_ingest()
        await asyncio.sleep(2.0)
        await s.drain()
        await s.wait_published()
        rep = await s.check()
    print(
        "case3", rep.summary(), f"exit={rc} took={took:.1f}s acked_during_term={acked_after - acked_at_term}"
    )
    # acknowledges nothing it did not write: every acknowledged batch is in Kafka
    rep.assert_ok(max_duplicates=2 * WINDOW * len(s.agents), windows=True)


async def case6_network_cut_slowed_and_reset(tmp_path: Path) -> None:
    async with Stack(tmp_path, proxy=True, aggregate={"idle_timeout_s": 120.0}) as s:
        await s.start_ingest()
        await s.start_aggregator()
        await s.start_agents()
        assert await s.wait_acked(20)
        proxy = s.proxy
        assert proxy is not None
        reconnect = []
        # a cut: bytes stop both ways, connections stay open
        proxy.pause()
        await asyncio.sleep(scaled(8.0, 30.0))
        proxy.resume()
        reconnect.append(await s.wait_all_connected_and_acking(within=10.0))
        # slowed: 200 ms each way
        proxy.delay_s = 0.2
        before = s.acked_total()
        await asyncio.sleep(scaled(4.0, 30.0))
        assert s.acked_total() > before, "nothing acknowledged through a 200 ms link"
        proxy.delay_s = 0.0
        # resets, while flowing
        for _ in range(3):
            await proxy.reset()
            reconnect.append(await s.wait_all_connected_and_acking(within=10.0))
            await asyncio.sleep(0.5)
        await s.drain()
        await s.wait_published()
        rep = await s.check()
    print("case6", rep.summary(), "reconnect_s:", [round(r, 2) for r in reconnect])
    rep.assert_ok(max_duplicates=5 * WINDOW * len(s.agents), windows=True)
