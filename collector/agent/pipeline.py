"""AgentPipeline: the spool and the sender of one agent identity, behind one small API.

Used by `collector agent` (one pipeline fed by the server/link/cell sources) and by
`collector simulate` (many pipelines in one process, one per simulated site). A caller:

    async with AgentPipeline(settings.agent, agent_id="jp-tokyo-01-a", site=site,
                             boot_id=uuid.uuid4().hex, spool_dir=Path("/var/lib/x")) as p:
        b = p.new_builder()
        b.counter(counter_def("link_in_octets", {...}, unit="bytes"), t_ns, 123)
        seq = await p.submit(b, priority=1)   # durable in the spool once this returns
        await p.wait_drained(10.0)            # every spooled batch acked (or moved aside)

`settings` supplies the ingest target, TLS, token, window, backoff and spool limits; the
constructor's arguments override what differs per identity (the simulator's sites share one
AgentSettings). `spool_dir` must be private to the identity: the persisted seq lives there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from collector.agent.batch import BatchBuilder, SiteInfo
from collector.agent.config import AgentSettings
from collector.agent.metrics import AgentStats, collector_for
from collector.agent.sender import Sender
from collector.agent.spool import DROP_IO_ERROR, DROP_TOO_LARGE, Spool, SpoolError
from collector.lifecycle import Component

log = logging.getLogger(__name__)


class AgentPipeline(Component):
    """Spool + sender for one agent identity. `start/stop` are idempotent; `async with` works."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        agent_id: str,
        site: SiteInfo,
        boot_id: str,
        spool_dir: Path,
        token: str | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if not agent_id:
            raise ValueError("agent_id must not be empty")
        self.settings = settings
        self.agent_id = agent_id
        self.site = site
        self.boot_id = boot_id
        self.spool = Spool(settings.spool, Path(spool_dir))
        self.sender = Sender(settings.ingest, self.spool, token=token)
        self._registry = registry
        self._housekeeping: asyncio.Task[None] | None = None
        self._started = False

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self.spool.open()
        await self.sender.start()
        self._housekeeping = asyncio.create_task(
            self._housekeep(), name=f"agent-housekeeping-{self.agent_id}"
        )
        if self._registry is not None:
            collector_for(self._registry).add(self)
        self._started = True

    async def stop(self, grace_s: float | None = None) -> None:
        """Send for up to `grace_s` (default settings.shutdown_grace_s), then close.

        Batches not acked by then stay in the spool and are sent after the next start.
        """
        if not self._started:
            return
        self._started = False
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        await self.sender.stop(grace)
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
            self._housekeeping = None
        self.spool.close()
        if self._registry is not None:
            collector_for(self._registry).remove(self)

    async def _housekeep(self) -> None:
        period = min(self.settings.spool.fsync_interval_s, 5.0)
        while True:
            await asyncio.sleep(period)
            self.spool.expire()
            if self.spool.rejects_pending:
                self.spool.retry_rejected()
            if self.settings.spool.fsync != "never":
                self.spool.sync()

    # --- producing ---------------------------------------------------------------------
    def new_builder(self) -> BatchBuilder:
        return BatchBuilder(self.agent_id, self.site, self.boot_id, self.spool.unissued)

    async def submit(self, builder: BatchBuilder, *, priority: int = 0) -> int:
        """Build the batch with the next persisted seq, write it to the spool, return the seq.

        `priority` 0..9: when the spool is full the lowest priority is dropped first. The
        batch is on disk when this returns (fsynced too with spool.fsync = always). If the
        spool had to drop it (too large for the spool, disk error) the seq is still used and
        the drop is counted.
        """
        if not self._started:
            raise RuntimeError("AgentPipeline.submit before start()")
        try:
            seq = self.spool.next_seq()
        except OSError as exc:
            # No seq can be reserved (disk full, read-only): the batch cannot be kept. Count
            # it by reason and tell the caller, which counts a failed collection.
            self.spool.counters.dropped[DROP_IO_ERROR] += 1
            self.spool.write_ok = False
            log.error(
                "cannot reserve a seq in %s (%s): batch of %d samples dropped",
                self.spool.dir,
                exc.strerror or exc,
                len(builder),
            )
            raise SpoolError(f"seq reservation failed: {exc.strerror or exc}") from exc
        now = time.time_ns()
        payload = builder.build_bytes(seq, now)
        if len(payload) > self.settings.ingest.max_batch_bytes:
            log.error(
                "batch seq %d is %d bytes, over agent.ingest.max_batch_bytes (%d): dropped;"
                " split the source (fewer links per adapter)",
                seq,
                len(payload),
                self.settings.ingest.max_batch_bytes,
            )
            self.spool.discard(seq, DROP_TOO_LARGE)
            return seq
        self.spool.append(seq, priority, now, payload)
        if self.settings.spool.fsync == "always":
            self.spool.sync()
        self.sender.wake()
        return seq

    async def wait_drained(self, timeout_s: float) -> bool:
        """True once every spooled batch is acked or moved aside; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while len(self.spool):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # Acks wake this at once; expiry and drops are seen within 0.1 s.
            await self.sender.wait_progress(min(left, 0.1))
        return True

    # --- introspection -----------------------------------------------------------------
    @property
    def stats(self) -> AgentStats:
        sp = self.spool
        oldest = sp.oldest_created_unix_nano()
        age = max(0.0, (time.time_ns() - oldest) / 1e9) if oldest is not None else 0.0
        c = sp.counters
        return AgentStats(
            sent=self.sender.counters.sent,
            acked=c.acked,
            rejected=c.rejected,
            dropped=dict(c.dropped),
            spool_bytes=sp.bytes,
            spool_batches=len(sp),
            oldest_unacked_age_s=age,
            in_flight=self.sender.in_flight,
            connected=self.sender.connected,
            retriable_acks=self.sender.counters.retriable_acks,
            stream_failures=self.sender.counters.stream_failures,
            last_seq=sp.last_seq,
            spool_writable=sp.write_ok,
            rejects_pending=sp.rejects_pending,
        )
