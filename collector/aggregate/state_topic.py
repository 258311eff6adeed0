"""The state-topic protocol: where a partition's checkpoint is written and found again.

Every `checkpoint_interval_s` the service (collector/aggregate/service.py) checkpoints each
owned partition:

  1. the partition's whole state (collector/aggregate/checkpoint.py) is written to the
     state topic (partition p for source partition p, split in chunks), acks=all;
  2. the next source offset is committed in the consumer group (fenced by the group
     generation, so a member that lost the partition cannot commit);
  3. the state-topic offset of the checkpoint is committed under `<group_id>.checkpoints`
     (the pointer).

A new owner (restart after kill -9, or a rebalance) reads the pointer, restores the state
and seeks to the offset recorded *inside* the checkpoint. Nothing here relies on timestamp
lookups, high watermarks or log compaction, which the embedded broker lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
import uuid

import polars as pl
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from collector.aggregate.config import AggregateSettings
from collector.aggregate.self_metrics import SelfMetrics
from collector.aggregate.state import PartitionState
from collector.errors import BrokerError, ProtocolError

log = logging.getLogger(__name__)


def checkpoint_every(spent_s: float, interval_s: float, max_share: float) -> float:
    """Start-to-start time until the next checkpoint round after one that took `spent_s`:
    at least `interval_s`, and long enough that rounds take at most `max_share` of the time
    (a state of 200 MB that takes 2 s to write is checkpointed every 8 s at 0.25, not every
    5 s). Deterministic replay makes a longer interval safe; it only lengthens the replay."""
    return max(interval_s, spent_s / max_share)


def checkpoint_due(now: float, last_s: float, owned_since: float | None, every_s: float) -> bool:
    """Whether the periodic checkpoint round is due at `now`: `every_s` after the last round
    (`last_s`) and after the member came to own partitions (`owned_since`, None while it owns
    none). A member that just joined has only just restored (or started) its states: the
    interval counts from then, not from the start of its loop, so a group join as long as
    the interval is not followed at once by a checkpoint of what was just restored."""
    return owned_since is not None and now - max(last_s, owned_since) >= every_s


class StateTopic:
    """Checkpoints of one consumer group's partitions in `cfg.state_topic`."""

    def __init__(self, cfg: AggregateSettings, topic: str, metrics: SelfMetrics) -> None:
        self.cfg = cfg
        self.topic = topic  # the telemetry topic whose partitions are checkpointed
        self.metrics = metrics
        self.partitions = 0  # of the state topic (known after ensure())
        # per partition: (next offset, state version) of the checkpoint that is the restart point
        self.written: dict[int, tuple[int | None, int]] = {}

    async def ensure(self, kafka_kwargs: dict[str, object]) -> None:
        """The telemetry topic exists, and the state topic has at least its partitions
        (created when missing)."""
        admin = AIOKafkaAdminClient(**kafka_kwargs)
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
            self.partitions = len(st[0].get("partitions", [])) if st else 0
            if self.partitions < parts:
                raise BrokerError(
                    f"state topic {self.cfg.state_topic!r} has {self.partitions} "
                    f"partitions, fewer than {self.topic!r} ({parts})"
                )
        finally:
            await admin.close()

    def is_current(self, partition: int, st: PartitionState) -> bool:
        """The partition's last checkpoint holds exactly this state."""
        return self.written.get(partition) == (st.next_offset, st.version)

    def mark_current(self, partition: int, st: PartitionState) -> None:
        self.written[partition] = (st.next_offset, st.version)

    async def restore(self, pointer: AIOKafkaConsumer, partition: int) -> PartitionState | None:
        """The state of the partition's last committed checkpoint; None when it has none.
        ProtocolError when the checkpoint cannot be read, BrokerError when it cannot be
        fetched."""
        stp = TopicPartition(self.cfg.state_topic, partition)
        ptr = await pointer.committed(stp)
        if ptr is None:
            return None
        pointer.seek(stp, ptr)
        chunks: dict[int, bytes] = {}
        want: tuple[str, int] | None = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            got = await pointer.getmany(stp, timeout_ms=1000, max_records=64)
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

    async def write(
        self,
        producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer,
        pointer: AIOKafkaConsumer,
        states: dict[int, PartitionState],
        partitions: list[int],
    ) -> set[int]:
        """Write the state of `partitions`, then commit offsets and pointers.

        Returns the partitions whose checkpoint is now the restart point (written now or
        unchanged since the last one)."""
        current = {p for p in partitions if p in states and self.is_current(p, states[p])}
        offsets: dict[TopicPartition, int] = {}
        pointers: dict[TopicPartition, int] = {}
        for p in partitions:
            st = states.get(p)
            if st is None or st.next_offset is None or self.is_current(p, st):
                continue
            blob = st.snapshot()
            size = self.cfg.checkpoint_chunk_bytes
            pieces = [blob[i : i + size] for i in range(0, len(blob), size)] or [b""]
            snap = uuid.uuid4().hex
            futs = []
            for i, piece in enumerate(pieces):
                futs.append(
                    await producer.send(
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
            self.mark_current(p, st)
            self.metrics.checkpoint_bytes.labels(str(p)).set(len(blob))
            self.metrics.checkpoints.inc()
        if not offsets:
            return current
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # Not the owner any more (rebalance): the new owner restores the older checkpoint.
            self.metrics.checkpoint_errors.inc()
            for tp in offsets:
                self.written.pop(tp.partition, None)
            log.warning("offset commit refused, checkpoint not published: %s", exc)
            return current
        await pointer.commit(pointers)
        for tp in offsets:
            st = states.get(tp.partition)
            if st is not None:
                st.publish_totals()  # committed: a restart resumes from here, never below
        return current | {tp.partition for tp in offsets}
