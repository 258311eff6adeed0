"""Runs the simulated fleet: generate blocks, cut batches, deliver them, record the truth.

The component `collector simulate` and `collector run` embed. Two delivery modes:

* agents (`target` set): every site is a real agent stream - its own `AgentPipeline` (spool
  and sender, the same code as `collector agent`), many in one process, to the ingest service;
* kafka (`bootstrap` set): batches go straight into Kafka, bypassing ingest, exactly as the
  ingest service writes them (key = site_id, value = Batch bytes, headers schema/agent_id/seq,
  acks=all). Fast enough to feed the aggregator benchmark.

`Simulation` is the synchronous core (deterministic; used by tests and the benchmark);
`FleetRunner` paces it in wall time (`acceleration`) and owns the sink's lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from collector.agent.batch import BatchBuilder
from collector.config import Settings
from collector.errors import BrokerError, ConfigError
from collector.kafka import producer_kwargs, record_headers
from collector.lifecycle import Component
from collector.simulate.batches import PlannedBatch, Planner
from collector.simulate.config import SimulateSettings
from collector.simulate.generator import Block, FleetGenerator
from collector.simulate.pm_files import PmWriter
from collector.simulate.topology import CELL_COUNTERS, CELL_GAUGES, FleetModel, start_ns_for
from collector.simulate.truth import TruthRecorder

log = logging.getLogger(__name__)

# Samples generated per block in fast-forward (bounds memory and event-loop stalls).
_BLOCK_SAMPLES = 200_000
# Agents mode faster than real time and no fixed start: how far in the past the run starts
# (below the ingest's default max_past_age_s of 7 days).
AGENT_BACKFILL_S = 6 * 86400


def site_tokens(settings: Settings | SimulateSettings) -> dict[str, str]:
    """site_id -> bearer token of every simulated site (deterministic from the seed)."""
    s = settings.simulate if isinstance(settings, Settings) else settings
    model = FleetModel(s)
    return {st.info.site_id: model.token(st.index) for st in model.sites}


def write_tokens_file(path: Path, tokens: dict[str, str]) -> Path:
    """Write the ingest's token file (YAML mapping token -> site_id)."""
    path.write_text(yaml.safe_dump({tok: site for site, tok in sorted(tokens.items())}))
    return path


class Simulation:
    """Model + generator + batch planner (+ truth): the deterministic core of a run."""

    def __init__(
        self,
        settings: SimulateSettings,
        *,
        start_ns: int | None = None,
        paced: bool = False,
        truth: bool = False,
        truth_samples: bool = False,
    ) -> None:
        self.settings = settings
        self.model = FleetModel(settings)
        self.start_ns = start_ns_for(settings) if start_ns is None else start_ns
        self.gen = FleetGenerator(self.model, self.start_ns)
        tpb = Planner.ticks_per_batch_for(self.model, paced)
        self.planner = Planner(self.model, self.gen, tpb)
        self.truth = (
            TruthRecorder(self.model, self.gen, samples=truth_samples) if truth or truth_samples else None
        )
        if paced:
            self.block_ticks = tpb
        else:
            per_tick = max(1, self.model.nc + self.model.ng)
            self.block_ticks = tpb * max(1, _BLOCK_SAMPLES // (per_tick * tpb))
        self.delivered = 0
        self.blocks: list[Block] | None = None  # set to a list to keep the generated blocks

    @property
    def next_tick(self) -> int:
        return self.gen.next_tick

    def tick_time_ns(self, tick: int) -> int:
        return self.start_ns + tick * self.model.interval_ns

    def step(self, max_ticks: int | None = None) -> list[PlannedBatch]:
        """Generate the next block (at most `max_ticks` ticks); its batches in delivery order."""
        n = self.block_ticks if max_ticks is None else min(self.block_ticks, max_ticks)
        block = self.gen.block(n)
        if self.truth is not None:
            self.truth.add(block)
        if self.blocks is not None:
            self.blocks.append(block)
        return list(self.planner.plan(block))

    def finish(self) -> list[PlannedBatch]:
        """Late batches still held back at the end of the run."""
        return list(self.planner.flush())

    def record(self, b: PlannedBatch) -> None:
        if self.truth is not None:
            self.truth.delivered(self.delivered, b)
        self.delivered += 1

    def run(self, ticks: int) -> list[PlannedBatch]:
        """Everything of a run of `ticks` ticks, held-back batches last (tests, tools)."""
        out: list[PlannedBatch] = []
        while self.next_tick < ticks:
            out += self.step(ticks - self.next_tick)
        out += self.finish()
        for b in out:
            self.record(b)
        return out

    def encode(self, b: PlannedBatch) -> bytes:
        return self.planner.encode(b)


class Sink(Protocol):
    records: int
    samples: int

    async def start(self) -> None: ...
    async def send(self, b: PlannedBatch) -> bool: ...
    async def flush(self, timeout_s: float) -> bool: ...
    async def stop(self) -> None: ...


class KafkaSink:
    """Mode 2: Batch bytes straight into Kafka, as the ingest service would write them."""

    def __init__(
        self, sim: Simulation, settings: Settings, bootstrap: str, topic: str, max_pending: int = 1024
    ) -> None:
        self.sim = sim
        self.settings = settings
        self.bootstrap = bootstrap
        self.topic = topic
        self.max_pending = max_pending
        self._producer: Any = None
        self._pending: deque[asyncio.Future[object]] = deque()
        self.records = 0
        self.samples = 0

    async def start(self) -> None:
        kwargs = producer_kwargs(self.settings.kafka, self.bootstrap)
        kwargs["enable_idempotence"] = False  # duplicates are injected on purpose
        producer = AIOKafkaProducer(**kwargs)
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise BrokerError(f"simulator cannot reach Kafka at {self.bootstrap}: {exc}") from exc
        self._producer = producer

    async def send(self, b: PlannedBatch) -> bool:
        assert self._producer is not None
        value = self.sim.encode(b)
        try:
            fut = await self._producer.send(
                self.topic,
                value,
                key=b.site.info.site_id.encode(),
                headers=record_headers(b.site.agent_id, b.seq),
            )
        except KafkaError as exc:
            raise BrokerError(f"simulator produce failed: {exc}") from exc
        self._pending.append(fut)
        self.records += 1
        self.samples += b.samples
        if len(self._pending) >= self.max_pending:
            await self._drain(self.max_pending // 2)
        return True

    async def _drain(self, keep: int) -> None:
        try:
            while len(self._pending) > keep:
                await self._pending.popleft()
        except KafkaError as exc:
            raise BrokerError(f"simulator produce failed: {exc}") from exc

    async def flush(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._drain(0), timeout_s)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        p, self._producer = self._producer, None
        if p is not None:
            await p.stop()


class AgentSink:
    """Mode 1: each site a real agent (AgentPipeline: spool + sender) streaming to ingest.

    An injected restart stops the site's pipeline without grace and starts a new one with the
    next boot_id on the same spool: what was not acked yet is sent again by the new stream.
    A duplicate planned by the simulator is not sent (an agent cannot resend a seq on
    purpose); real duplicates come from resends after a lost ack.
    """

    def __init__(
        self,
        sim: Simulation,
        settings: Settings,
        target: str,
        *,
        tokens: dict[str, str] | None,
        ca_file: Path | None,
        work_dir: Path,
        restart_grace_s: float = 0.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        from collector.agent.pipeline import AgentPipeline

        self._cls = AgentPipeline
        self.sim = sim
        ing = settings.agent.ingest.model_copy(
            update={
                "target": target,
                "ca_file": ca_file,
                "plaintext": ca_file is None,
                "server_name": settings.agent.ingest.server_name or ("localhost" if ca_file else ""),
            }
        )
        self.agent_settings = settings.agent.model_copy(update={"ingest": ing})
        self.tokens = tokens or {}
        self.work_dir = work_dir
        self.restart_grace_s = restart_grace_s
        self.registry = registry
        self.pipelines: dict[int, Any] = {}
        self._epoch: dict[int, int] = {}
        self.skipped_duplicates = 0
        self.records = 0
        self.samples = 0
        # PM files: the cells go to a PM directory per site, read by a real cell source
        self.pm: PmWriter | None = None
        self.cell_sources: dict[int, Any] = {}
        s = sim.settings
        if s.pm_files and s.cells_per_site:
            from collector.agent.config import CellSourceSettings
            from collector.agent.sources.cell import CellSource

            sim.blocks = []
            dirs = {st.index: work_dir / f"{st.info.site_id}.pm" for st in sim.model.sites}
            self.pm = PmWriter(sim.model, s.pm_granularity_s, dirs)
            for i, d in dirs.items():
                self.cell_sources[i] = CellSource(
                    CellSourceSettings(
                        enabled=True,
                        pm_dir=d,
                        settle_s=0,
                        after="delete",
                        max_age_s=AGENT_BACKFILL_S + 3600.0,
                    ),
                    max_batch_bytes=self.agent_settings.ingest.max_batch_bytes,
                )

    def _pipeline(self, site: int, epoch: int) -> Any:
        st = self.sim.model.sites[site]
        return self._cls(
            self.agent_settings,
            agent_id=st.agent_id,
            site=st.info,
            boot_id=self.sim.gen.sites[site].boot_ids[epoch],
            spool_dir=self.work_dir / st.info.site_id,
            token=self.tokens.get(st.info.site_id),
            registry=self.registry,
        )

    async def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for st in self.sim.model.sites:
            p = self._pipeline(st.index, 0)
            await p.start()
            self.pipelines[st.index] = p
            self._epoch[st.index] = 0

    async def send(self, b: PlannedBatch) -> bool:
        if b.kind == "duplicate":
            self.skipped_duplicates += 1
            return False
        i = b.site.index
        if b.epoch > self._epoch[i]:  # the agent restarted
            old = self.pipelines[i]
            await old.stop(self.restart_grace_s)
            p = self._pipeline(i, b.epoch)
            await p.start()
            self.pipelines[i] = p
            self._epoch[i] = b.epoch
        boot = self.sim.gen.sites[i].boot_ids[b.epoch]
        builder = BatchBuilder(b.site.agent_id, b.site.info, boot)
        if self.pm is None:
            self.sim.planner.fill_builder(b, builder)
        elif not _fill_without_cells(self.sim.planner, b, builder):
            return False  # cells only: they travel as PM files
        b.seq = await self.pipelines[i].submit(builder)
        self.records += 1
        self.samples += b.samples
        return True

    async def pm_step(self) -> None:
        """Write the PM files of the periods the new blocks finished; the sites' cell sources
        read them into their agents (parse -> spool), as `collector agent` would."""
        if self.pm is None or not self.sim.blocks:
            return
        from collector.agent.sources import collect_once

        blocks, self.sim.blocks = self.sim.blocks, []
        wrote: set[int] = set()
        for blk in blocks:
            wrote.update(self.pm.add(blk))
        for i in sorted(wrote):
            src = self.cell_sources[i]
            await collect_once(src, self.pipelines[i])
            while src.backlog:
                await collect_once(src, self.pipelines[i])

    async def flush(self, timeout_s: float) -> bool:
        await self.pm_step()
        results = await asyncio.gather(*(p.wait_drained(timeout_s) for p in self.pipelines.values()))
        return all(results)

    async def stop(self) -> None:
        pipes, self.pipelines = self.pipelines, {}
        await asyncio.gather(*(p.stop() for p in pipes.values()))


_CELL_METRICS = frozenset((*CELL_COUNTERS, *CELL_GAUGES))


def _fill_without_cells(planner: Planner, b: PlannedBatch, builder: BatchBuilder) -> bool:
    """fill_builder without the cell series (they go as PM files); False when nothing is left."""
    defs = planner.series_defs(b)
    keep = np.array([d.metric not in _CELL_METRICS for d in defs], bool)
    if not keep.any():
        return False
    remap = np.cumsum(keep) - 1
    kept = [d for d, k in zip(defs, keep, strict=True) if k]
    (ci, ct, cv), (gi, gt, gv) = planner.columns(b)
    mc, mg = keep[ci], keep[gi]
    if mc.any():
        builder.counter_columns(kept, remap[ci[mc]], ct[mc], cv[mc])
    if mg.any():
        builder.gauge_columns(kept, remap[gi[mg]], gt[mg], gv[mg])
    return bool(mc.any() or mg.any())


class FleetRunner(Component):
    """The simulated fleet as a long-lived component: `start()`, `stop()`, `async with`.

    `target` (ingest HOST:PORT) selects agent mode; otherwise `bootstrap` (or
    kafka.bootstrap_servers) selects direct-to-Kafka mode. `tokens` maps site_id -> bearer
    token (see `site_tokens`), `ca_file` is the CA of the ingest's TLS certificate (None means
    plaintext), `work_dir` holds the agents' spools, `registry` receives the agents' self-metrics
    (agents mode). With `duration_s` (simulated seconds) the run ends by itself (`wait()`);
    `truth_dir` receives the ground truth at stop.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        target: str | None = None,
        bootstrap: str | None = None,
        tokens: dict[str, str] | None = None,
        ca_file: Path | None = None,
        work_dir: Path,
        topic: str | None = None,
        duration_s: float | None = None,
        truth_dir: Path | None = None,
        truth_samples: bool = False,
        start_ns: int | None = None,
        drain_timeout_s: float = 30.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        s = settings.simulate
        self.paced = s.acceleration > 0
        if target and s.acceleration != 1 and start_ns is None and s.start_unix_s is None:
            # The ingest rejects samples from the future: an accelerated agent fleet replays
            # the recent past and continues in real time once it has caught up with now.
            start_ns = start_ns_for(s, time.time() - AGENT_BACKFILL_S)
        self.sim = Simulation(
            s, start_ns=start_ns, paced=self.paced, truth=truth_dir is not None, truth_samples=truth_samples
        )
        self.truth_dir = truth_dir
        self.max_ticks = math.ceil(duration_s / self.sim.model.interval_s) if duration_s is not None else None
        self.drain_timeout_s = drain_timeout_s
        self.sink: Sink
        if target:
            self.mode = "agents"
            self.sink = AgentSink(
                self.sim,
                settings,
                target,
                tokens=tokens,
                ca_file=ca_file,
                work_dir=work_dir,
                registry=registry,
            )
        else:
            bs = bootstrap or settings.kafka.bootstrap_servers
            if not bs:
                raise ConfigError(
                    "the simulator needs an ingest target or a Kafka bootstrap", key="kafka.bootstrap_servers"
                )
            self.mode = "kafka"
            self.sink = KafkaSink(self.sim, settings, bs, topic or settings.kafka.topic)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.drained: bool | None = None

    @property
    def records(self) -> int:
        return self.sink.records

    @property
    def samples(self) -> int:
        return self.sink.samples

    async def start(self) -> None:
        if self._task is not None:
            return
        await self.sink.start()
        self._task = asyncio.create_task(self._run(), name="simulate-fleet")

    async def _run(self) -> None:
        sim = self.sim
        s = sim.settings
        loop = asyncio.get_running_loop()
        wall0 = loop.time()
        while not self._stop.is_set():
            left = None if self.max_ticks is None else self.max_ticks - sim.next_tick
            if left is not None and left <= 0:
                break
            n = sim.block_ticks if left is None else min(sim.block_ticks, left)
            last = sim.next_tick + n - 1
            delay = 0.0
            if self.paced:
                delay = wall0 + last * sim.model.interval_s / s.acceleration - loop.time()
            if self.mode == "agents":  # never ahead of the wall clock (see __init__)
                delay = max(delay, (sim.tick_time_ns(last) - time.time_ns()) / 1e9)
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    break
            for b in sim.step(left):
                if await self.sink.send(b):
                    sim.record(b)
            if isinstance(self.sink, AgentSink):
                await self.sink.pm_step()
            await asyncio.sleep(0)
        for b in sim.finish():
            if await self.sink.send(b):
                sim.record(b)
        self.drained = await self.sink.flush(self.drain_timeout_s)

    async def wait(self) -> None:
        """Until the run ends by itself (duration reached) or is stopped."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _stop_wait(self, timeout_s: float) -> None:
        """Sleep up to `timeout_s`, waking at once when the run ends."""
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task}, timeout=timeout_s)

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        try:
            if self._task is not None:
                await self._task
        finally:
            await self.sink.stop()
            if self.truth_dir is not None and self.sim.truth is not None:
                await asyncio.to_thread(self.sim.truth.write, self.truth_dir)
