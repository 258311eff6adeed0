"""The aggregator component: Kafka consumer group -> partition states -> /metrics.

Where the pieces meet. One asyncio task polls the telemetry topic in micro-batches
(`getmany`), feeds each partition's records to its `PartitionState`, advances watermarks,
dead-letters records that are not valid batches, and every `checkpoint_interval_s`
checkpoints each owned partition:

  1. the partition's whole state (carry values, open panes and buffer, dedup memory,
     latest windows, ledger) is written to the state topic (partition p for source
     partition p, split in chunks), acks=all;
  2. the next source offset is committed in the consumer group (fenced by the group
     generation, so a member that lost the partition cannot commit);
  3. the state-topic offset of the checkpoint is committed under `<group_id>.checkpoints`.

A new owner (restart after kill -9, or a rebalance) reads the pointer, restores the state
and seeks to the offset recorded *inside* the checkpoint, then replays deterministically:
closed windows come out identical and none is lost. Nothing here relies on timestamp
lookups, high watermarks or log compaction, which the embedded broker lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import struct
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TextIO

import polars as pl
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from collector.aggregate.frames import NS
from collector.aggregate.heap import retain_freed_heap
from collector.aggregate.outputs import FAMILIES, build_frames
from collector.aggregate.state import PartitionState, WindowSink
from collector.errors import BrokerError, ConfigError, ProtocolError
from collector.exposition import webconfig
from collector.exposition.http import MetricsServer
from collector.exposition.render import FamilyText, render

if TYPE_CHECKING:
    from collector.config import Settings

log = logging.getLogger(__name__)

_FAMILY_TEXT = tuple(FamilyText(f.name, f.type, f.help, f.labels) for f in FAMILIES)
_RESTORE_RETRY_S = 10.0
_DLQ_ATTEMPTS = 4  # dead-letter produce attempts of one poll's records (0.5, 1, 2 s between)
_RESTORE_RETRY_MAX_S = 300.0
_CLOSE_BUCKETS = (0.5, 1, 2.5, 5, 10, 15, 20, 30, 60, 120, 300, 900)


def window_records(
    partition: int, window_s: int, cw: pl.DataFrame, gw: pl.DataFrame
) -> list[dict[str, object]]:
    """Closed windows as plain records (the window log's lines); integers stay exact."""
    out: list[dict[str, object]] = []
    for r in cw.iter_rows(named=True):
        out.append(
            {
                "partition": partition,
                "window_s": window_s,
                "end_ns": r["end"],
                "kind": "counter",
                "site": r["site"],
                "metric": r["metric"],
                "labels": r["labels"],
                "increase": str(r["inc"]),
                "dt_ns": r["dt"],
                "n": r["n"],
                "resets": r["resets"],
                "wraps": r["wraps"],
            }
        )
    for r in gw.iter_rows(named=True):
        out.append(
            {
                "partition": partition,
                "window_s": window_s,
                "end_ns": r["end"],
                "kind": "gauge",
                "site": r["site"],
                "metric": r["metric"],
                "labels": r["labels"],
                "sum": r["sum"],
                "count": r["cnt"],
                "min": r["min"],
                "max": r["max"],
            }
        )
    return out


def checkpoint_every(spent_s: float, interval_s: float, max_share: float) -> float:
    """Start-to-start time until the next checkpoint round after one that took `spent_s`:
    at least `interval_s`, and long enough that rounds take at most `max_share` of the time
    (a state of 200 MB that takes 2 s to write is checkpointed every 8 s at 0.25, not every
    5 s). Deterministic replay makes a longer interval safe; it only lengthens the replay."""
    return max(interval_s, spent_s / max_share)


class WindowLog:
    """Appends every closed window to a JSON-lines file (aggregate.window_log)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: TextIO | None = None

    def __call__(self, partition: int, window_s: int, cw: pl.DataFrame, gw: pl.DataFrame) -> None:
        rows = window_records(partition, window_s, cw, gw)
        if rows:
            if self._file is None:
                self._file = open(self._path, "a", encoding="utf-8")  # noqa: SIM115 - see close()
            self._file.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _QuietBootstrap(logging.Filter):
    """Drops aiokafka's own 'Unable connect to' lines while the first connection is tried:
    the aggregator reports an unreachable broker in one line naming its address."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Unable connect to" not in record.getMessage()


class SelfMetrics:
    """The aggregator's own metrics, on the injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = "collector_aggregate_"
        self.records = Counter(p + "records", "Kafka records consumed.", ["partition"], registry=registry)
        self.samples = Counter(p + "samples", "Samples accepted into windows.", registry=registry)
        self.decode_errors = Counter(
            p + "decode_errors",
            "Records that are not a valid batch, by reason.",
            ["reason"],
            registry=registry,
        )
        self.dead_letters = Counter(
            p + "dead_letter_records", "Records copied to the dead-letter topic.", registry=registry
        )
        self.dead_letter_failures = Counter(
            p + "dead_letter_failures",
            "Dead-letter records not written after every retry (skipped; decode errors stay counted).",
            registry=registry,
        )
        self.lag = Gauge(
            p + "consumer_lag_records",
            "Records between the consumed position and the partition's high watermark, "
            "when the broker reports one.",
            ["partition"],
            registry=registry,
        )
        self.event_lag = Gauge(
            p + "event_time_lag_seconds",
            "Wall clock minus the newest event time seen in the partition.",
            ["partition"],
            registry=registry,
        )
        self.watermark = Gauge(
            p + "watermark_seconds",
            "Event-time watermark of the partition (Unix seconds).",
            ["partition"],
            registry=registry,
        )
        self.close_latency = Histogram(
            p + "window_close_latency_seconds",
            "Wall time between a window's end and its close.",
            buckets=_CLOSE_BUCKETS,
            registry=registry,
        )
        self.close_duration = Histogram(
            p + "window_close_duration_seconds",
            "Processing time of one close step (all windows).",
            registry=registry,
        )
        self.checkpoints = Counter(p + "checkpoints", "Partition checkpoints written.", registry=registry)
        self.checkpoint_errors = Counter(
            p + "checkpoint_errors", "Checkpoints that failed.", registry=registry
        )
        self.checkpoint_bytes = Gauge(
            p + "checkpoint_bytes", "Size of the last checkpoint.", ["partition"], registry=registry
        )
        self.checkpoint_interval = Gauge(
            p + "checkpoint_interval_seconds",
            "Interval between checkpoint rounds in use: checkpoint_interval_s, "
            "stretched so that rounds take at most checkpoint_max_share of "
            "the loop's time.",
            registry=registry,
        )
        self.restores = Counter(p + "restores", "Partitions restored from a checkpoint.", registry=registry)
        self.rebalances = Counter(p + "rebalances", "Partition assignments received.", registry=registry)
        self.partitions = Gauge(p + "partitions_assigned", "Partitions this member owns.", registry=registry)
        self.partitions_paused = Gauge(
            p + "partitions_paused",
            "Assigned partitions whose checkpoint could not be restored "
            "yet: paused (nothing consumed) and retried.",
            registry=registry,
        )
        self.series = Gauge(p + "series", "Active series in state.", registry=registry)
        self.state_bytes = Gauge(
            p + "state_bytes", "Approximate bytes of aggregation state.", registry=registry
        )
        self.render_seconds = Histogram(
            p + "render_seconds", "Time to render the aggregated /metrics.", registry=registry
        )


class _Listener(ConsumerRebalanceListener):
    def __init__(self, agg: Aggregator) -> None:
        self.agg = agg

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.agg._on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.agg._on_assigned(list(assigned))


class Aggregator:
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
        self._ckpt_version: dict[int, tuple[int | None, int]] = {}
        self._last_record_wall: dict[int, float] = {}
        # assigned partitions whose state could not be restored: paused, retried from the loop
        self._pending: dict[TopicPartition, tuple[float, float]] = {}  # -> (due, delay)
        self.metrics.partitions_paused.set_function(lambda: len(self._pending))
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._pointer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._server: MetricsServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._started = False
        # set when the consume loop died of an unexpected error: the member is useless then,
        # and the process should exit so its supervisor restarts it from the checkpoints
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None
        self._render_cache: tuple[tuple[object, ...], bytes] | None = None
        self._render_lock = asyncio.Lock()
        self.renders = 0  # bodies actually rendered (the rest of the scrapes hit the cache)
        self.render_cpu_s = 0.0  # CPU time of those renders (worker thread), for the benchmark
        self._state_partitions = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def metrics_port(self) -> int:
        return self._server.bound_port if self._server else 0

    @property
    def metrics_tls(self) -> bool:
        """True when /metrics is served over HTTPS (aggregate.metrics_web_config)."""
        return bool(self._server and self._server.web and self._server.web.tls)

    def _kafka_kwargs(self) -> dict[str, object]:
        k = self.settings.kafka
        kw: dict[str, object] = {
            "bootstrap_servers": self.bootstrap,
            "client_id": k.client_id,
            "security_protocol": k.security_protocol,
            "request_timeout_ms": k.request_timeout_ms,
        }
        if k.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kw["ssl_context"] = create_ssl_context(
                cafile=str(k.ssl_cafile) if k.ssl_cafile else None,
                certfile=str(k.ssl_certfile) if k.ssl_certfile else None,
                keyfile=str(k.ssl_keyfile) if k.ssl_keyfile else None,
            )
        if k.sasl_mechanism:
            kw.update(
                sasl_mechanism=k.sasl_mechanism,
                sasl_plain_username=k.sasl_username,
                sasl_plain_password=k.sasl_password,
            )
        return kw

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._stopping.clear()
        retain_freed_heap(self.cfg.heap_retain_mb)
        try:
            quiet = _QuietBootstrap()
            logging.getLogger("aiokafka").addFilter(quiet)  # our one line below names the address
            try:
                await self._ensure_state_topic()
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
                [TopicPartition(self.cfg.state_topic, p) for p in range(self._state_partitions)]
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
                host, port = self.cfg.metrics_listen.rsplit(":", 1)
                self._server = MetricsServer(
                    host,
                    int(port),
                    self.render_metrics,
                    self._health,
                    webconfig.load(self.cfg.metrics_web_config, "aggregate.metrics_web_config"),
                )
                try:
                    await self._server.start()
                except OSError as exc:
                    raise ConfigError(
                        f"cannot serve /metrics on {self.cfg.metrics_listen}: {exc.strerror}",
                        key="aggregate.metrics_listen",
                    ) from exc
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

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _ensure_state_topic(self) -> None:
        admin = AIOKafkaAdminClient(**self._kafka_kwargs())
        await admin.start()
        try:
            # list first: describing a missing topic makes some brokers (Tansu) create it
            if self.topic not in await admin.list_topics():
                raise BrokerError(f"topic {self.topic!r} does not exist")
            topics = await admin.describe_topics([self.topic])
            parts = len(topics[0].get("partitions", [])) if topics else 0
            rf = self.cfg.state_replication_factor
            if rf is None:
                brokers = (await admin.describe_cluster()).get("brokers") or [None]
                rf = min(3, len(brokers))
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(self.cfg.state_topic, num_partitions=parts, replication_factor=rf)]
                )
            st = await admin.describe_topics([self.cfg.state_topic])
            self._state_partitions = len(st[0].get("partitions", [])) if st else 0
            if self._state_partitions < parts:
                raise BrokerError(
                    f"state topic {self.cfg.state_topic!r} has {self._state_partitions} "
                    f"partitions, fewer than {self.topic!r} ({parts})"
                )
        finally:
            await admin.close()

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
                self._ckpt_version.pop(p, None)
                for g in (
                    self.metrics.lag,
                    self.metrics.event_lag,
                    self.metrics.watermark,
                    self.metrics.checkpoint_bytes,
                    self.metrics.records,
                ):
                    with contextlib.suppress(KeyError):
                        g.remove(str(p))
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
            st = await self._restore(tp.partition)
        except (BrokerError, KafkaError, ProtocolError) as exc:
            prev = self._pending.get(tp)
            delay = _RESTORE_RETRY_S if prev is None else min(prev[1] * 2, _RESTORE_RETRY_MAX_S)
            self._consumer.pause(tp)
            self._pending[tp] = (time.monotonic() + delay, delay)
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
        self._ckpt_version[tp.partition] = (st.next_offset, st.version)
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

    async def _restore(self, partition: int) -> PartitionState | None:
        assert self._pointer is not None
        stp = TopicPartition(self.cfg.state_topic, partition)
        ptr = await self._pointer.committed(stp)
        if ptr is None:
            return None
        self._pointer.seek(stp, ptr)
        chunks: dict[int, bytes] = {}
        want: tuple[str, int] | None = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            got = await self._pointer.getmany(stp, timeout_ms=1000, max_records=64)
            for r in got.get(stp, []):
                h = dict(r.headers or ())
                snap = h.get("snapshot", b"").decode()
                idx, _, total = h.get("chunk", b"0/0").decode().partition("/")
                if want is None:
                    if r.offset != ptr:
                        continue
                    want = (snap, int(total))
                if snap == want[0] and r.value is not None:
                    chunks[int(idx)] = r.value
            if want is not None and len(chunks) >= want[1]:
                try:
                    blob = b"".join(chunks[i] for i in range(want[1]))
                    st = PartitionState.restore(blob, self.cfg)
                except (KeyError, ValueError, struct.error, pl.exceptions.PolarsError) as exc:
                    raise ProtocolError(
                        "checkpoint_corrupt",
                        f"checkpoint of partition {partition} at "
                        f"{self.cfg.state_topic}:{ptr} is corrupt: {exc!r}",
                    ) from exc
                log.info(
                    "partition %d restored from checkpoint at state offset %d (next offset %s)",
                    partition,
                    ptr,
                    st.next_offset,
                )
                return st
        raise BrokerError(f"checkpoint of partition {partition} at {self.cfg.state_topic}:{ptr} unreadable")

    # ------------------------------------------------------------------ checkpoint
    async def _checkpoint(self, partitions: list[int]) -> set[int]:
        """Write state of `partitions` (caller holds the lock), then commit offsets.

        Returns the partitions whose checkpoint is now the restart point (written now or
        unchanged since the last one)."""
        if self._producer is None or self._consumer is None or self._pointer is None:
            return set()
        current = {
            p
            for p in partitions
            if p in self.states
            and self._ckpt_version.get(p) == (self.states[p].next_offset, self.states[p].version)
        }
        offsets: dict[TopicPartition, int] = {}
        pointers: dict[TopicPartition, int] = {}
        for p in partitions:
            st = self.states.get(p)
            if st is None or st.next_offset is None:
                continue
            if self._ckpt_version.get(p) == (st.next_offset, st.version):
                continue
            blob = st.snapshot()
            size = self.cfg.checkpoint_chunk_bytes
            pieces = [blob[i : i + size] for i in range(0, len(blob), size)] or [b""]
            snap = uuid.uuid4().hex
            futs = []
            for i, piece in enumerate(pieces):
                futs.append(
                    await self._producer.send(
                        self.cfg.state_topic,
                        piece,
                        key=f"{self.topic}/{p}".encode(),
                        partition=p,
                        headers=[
                            ("snapshot", snap.encode()),
                            ("chunk", f"{i}/{len(pieces)}".encode()),
                            ("next_offset", str(st.next_offset).encode()),
                        ],
                    )
                )
            mds = await asyncio.gather(*futs)
            pointers[TopicPartition(self.cfg.state_topic, p)] = mds[0].offset
            offsets[TopicPartition(self.topic, p)] = st.next_offset
            self._ckpt_version[p] = (st.next_offset, st.version)
            self.metrics.checkpoint_bytes.labels(str(p)).set(len(blob))
            self.metrics.checkpoints.inc()
        if not offsets:
            return current
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            # Not the owner any more (rebalance): the new owner restores the older checkpoint.
            self.metrics.checkpoint_errors.inc()
            for tp in offsets:
                self._ckpt_version.pop(tp.partition, None)
            log.warning("offset commit refused, checkpoint not published: %s", exc)
            return current
        await self._pointer.commit(pointers)
        for tp in offsets:
            st = self.states.get(tp.partition)
            if st is not None:
                st.publish_totals()  # committed: a restart resumes from here, never below
        return current | {tp.partition for tp in offsets}

    # ------------------------------------------------------------------ main loop
    async def _run(self) -> None:
        assert self._consumer is not None
        last_ckpt = time.monotonic()
        ckpt_every = self.cfg.checkpoint_interval_s
        self.metrics.checkpoint_interval.set(ckpt_every)
        idle_retry_at = 0.0
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                if self._pending:
                    await self._retry_pending()
                batch = await self._consumer.getmany(
                    timeout_ms=self.cfg.poll_timeout_ms, max_records=self.cfg.max_poll_records
                )
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
                    if time.monotonic() - last_ckpt >= ckpt_every:
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
                backoff = 0.1
            except KafkaError as exc:
                log.warning("consumer error, retrying in %.1fs: %s", backoff, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, 5.0)

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

    def _process(self, batch: dict[TopicPartition, list]) -> tuple[list[tuple[object, str]], dict[int, int]]:
        """Feed records to their states and close what the watermarks passed; returns the
        records to dead-letter and the idle closes due (partition -> pane boundary)."""
        idle_due: dict[int, int] = {}
        dead: list[tuple[object, str]] = []
        now = time.monotonic()
        for tp, records in batch.items():
            st = self.states.get(tp.partition)
            if st is None or tp.topic != self.topic:
                continue
            if st.next_offset is not None:
                # fetched before the seek to a restored offset: already in the state
                records = [r for r in records if r.offset >= st.next_offset]
            if not records:
                continue
            n_ok, errors = st.add_many([(r.offset, r.value, r.headers) for r in records])
            for i, exc in errors:
                self.metrics.decode_errors.labels(exc.reason).inc()
                dead.append((records[i], exc.reason))
            self.metrics.records.labels(str(tp.partition)).inc(len(records))
            self.metrics.samples.inc(n_ok)
            if records:
                self._last_record_wall[tp.partition] = now
        wall_ns = time.time_ns()
        for p, st in self.states.items():
            idle = now - self._last_record_wall.get(p, now) - self.cfg.idle_timeout_s
            target = st.idle_target(int(idle * NS)) if idle > 0 else None
            if target is not None:
                idle_due[p] = target
            t0 = time.perf_counter()
            stats = st.advance(0)
            if stats is not None:
                self.metrics.close_duration.observe(time.perf_counter() - t0)
                if st.closed_ns is not None:
                    self.metrics.close_latency.observe(max(0.0, (wall_ns - st.closed_ns) / NS))
            if st.max_event_ns is not None:
                self.metrics.event_lag.labels(str(p)).set((wall_ns - st.max_event_ns) / NS)
                wm = st.watermark_ns()
                if wm is not None:
                    self.metrics.watermark.labels(str(p)).set(wm / NS)
            assert self._consumer is not None
            tp = TopicPartition(self.topic, p)
            hw = self._consumer.highwater(tp)
            if hw is not None and st.next_offset is not None and hw >= st.next_offset:
                self.metrics.lag.labels(str(p)).set(hw - st.next_offset)
        return dead, idle_due

    async def _dead_letter(self, dead: list[tuple[object, str]]) -> None:
        """Copy `dead` to the dead-letter topic before the loop moves on (so no checkpoint
        passes a record whose copy is not written). A produce that fails or misses its
        deadline - a broker slow under load, a leader moving - is retried, up to
        _DLQ_ATTEMPTS attempts with backoff, never re-sending a record already written; only
        what is still not written then is counted in dead_letter_failures and skipped (its
        decode error stays counted by reason)."""
        written = [False] * len(dead)
        delay = 0.5
        why = ""
        attempt = 0
        for attempt in range(1, _DLQ_ATTEMPTS + 1):
            try:  # aiokafka sends can wait forever (aio-libs/aiokafka#1101)
                async with asyncio.timeout(self.settings.kafka.produce_timeout_s):
                    await self._dead_letter_send(dead, written)
                why = "produce failed"
            except TimeoutError:
                why = f"not written within {self.settings.kafka.produce_timeout_s:g}s"
            left = written.count(False)
            if not left:
                return
            if attempt == _DLQ_ATTEMPTS or self._stopping.is_set():
                break
            log.warning(
                "dead-letter topic: %d record(s) %s; retry %d of %d in %.1fs",
                left,
                why,
                attempt,
                _DLQ_ATTEMPTS - 1,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay *= 2
        left = written.count(False)
        self.metrics.dead_letter_failures.inc(left)
        log.warning(
            "dead-letter topic did not take %d record(s) in %d attempt(s) (%s; counted, "
            "decode errors stay counted by reason)",
            left,
            attempt,
            why,
        )

    async def _dead_letter_send(self, dead: list[tuple[object, str]], written: list[bool]) -> None:
        """Send each record of `dead` not written yet; wait for the answers. A send left
        without an answer by the previous attempt's deadline is sent again (a copy may then
        be written twice; it is counted once)."""
        assert self._producer is not None
        mine = []
        for i, (r, reason) in enumerate(dead):
            if written[i]:
                continue
            headers = list(getattr(r, "headers", None) or ())
            headers += [
                ("dlq_reason", reason.encode()),
                ("dlq_source", f"{self.topic}/{r.partition}/{r.offset}".encode()),  # type: ignore[attr-defined]
            ]
            try:
                fut = await self._producer.send(
                    self.dlq_topic,
                    r.value,  # type: ignore[attr-defined]
                    key=r.key,  # type: ignore[attr-defined]
                    headers=headers,
                )
            except KafkaError as exc:
                log.debug("dead-letter produce failed: %s", exc)
                continue
            mine.append(fut)
            fut.add_done_callback(functools.partial(self._dead_letter_done, written, i))
        waiting = [f for f in mine if not f.done()]
        if waiting:
            await asyncio.wait(waiting)  # not gather: a deadline must not cancel the sends

    def _dead_letter_done(self, written: list[bool], i: int, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            log.debug("dead-letter produce failed: %s", "cancelled" if fut.cancelled() else fut.exception())
            return
        if not written[i]:
            written[i] = True
            self.metrics.dead_letters.inc()

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
