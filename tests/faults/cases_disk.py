"""Case 5 of the fault suite (run concurrently by test_suite.py): the agent's disk fails under
it. The agent runs under `fiu-run -x` (libfiu's POSIX preload) and `fiu-ctrl` makes every
write(2) of the process fail with ENOSPC for a while, as a full spool disk does: segment
appends and seq reservations fail. See docs/reliability.md."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from tests.faults.harness import Stack, scaled

WINDOW = 32


async def _fiu(pid: int, command: str) -> None:
    p = await asyncio.create_subprocess_exec("fiu-ctrl", "-c", command, str(pid))
    assert await p.wait() == 0, f"fiu-ctrl {command} {pid} failed"


async def case5_agent_spool_disk_full(tmp_path: Path) -> None:
    if shutil.which("fiu-run") is None or shutil.which("fiu-ctrl") is None:
        pytest.fail("fiu-run/fiu-ctrl missing: `make setup-test` installs fiu-utils")
    # small seq blocks: reservations (an fsynced write) happen all the time, like appends
    async with Stack(
        tmp_path, sites=2, agent={"spool": {"seq_block": 4}}, aggregate={"idle_timeout_s": 120.0}
    ) as s:
        await s.start_ingest()
        await s.start_aggregator()
        await s.start_agents(fault_injection={s.site_ids[0]})
        assert await s.wait_acked(10)
        victim = s.agents[0]
        assert victim.proc is not None
        await _fiu(victim.proc.pid, "enable name=posix/io/rw/write,failinfo=28")  # ENOSPC
        text = ""
        try:
            await asyncio.sleep(scaled(4.0, 30.0))
            text = await s.scrape_agent(victim)
        finally:
            await _fiu(victim.proc.pid, "disable name=posix/io/rw/write")
        assert victim.proc.alive(), "the agent died of a full disk"
        aid = victim.agent_id
        dropped = s.value(text, "collector_agent_batches_dropped_total", agent_id=aid, reason="io_error") or 0
        errors = s.value(text, "collector_agent_source_errors_total", agent_id=aid, source="link")
        writable = s.value(text, "collector_agent_spool_writable", agent_id=aid)
        assert dropped > 0, "drops of a full disk must be counted by reason"
        assert (errors or 0) > 0, "a failed seq reservation is a failed collection, counted"
        assert writable == 0, "the agent's metrics must say the spool is not writable"
        # it recovers: new batches are spooled and delivered again
        before = s.acked_total()
        assert await s.wait_acked(before + 5, within=30)
        after = await s.scrape_agent(victim)
        assert s.value(after, "collector_agent_spool_writable", agent_id=aid) == 1
        await s.drain()
        await s.wait_published()
        rep = await s.check()
        agg = s.aggregators[0]
        assert agg is not None
        atext = await s.scrape_aggregator(int(agg.match["port"]))  # type: ignore[index]
    missing = s.value(atext, "collector_site_batches_missing", site=victim.site) or 0
    print(
        "case5",
        rep.summary(),
        f"dropped_io_error={dropped} source_errors={errors} aggregator_missing={missing}",
    )
    rep.assert_ok(max_duplicates=2 * WINDOW, windows=True)
    # nothing silently lost: every seq the aggregator misses is a drop the agent counted
    assert missing <= dropped
