"""The aggregator component: Kafka consumer group -> partition states -> /metrics.

Where the pieces meet: the lifecycle (`start`/`stop`, Kafka clients, the /metrics server),
partition assignment (restore or start each assigned partition, pause one whose checkpoint
cannot be read) and the consume loop. One asyncio task polls the telemetry topic in
micro-batches (`getmany`), feeds each partition's records to its `PartitionState`
(collector/aggregate/state.py), advances watermarks, hands records that are not valid
batches to the dead-letter topic (dead_letter.py), and every `checkpoint_interval_s`
checkpoints each owned partition through the state topic (state_topic.py), so a new owner
replays deterministically: closed windows come out identical and none is lost. Its own
metrics are in self_metrics.py, the window log in window_log.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CorruptRecordException, KafkaConnectionError, KafkaError
from prometheus_client import CollectorRegistry, generate_latest

from collector import kafka, kafka_crc
from collector.aggregate.dead_letter import DeadLetters, DeadRecord
from collector.aggregate.frames import NS
from collector.aggregate.heap import retain_freed_heap
from collector.aggregate.outputs import FAMILIES, build_frames
from collector.aggregate.self_metrics import SelfMetrics
from collector.aggregate.state import PartitionState, WindowSink
from collector.aggregate.state_topic import StateTopic, checkpoint_due, checkpoint_every
from collector.aggregate.window_log import WindowLog
from collector.backoff import backoff_delay
from collector.errors import BrokerError, ProtocolError
from collector.exposition.http import MetricsServer, serve_metrics
from collector.exposition.render import FamilyText, render
from collector.lifecycle import Component

if TYPE_CHECKING:
    from collector.config import Settings

log = logging.getLogger(__name__)

_FAMILY_TEXT = tuple(FamilyText(f.name, f.type, f.help, f.labels) for f in FAMILIES)
# Retry delays (full-jitter backoff, collector/backoff.py): an unreadable checkpoint's
# restore, and the consume loop after a Kafka error.
_RESTORE_RETRY_S = 10.0
_RESTORE_RETRY_MAX_S = 300.0
_CONSUMER_RETRY_S = 0.1
_CONSUMER_RETRY_MAX_S = 5.0
# aiokafka asks for a partition's next fetch only once its buffer is drained, from its own
# fetcher task, three event-loop steps after getmany returns (the drained signal wakes the
# routine, which starts a request task, which writes the request). The consume loop yields
# that many steps (and one spare) before its synchronous processing, so the broker prepares
# the next fetch while this one is processed instead of after (docs/aggregator.md, Performance).
_FETCH_HANDOFF_STEPS = 4


async def _hand_off_to_fetcher() -> None:
    for _ in range(_FETCH_HANDOFF_STEPS):
        await asyncio.sleep(0)


class _QuietBootstrap(logging.Filter):
    """Drops aiokafka's own 'Unable connect to' lines while the first connection is tried:
    the aggregator reports an unreachable broker in one line naming its address."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Unable connect to" not in record.getMessage()


class _Listener(ConsumerRebalanceListener):
    def __init__(self, agg: Aggregator) -> None:
        self.agg = agg

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.agg._on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.agg._on_assigned(list(assigned))


class Aggregator(Component):
    """`async with Aggregator(settings, bootstrap=...) as agg:` consumes until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        bootstrap: str,
        registry: CollectorRegistry | None = None,
        on_window: WindowSink | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.aggregate
        self.bootstrap = bootstrap
        self.topic = settings.kafka.topic
        self.dlq_topic = settings.kafka.dead_letter_topic
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = SelfMetrics(self.registry)
        self._window_log: WindowLog | None = None
        if on_window is None and self.cfg.window_log is not None:
            self._window_log = WindowLog(self.cfg.window_log)
            on_window = self._window_log
        self.on_window = on_window
        self.states: dict[int, PartitionState] = {}
        self._state_topic = StateTopic(self.cfg, self.topic, self.metrics)
        self._last_record_wall: dict[int, float] = {}
        # per partition: samples added since its last close, and when that close was (see
        # _process: closes are batched up to max_close_samples / close_interval_s)
        self._unclosed: dict[int, int] = {}
        self._closed_at: dict[int, float] = {}
        # since when the member owns partitions (None while it owns none): the periodic
        # checkpoint interval counts from then (state_topic.checkpoint_due)
        self._owned_since: float | None = None
        # assigned partitions whose state could not be restored: paused, retried from the loop
        self._pending: dict[TopicPartition, tuple[float, int]] = {}  # -> (due, failed retries)
        self.metrics.partitions_paused.set_function(lambda: len(self._pending))
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._pointer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._server: MetricsServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._dead_letters = DeadLetters(
            self.topic, self.dlq_topic, settings.kafka.produce_timeout_s, self.metrics, self._stopping
        )
        self._started = False
        # set when the consume loop died of an unexpected error: the member is useless then,
        # and the process should exit so its supervisor restarts it from the checkpoints
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None
        self._render_cache: tuple[tuple[object, ...], bytes] | None = None
        self._render_lock = asyncio.Lock()
        self.renders = 0  # bodies actually rendered (the rest of the scrapes hit the cache)
        self.render_cpu_s = 0.0  # CPU time of those renders (worker thread), for the benchmark

    # ------------------------------------------------------------------ lifecycle
    @property
    def metrics_port(self) -> int:
        return self._server.bound_port if self._server else 0

    @property
    def metrics_tls(self) -> bool:
        """True when /metrics is served over HTTPS (aggregate.metrics_web_config)."""
        return bool(self._server and self._server.web and self._server.web.tls)

    def _kafka_kwargs(self) -> dict[str, object]:
        return kafka.client_kwargs(self.settings.kafka, self.bootstrap)

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._stopping.clear()
        retain_freed_heap(self.cfg.heap_retain_mb)
        kafka_crc.install()  # fetched batches' CRCs checked in hardware (collector/kafka_crc.py)
        try:
            quiet = _QuietBootstrap()
            logging.getLogger("aiokafka").addFilter(quiet)  # our one line below names the address
            try:
                await self._state_topic.ensure(self._kafka_kwargs())
            except KafkaConnectionError as exc:
                raise BrokerError(
                    f"Kafka is unreachable at {self.bootstrap} (kafka.bootstrap_servers): {exc}"
                ) from exc
            finally:
                logging.getLogger("aiokafka").removeFilter(quiet)
            kw = self._kafka_kwargs()
            self._producer = AIOKafkaProducer(
                acks="all",
                enable_idempotence=self.settings.kafka.enable_idempotence,
                max_request_size=max(
                    self.settings.kafka.max_request_size, self.cfg.checkpoint_chunk_bytes * 2
                ),
                linger_ms=0,
                **kw,
            )
            await self._producer.start()
            self._pointer = AIOKafkaConsumer(
                group_id=self.cfg.group_id + ".checkpoints",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **kw,
            )
            await self._pointer.start()
            self._pointer.assign(
                [TopicPartition(self.cfg.state_topic, p) for p in range(self._state_topic.partitions)]
            )
            self._consumer = AIOKafkaConsumer(
                group_id=self.cfg.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=self.cfg.session_timeout_ms,
                heartbeat_interval_ms=self.cfg.heartbeat_interval_ms,
                max_poll_interval_ms=max(60_000, self.cfg.session_timeout_ms * 3),
                rebalance_timeout_ms=max(60_000, self.cfg.session_timeout_ms * 3),
                # one fetch of ~2000 agent batches (100 series each): the poll's fixed
                # costs (window closes, Polars calls) are shared by that many records
                max_partition_fetch_bytes=16 * 1024 * 1024,
                **kw,
            )
            await self._consumer.start()
            self._consumer.subscribe([self.topic], listener=_Listener(self))
            if self.cfg.metrics_listen:
                self._server = await serve_metrics(
                    "aggregate",
                    self.cfg.metrics_listen,
                    self.cfg.metrics_web_config,
                    self.render_metrics,
                    self._health,
                )
            self._task = asyncio.create_task(self._run(), name="aggregator")
            self._task.add_done_callback(self._loop_ended)
        except BaseException:
            await self._close_clients()
            self._started = False
            raise
        log.info(
            "aggregator started: topic %s group %s, /metrics on port %s",
            self.topic,
            self.cfg.group_id,
            self.metrics_port or "-",
        )

    def _health(self) -> str | None:
        """For /healthz: None while the consume loop runs, else what went wrong."""
        if self.failed.is_set():
            return f"aggregator consume loop failed: {self.failure!r}"
        return None

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or (exc := task.exception()) is None:
            return
        self.failure = exc
        log.error(
            "aggregator loop died; stop and restart this member (its partitions resume "
            "from their checkpoints)",
            exc_info=exc,
        )
        self.failed.set()

    async def stop(self) -> None:
        if not self._started:
            return
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, self.cfg.stop_grace_s + 5)
            except TimeoutError:
                log.warning("aggregator loop did not stop in time")
            except Exception:
                log.exception("aggregator loop failed")
        try:
            async with self._lock:
                await asyncio.wait_for(self._checkpoint(list(self.states)), self.cfg.stop_grace_s)
        except (TimeoutError, KafkaError, BrokerError) as exc:
            log.warning("final checkpoint failed (a restart replays from the previous one): %s", exc)
        await self._close_clients()
        if self._window_log is not None:
            self._window_log.close()
        self._started = False

    async def _close_clients(self) -> None:
        # Leaving the group runs on_partitions_revoked: keep states until then.
        for client in (self._consumer, self._pointer):
            if client is not None:
                with contextlib.suppress(KafkaError, OSError):
                    await asyncio.wait_for(client.stop(), 10)
        self._consumer = self._pointer = None
        if self._producer is not None:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await asyncio.wait_for(self._producer.stop(), 10)
            self._producer = None
        if self._server is not None:
            await self._server.stop()
            self._server = None
        self.states.clear()
        self._owned_since = None

    # ------------------------------------------------------------------ rebalance
    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        parts = [tp.partition for tp in revoked if tp.topic == self.topic]
        async with self._lock:
            try:
                await asyncio.wait_for(self._checkpoint(parts), self.cfg.stop_grace_s)
            except (TimeoutError, KafkaError, BrokerError) as exc:
                log.warning("checkpoint on revoke failed, the next owner replays more: %s", exc)
            for tp in revoked:
                self._pending.pop(tp, None)
            for p in parts:
                self.states.pop(p, None)
                self._unclosed.pop(p, None)
                self._closed_at.pop(p, None)
                self._state_topic.written.pop(p, None)
                for g in (
                    self.metrics.lag,
                    self.metrics.event_lag,
                    self.metrics.watermark,
                    self.metrics.checkpoint_bytes,
                    self.metrics.records,
                ):
                    with contextlib.suppress(KeyError):
                        g.remove(str(p))
            if not self.states:
                self._owned_since = None
            self.metrics.partitions.set(len(self.states))
            self._render_cache = None

    async def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        self.metrics.rebalances.inc()
        async with self._lock:
            for tp in assigned:
                if tp.topic != self.topic or tp.partition in self.states:
                    continue
                await self._adopt(tp)
            self.metrics.partitions.set(len(self.states))
            self._render_cache = None
        log.info("assigned partitions %s", sorted(self.states))

    async def _adopt(self, tp: TopicPartition) -> None:
        """Restore `tp`'s state and seek to it (caller holds the lock). When the checkpoint
        cannot be read, the partition is paused - consuming it without its state would
        publish wrong windows and commit past them - and retried from the main loop."""
        assert self._consumer is not None
        try:
            assert self._pointer is not None
            st = await self._state_topic.restore(self._pointer, tp.partition)
        except (BrokerError, KafkaError, ProtocolError) as exc:
            prev = self._pending.get(tp)
            retries = 0 if prev is None else prev[1] + 1
            delay = backoff_delay(retries, _RESTORE_RETRY_S, _RESTORE_RETRY_MAX_S)
            self._consumer.pause(tp)
            self._pending[tp] = (time.monotonic() + delay, retries)
            log.error(
                "partition %d: checkpoint not restored (%s); paused, retrying in %.0fs",
                tp.partition,
                exc,
                delay,
            )
            return
        if st is None:
            # No checkpoint: start from the oldest retained record rather than a
            # committed offset, so no series starts mid-stream without its carry.
            st = PartitionState(tp.partition, self.cfg)
            await self._consumer.seek_to_beginning(tp)
        else:
            assert st.next_offset is not None
            self._consumer.seek(tp, st.next_offset)
            self.metrics.restores.inc()
        if self._pending.pop(tp, None) is not None:
            self._consumer.resume(tp)
            log.info("partition %d: checkpoint restored on retry, resumed", tp.partition)
        st.on_window = self.on_window
        if st.idle_close_ns is not None:
            # the previous owner checkpointed an idle close: repeat it before replaying, so
            # the windows it published come out the same
            st.close_idle(st.idle_close_ns)
        self.states[tp.partition] = st
        if self._owned_since is None:
            self._owned_since = time.monotonic()
        self._state_topic.mark_current(tp.partition, st)
        self._last_record_wall[tp.partition] = time.monotonic()

    async def _retry_pending(self) -> None:
        assert self._consumer is not None
        now = time.monotonic()
        assigned = self._consumer.assignment()
        async with self._lock:
            for tp, (due, _) in list(self._pending.items()):
                if tp not in assigned:
                    self._pending.pop(tp, None)
                elif due <= now and tp.partition not in self.states:
                    await self._adopt(tp)
            self.metrics.partitions.set(len(self.states))
            self._render_cache = None

    # ------------------------------------------------------------------ checkpoint
    async def _checkpoint(self, partitions: list[int]) -> set[int]:
        """Checkpoint `partitions` (caller holds the lock): the ones whose checkpoint is now
        the restart point (see StateTopic.write)."""
        if self._producer is None or self._consumer is None or self._pointer is None:
            return set()
        return await self._state_topic.write(
            self._producer, self._consumer, self._pointer, self.states, partitions
        )

    # ------------------------------------------------------------------ main loop
    async def _run(self) -> None:
        assert self._consumer is not None
        last_ckpt = time.monotonic()
        ckpt_every = self.cfg.checkpoint_interval_s
        self.metrics.checkpoint_interval.set(ckpt_every)
        idle_retry_at = 0.0
        failures = 0  # consumer errors in a row
        while not self._stopping.is_set():
            try:
                if self._pending:
                    await self._retry_pending()
                batch = await self._consumer.getmany(
                    timeout_ms=self.cfg.poll_timeout_ms, max_records=self.cfg.max_poll_records
                )
                if batch:
                    await _hand_off_to_fetcher()
                async with self._lock:
                    dead, idle_due = self._process(batch)
                    if dead:
                        await self._dead_letter(dead)
                    if (
                        idle_due
                        and time.monotonic() >= idle_retry_at
                        and not await self._close_idle(idle_due)
                    ):
                        idle_retry_at = time.monotonic() + ckpt_every
                    if checkpoint_due(time.monotonic(), last_ckpt, self._owned_since, ckpt_every):
                        last_ckpt = time.monotonic()
                        try:  # aiokafka sends can wait forever (aio-libs/aiokafka#1101)
                            async with asyncio.timeout(self.settings.kafka.produce_timeout_s):
                                await self._checkpoint(list(self.states))
                        except TimeoutError:
                            # nothing committed: the previous checkpoint stays the restart point
                            self.metrics.checkpoint_errors.inc()
                            log.warning(
                                "checkpoint not written within %gs; next try in %gs",
                                self.settings.kafka.produce_timeout_s,
                                self.cfg.checkpoint_interval_s,
                            )
                        ckpt_every = checkpoint_every(
                            time.monotonic() - last_ckpt,
                            self.cfg.checkpoint_interval_s,
                            self.cfg.checkpoint_max_share,
                        )
                        self.metrics.checkpoint_interval.set(ckpt_every)
                failures = 0
            except KafkaError as exc:
                delay = backoff_delay(failures, _CONSUMER_RETRY_S, _CONSUMER_RETRY_MAX_S)
                failures += 1
                reason = (
                    "corrupt_batch"
                    if isinstance(exc, CorruptRecordException)
                    else "connection"
                    if isinstance(exc, KafkaConnectionError)
                    else "other"
                )
                self.metrics.consumer_errors.labels(reason).inc()
                log.warning("consumer error (%s), retrying in %.1fs: %r", reason, delay, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

    async def _close_idle(self, due: dict[int, int]) -> bool:
        """Idle closes follow the wall clock, which a replay does not repeat: record each in a
        checkpoint first, then close (a restore repeats a recorded one), so closed windows
        stay final across restarts. Nothing closes while no checkpoint can be written (the
        windows then close as records come back). True when all of them closed."""
        for p, target in due.items():
            st = self.states[p]
            st.idle_close_ns = target
            st.version += 1
        try:  # aiokafka sends can wait forever (aio-libs/aiokafka#1101)
            async with asyncio.timeout(self.settings.kafka.produce_timeout_s):
                done = await self._checkpoint(list(due))
        except (TimeoutError, KafkaError, BrokerError) as exc:
            self.metrics.checkpoint_errors.inc()
            log.warning(
                "idle close of partitions %s postponed: checkpoint failed (%s)",
                sorted(due),
                exc or type(exc).__name__,
            )
            done = set()
        wall_ns = time.time_ns()
        for p in due:
            st = self.states[p]
            if p not in done:
                st.idle_close_ns = None
                continue
            t0 = time.perf_counter()
            if st.close_idle(due[p]) is not None:
                self.metrics.close_duration.observe(time.perf_counter() - t0)
                if st.closed_ns is not None:
                    self.metrics.close_latency.observe(max(0.0, (wall_ns - st.closed_ns) / NS))
        return done >= set(due)

    def _process(self, batch: dict[TopicPartition, list]) -> tuple[list[DeadRecord], dict[int, int]]:
        """Feed records to their states and close what the watermarks passed; returns the
        records to dead-letter and the idle closes due (partition -> pane boundary)."""
        idle_due: dict[int, int] = {}
        dead: list[DeadRecord] = []
        now = time.monotonic()
        for tp, records in batch.items():
            p = tp.partition
            st = self.states.get(p)
            if st is None or tp.topic != self.topic:
                continue
            if st.next_offset is not None and records and records[0].offset < st.next_offset:
                # fetched before the seek to a restored offset: already in the state
                records = [r for r in records if r.offset >= st.next_offset]
            if not records:
                continue
            rows = [(r.offset, r.value, r.headers) for r in records]
            pos = n_ok = 0
            while True:
                # a close once about max_close_samples samples came in since the last one
                room = max(1, self.cfg.max_close_samples - self._unclosed.get(p, 0))
                accepted, errors, taken = st.add_prefix(rows[pos:] if pos else rows, room)
                n_ok += accepted
                self._unclosed[p] = self._unclosed.get(p, 0) + accepted
                for i, exc in errors:
                    self.metrics.decode_errors.labels(exc.reason).inc()
                    dead.append((records[pos + i], exc.reason))
                pos += taken
                if self._unclosed[p] >= self.cfg.max_close_samples:
                    self._advance(p, st, time.time_ns(), now)
                if pos >= len(rows):
                    break
            self.metrics.records.labels(str(p)).inc(len(records))
            self.metrics.samples.inc(n_ok)
            self._last_record_wall[p] = now
        wall_ns = time.time_ns()
        for p, st in self.states.items():
            idle = now - self._last_record_wall.get(p, now) - self.cfg.idle_timeout_s
            target = st.idle_target(int(idle * NS)) if idle > 0 else None
            if target is not None:
                idle_due[p] = target
            assert self._consumer is not None
            tp = TopicPartition(self.topic, p)
            hw = self._consumer.highwater(tp)
            behind = hw is not None and st.next_offset is not None and hw > st.next_offset
            # Caught up, a partition closes after every poll; behind (a backlog), its closes
            # are batched: one per max_close_samples samples, or close_interval_s of wall time.
            if not behind or now - self._closed_at.get(p, -math.inf) >= self.cfg.close_interval_s:
                self._advance(p, st, wall_ns, now)
            if st.max_event_ns is not None:
                self.metrics.event_lag.labels(str(p)).set((wall_ns - st.max_event_ns) / NS)
                wm = st.watermark_ns()
                if wm is not None:
                    self.metrics.watermark.labels(str(p)).set(wm / NS)
            if hw is not None and st.next_offset is not None and hw >= st.next_offset:
                self.metrics.lag.labels(str(p)).set(hw - st.next_offset)
        return dead, idle_due

    def _advance(self, p: int, st: PartitionState, wall_ns: int, now: float) -> None:
        """Close what the partition's watermark passed, timing the close."""
        self._unclosed[p] = 0
        self._closed_at[p] = now
        t0 = time.perf_counter()
        if st.advance(0) is not None:
            self.metrics.close_duration.observe(time.perf_counter() - t0)
            if st.closed_ns is not None:
                self.metrics.close_latency.observe(max(0.0, (wall_ns - st.closed_ns) / NS))

    async def _dead_letter(self, dead: list[DeadRecord]) -> None:
        """Copy `dead` to the dead-letter topic before the loop moves on (so no checkpoint
        passes a record whose copy is not written)."""
        assert self._producer is not None
        await self._dead_letters.copy(self._producer, dead)

    # ------------------------------------------------------------------ exposition
    def _render_key(self) -> tuple[object, ...]:
        """What a cached /metrics body depends on: each partition's closed-window generation
        and committed-totals generation, and the ledger refresh period (the per-site ledger
        and self-metrics change with every record; they are refreshed at most that often)."""
        gens = tuple((p, st.version, st.totals_gen) for p, st in sorted(self.states.items()))
        return gens, len(self._pending), int(time.monotonic() // self.cfg.ledger_refresh_s)

    async def render_metrics(self) -> bytes:
        """One consistent body: self-metrics (prometheus-client) and the aggregated state
        (vectorised), both taken at the same moment, cached until the render key changes."""
        key = self._render_key()
        cached = self._render_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        async with self._render_lock:
            cached = self._render_cache
            key = self._render_key()
            if cached is not None and cached[0] == key:
                return cached[1]
            t0 = time.perf_counter()
            self.metrics.series.set(sum(st.live_series() for st in self.states.values()))
            self.metrics.state_bytes.set(sum(st.state_bytes() for st in self.states.values()))
            # no await between these two: the views and the self-metrics are one moment
            views = [st.view() for st in self.states.values()]
            head = generate_latest(self.registry)
            ts, tt = self.cfg.window_end_timestamps, self.cfg.total_timestamps

            def work() -> bytes:
                c0 = time.thread_time()
                try:
                    return render(_FAMILY_TEXT, build_frames(views, timestamps=ts, total_timestamps=tt))
                finally:
                    self.render_cpu_s += time.thread_time() - c0

            body = await asyncio.to_thread(work)
            self.renders += 1
            self.metrics.render_seconds.observe(time.perf_counter() - t0)  # shows in the next body
            out = head + body
            self._render_cache = (key, out)
            return out
